"""What a policy observes and commands: feature names, units, frames (no torch).

Observation
    observation.state              (7,) the arm's joint positions: six revolute joints in rad and
                                   left_finger in m (the gripper opening of one finger).
    observation.environment_state  (N_obj * F,) localized objects in base_link, one slot per
                                   object class in a fixed order, F fields per slot
                                   (default x, y, z in m and a present flag 1/0), named
                                   "<class>_<field>", e.g. red_cube_x ... blue_cube_present:
                                   the recorder's layout (armstack_recorder.observation), class
                                   names as the detector reports them. With an object hold
                                   (`ObjectSlotsConfig.hold`, s), a class not seen in a frame
                                   keeps its last detection, present = 1, for up to that long
                                   (`hold_last_seen`): a cube the arm hides just before the
                                   grasp stays where it was last seen. The runtime holds the
                                   same way (armstack_policy.observation).
    observation.images.<camera>    optional RGB frames, float in [0, 1], (3, H, W).
    observation.language.tokens    (L,) int64 ids of the episode's task string (language-
                                   conditioned policies only; armstack_policy.vla_tokens).
Action
    "joint": joint position targets, the names of observation.state (rad, left_finger m); the
             runtime publishes them on joint_command. The default: no IK in the loop, and the
             targets are exactly what the teleoperated demonstrations commanded.
    "ee":    end-effector pose in base_link + gripper: x, y, z (m), qx, qy, qz, qw, gripper (m);
             the runtime publishes ee_command and the IK node solves it. Quaternions q and -q are
             the same rotation, so training targets are put in the qw >= 0 hemisphere
             (`canonicalize_quaternions`); the runtime normalizes the predicted quaternion.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from armstack_common.robot_names import GRIPPER_JOINT, JOINT_NAMES
from armstack_policy.actions import ACTION_KINDS
from armstack_policy.observation import ObjectMemory, object_hold_problem

logger = logging.getLogger(__name__)

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
IMAGE_PREFIX = "observation.images."
ACTION_KEY = "action"
ACTION_PAD_KEY = "action_is_pad"
# Instruction token ids (L,) int64 of a sample's task (LeRobot's name for tokenized language).
LANGUAGE_KEY = "observation.language.tokens"

QUATERNION_NAMES: tuple[str, str, str, str] = ("qx", "qy", "qz", "qw")
ACTION_TOPICS = {"joint": "joint_command", "ee": "ee_command"}
BASE_FRAME = "base_link"


def _check_names(owner: str, names: Sequence[str], allow_empty: bool = False) -> None:
    if not isinstance(names, (tuple, list)) or (not names and not allow_empty):
        raise ValueError(f"{owner} must be a non-empty sequence of names, got {names!r}")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{owner} must hold non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{owner} has duplicate names: {names!r}")


@dataclass(frozen=True)
class ObjectSlotsConfig:
    """Layout of observation.environment_state: one slot per class, fields per slot."""

    classes: tuple[str, ...] = ("red_cube", "green_cube", "blue_cube")
    fields: tuple[str, ...] = ("x", "y", "z", "present")
    # s a class not seen keeps its last detection (0: a frame says only what it saw); needs
    # the present field, which tells a held slot from a class never seen
    hold: float = 0.0

    def __post_init__(self) -> None:
        _check_names("ObjectSlotsConfig.classes", self.classes)
        _check_names("ObjectSlotsConfig.fields", self.fields)
        problem = object_hold_problem(self.hold, self.fields)
        if problem:
            raise ValueError(f"ObjectSlotsConfig.hold {problem}")

    @property
    def names(self) -> list[str]:
        """Flat feature names, class-major: red_cube_x, red_cube_y, ..., blue_cube_present."""
        return [f"{c}_{f}" for c in self.classes for f in self.fields]

    @property
    def num_slots(self) -> int:
        return len(self.classes)

    @property
    def slot_dim(self) -> int:
        return len(self.fields)

    def unit(self, name: str) -> str:
        return "flag" if name.endswith("_present") else "m"


@dataclass(frozen=True)
class ActionSpaceConfig:
    """What the policy commands; `names` must equal the dataset's action names, in order."""

    kind: str = "joint"
    names: tuple[str, ...] = JOINT_NAMES

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"ActionSpaceConfig.kind must be one of {ACTION_KINDS}, got {self.kind!r}")
        _check_names("ActionSpaceConfig.names", self.names)
        if self.kind == "ee":
            missing = [q for q in QUATERNION_NAMES if q not in self.names]
            if missing:
                raise ValueError(f"ActionSpaceConfig.names must contain the quaternion components "
                                 f"{QUATERNION_NAMES} for kind 'ee', missing {missing}")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def topic(self) -> str:
        return ACTION_TOPICS[self.kind]

    @property
    def quaternion_index(self) -> list[int] | None:
        """Positions of qx, qy, qz, qw in the action vector (kind 'ee'), else None."""
        if self.kind != "ee":
            return None
        return [self.names.index(q) for q in QUATERNION_NAMES]

    def unit(self, name: str) -> str:
        if self.kind == "joint":
            return "m" if name == GRIPPER_JOINT else "rad"
        return "1" if name in QUATERNION_NAMES else "m"


@dataclass(frozen=True)
class FeatureLayout:
    """The policy's inputs and outputs; checked against a dataset by `check_dataset`."""

    state_names: tuple[str, ...] = JOINT_NAMES
    objects: ObjectSlotsConfig | None = field(default_factory=ObjectSlotsConfig)
    action: ActionSpaceConfig = field(default_factory=ActionSpaceConfig)
    cameras: tuple[str, ...] = ()  # camera names; feature keys observation.images.<name>
    image_size: tuple[int, int] | None = None  # (H, W) of every camera; required with cameras

    def __post_init__(self) -> None:
        _check_names("FeatureLayout.state_names", self.state_names)
        if self.objects is not None and not isinstance(self.objects, ObjectSlotsConfig):
            raise ValueError("FeatureLayout.objects must be an ObjectSlotsConfig or None")
        if not isinstance(self.action, ActionSpaceConfig):
            raise ValueError("FeatureLayout.action must be an ActionSpaceConfig")
        _check_names("FeatureLayout.cameras", self.cameras, allow_empty=True)
        if self.cameras:
            size = self.image_size
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(isinstance(v, int) and v >= 32 for v in size)):
                raise ValueError(f"FeatureLayout.image_size must be (H, W) ints >= 32 when cameras "
                                 f"are used, got {size!r}")
        if not self.cameras and self.objects is None:
            raise ValueError("FeatureLayout needs objects (environment state) or cameras: "
                             "the joint state alone does not tell where the objects are")

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def env_dim(self) -> int:
        return len(self.objects.names) if self.objects else 0

    @property
    def image_keys(self) -> list[str]:
        return [IMAGE_PREFIX + c for c in self.cameras]

    @property
    def input_keys(self) -> list[str]:
        """Observation feature keys in the order the exported model takes them."""
        return [STATE_KEY] + ([ENV_STATE_KEY] if self.objects else []) + self.image_keys

    def state_unit(self, name: str) -> str:
        return "m" if name == GRIPPER_JOINT else "rad"

    def check_dataset(self, features: dict[str, dict]) -> None:
        """Raise ValueError naming the first feature whose names/shape differ from the dataset's
        (features = meta/info.json "features")."""
        expected: dict[str, list[str]] = {STATE_KEY: list(self.state_names),
                                          ACTION_KEY: list(self.action.names)}
        if self.objects is not None:
            expected[ENV_STATE_KEY] = self.objects.names
        for key, names in expected.items():
            if key not in features:
                raise ValueError(f"dataset has no feature {key!r} (has {sorted(features)})")
            got = features[key].get("names")
            if isinstance(got, dict):  # LeRobot datasets sometimes nest names per axis
                got = next(iter(got.values()), None)
            if list(got or []) != names:
                raise ValueError(f"dataset feature {key!r} has names {got!r}, the layout expects "
                                 f"{names!r}")
        for key in self.image_keys:
            if key not in features:
                raise ValueError(f"dataset has no camera feature {key!r}")
            shape = list(features[key].get("shape", []))
            if shape[:2] != list(self.image_size):
                raise ValueError(f"dataset camera {key!r} has shape {shape}, the layout expects "
                                 f"(H, W) = {tuple(self.image_size)}")

    def to_dict(self) -> dict:
        return {"state_names": list(self.state_names),
                "objects": None if self.objects is None else
                {"classes": list(self.objects.classes), "fields": list(self.objects.fields),
                 "hold": self.objects.hold},
                "action": {"kind": self.action.kind, "names": list(self.action.names)},
                "cameras": list(self.cameras),
                "image_size": None if self.image_size is None else list(self.image_size)}

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureLayout:
        objects = raw.get("objects")
        return cls(state_names=tuple(raw["state_names"]),
                   objects=None if objects is None else ObjectSlotsConfig(
                       classes=tuple(objects["classes"]), fields=tuple(objects["fields"]),
                       hold=float(objects.get("hold", 0.0))),
                   action=ActionSpaceConfig(kind=raw["action"]["kind"],
                                            names=tuple(raw["action"]["names"])),
                   cameras=tuple(raw.get("cameras", ())),
                   image_size=None if raw.get("image_size") is None else tuple(raw["image_size"]))


def hold_last_seen(env: np.ndarray, episode: np.ndarray, timestamp: np.ndarray,
                   objects: ObjectSlotsConfig) -> np.ndarray:
    """Environment states (N, C*F) of consecutive frames with `objects.hold` applied; a copy.

    Frame by frame through the policy node's own `ObjectMemory`, forgotten at each new
    `episode` value (an episode's frames are contiguous and in time order, `timestamp` in s),
    so training holds exactly as the runtime does."""
    out = np.array(env, dtype=np.float32, copy=True)
    if objects.hold <= 0:
        return out
    memory = ObjectMemory(objects.num_slots, objects.fields, objects.hold)
    for t in range(len(out)):
        if t == 0 or episode[t] != episode[t - 1]:
            memory.clear()
        out[t] = memory.fill(float(timestamp[t]), out[t])
    return out


def canonicalize_quaternions(actions: np.ndarray, quat_index: Sequence[int]) -> np.ndarray:
    """Flip each quaternion (x, y, z, w at quat_index of the last axis) into qw >= 0; a copy.

    q and -q are one rotation; regressing both signs would average them towards zero."""
    out = np.array(actions, dtype=np.float32, copy=True)
    q = out[..., list(quat_index)]  # (..., 4)
    sign = np.where(q[..., 3:4] < 0.0, -1.0, 1.0).astype(np.float32)
    out[..., list(quat_index)] = q * sign
    return out


def feature_names(features: dict[str, dict], key: str) -> list[str]:
    """Names of a vector feature in info.json features (LeRobot may nest them per axis)."""
    if key not in features:
        raise ValueError(f"dataset has no feature {key!r} (has {sorted(features)})")
    names = features[key].get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), None)
    if not names:
        raise ValueError(f"dataset feature {key!r} has no names")
    return list(names)


def layout_for_dataset(features: dict[str, dict], objects: ObjectSlotsConfig | None,
                       action_kind: str = "joint", cameras: Sequence[str] = ()) -> FeatureLayout:
    """A layout whose state/action names and image size are the dataset's; the object slots
    and cameras are the caller's choice and are checked against the dataset."""
    image_size = None
    if cameras:
        shape = features.get(IMAGE_PREFIX + cameras[0], {}).get("shape")
        if not shape:
            raise ValueError(f"dataset has no camera feature {IMAGE_PREFIX + cameras[0]!r}")
        image_size = (int(shape[0]), int(shape[1]))
    layout = FeatureLayout(
        state_names=tuple(feature_names(features, STATE_KEY)), objects=objects,
        action=ActionSpaceConfig(kind=action_kind, names=tuple(feature_names(features, ACTION_KEY))),
        cameras=tuple(cameras), image_size=image_size)
    layout.check_dataset(features)
    return layout
