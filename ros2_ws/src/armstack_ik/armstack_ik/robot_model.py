"""The URDF's joint tree: joint records (limits, mimic) and every link's pose for tf.

`LinkTree` does what robot_state_publisher does, for the pip-only way where it has no
wheel: from joint positions it gives, per URDF joint, the transform parent link -> child
link (forward kinematics by pinocchio on the same URDF the IK and MuJoCo read). Fixed
joints give constant transforms (tf_static); mimic joints follow their master
(value = multiplier * master + offset, as the URDF's <mimic> says).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pinocchio as pin
from armstack_common.transforms import matrix_to_quat_xyzw

_MOVABLE = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True)
class Mimic:
    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class UrdfJoint:
    """One <joint> of the URDF. Limits are None where the URDF gives none."""

    name: str
    type: str  # revolute, continuous, prismatic, fixed (others are refused)
    parent: str
    child: str
    lower: float | None = None
    upper: float | None = None
    velocity: float | None = None  # rad/s or m/s
    mimic: Mimic | None = None


def _optional_float(element: ET.Element | None, attribute: str) -> float | None:
    if element is None or element.get(attribute) is None:
        return None
    return float(element.get(attribute))


def parse_joints(urdf_text: str) -> list[UrdfJoint]:
    """The joints of a URDF document, in document order."""
    root = ET.fromstring(urdf_text)
    joints = []
    for element in root.findall("joint"):
        name = element.get("name")
        kind = element.get("type")
        if kind not in (*_MOVABLE, "fixed"):
            raise ValueError(
                f"URDF joint {name!r}: type {kind!r} is not supported (only {_MOVABLE} and fixed)"
            )
        limit = element.find("limit")
        mimic_el = element.find("mimic")
        mimic = None
        if mimic_el is not None:
            mimic = Mimic(
                joint=mimic_el.get("joint"),
                multiplier=float(mimic_el.get("multiplier", "1")),
                offset=float(mimic_el.get("offset", "0")),
            )
        joints.append(
            UrdfJoint(
                name=name,
                type=kind,
                parent=element.find("parent").get("link"),
                child=element.find("child").get("link"),
                lower=_optional_float(limit, "lower"),
                upper=_optional_float(limit, "upper"),
                velocity=_optional_float(limit, "velocity"),
                mimic=mimic,
            )
        )
    return joints


@dataclass(frozen=True)
class LinkTransform:
    """Pose of `child` in `parent`: p_parent = matrix @ p_child. matrix (4, 4)."""

    parent: str
    child: str
    matrix: np.ndarray

    @property
    def translation(self) -> np.ndarray:
        return self.matrix[:3, 3].copy()  # (3,)

    @property
    def quaternion(self) -> np.ndarray:
        """Rotation as a unit quaternion (x, y, z, w), as geometry_msgs orders it. (4,)"""
        # Not pin.Quaternion(matrix): with pinocchio 4.1 each call leaks ~80 bytes, 0.5 GB/h
        # at the state publisher's 200 Hz x 8 joints (found by tools/soak.py).
        return matrix_to_quat_xyzw(self.matrix[:3, :3])


class LinkTree:
    """Per-joint link transforms of a URDF from joint positions (robot_state_publisher's job).

    Not thread-safe: one pinocchio Data workspace per instance.
    """

    def __init__(self, urdf_text: str) -> None:
        self.joints = parse_joints(urdf_text)
        by_name = {j.name: j for j in self.joints}
        for joint in self.joints:
            if joint.mimic is not None and joint.mimic.joint not in by_name:
                raise ValueError(f"URDF joint {joint.name!r} mimics unknown joint {joint.mimic.joint!r}")
        # Every joint becomes a pinocchio joint, the mimic ones too (independent there;
        # their value is set from the master here).
        self.model = pin.buildModelFromXML(urdf_text)
        self.data = self.model.createData()
        self._body = {}
        for joint in self.joints:
            for link in (joint.parent, joint.child):
                if link not in self._body:
                    self._body[link] = self.model.getFrameId(link, pin.FrameType.BODY)
        # The joints a joint_states message sets: movable and not mimic.
        self.actuated: tuple[str, ...] = tuple(
            j.name for j in self.joints if j.type in _MOVABLE and j.mimic is None
        )
        self._moving = [j for j in self.joints if j.type in _MOVABLE]
        self._fixed = [j for j in self.joints if j.type == "fixed"]

    def static_transforms(self) -> list[LinkTransform]:
        """Transforms of the fixed joints: constant, for tf_static."""
        return self._transforms(self._fixed, pin.neutral(self.model))

    def transforms(self, positions: Mapping[str, float]) -> list[LinkTransform]:
        """Transforms of the movable joints whose position is known (given, or mimicking a
        given joint). Unknown joints are skipped, as robot_state_publisher does."""
        q = pin.neutral(self.model)
        known = []
        for joint in self._moving:
            if joint.mimic is not None:
                master = positions.get(joint.mimic.joint)
                value = None if master is None else joint.mimic.multiplier * master + joint.mimic.offset
            else:
                value = positions.get(joint.name)
            if value is None:
                continue
            self._set_joint(q, joint, float(value))
            known.append(joint)
        return self._transforms(known, q)

    def _set_joint(self, q: np.ndarray, joint: UrdfJoint, value: float) -> None:
        pin_joint = self.model.joints[self.model.getJointId(joint.name)]
        if pin_joint.nq == 2:  # continuous: pinocchio stores (cos, sin)
            q[pin_joint.idx_q : pin_joint.idx_q + 2] = (np.cos(value), np.sin(value))
        else:
            q[pin_joint.idx_q] = value

    def _transforms(self, joints: list[UrdfJoint], q: np.ndarray) -> list[LinkTransform]:
        pin.framesForwardKinematics(self.model, self.data, q)
        out = []
        for joint in joints:
            parent = self.data.oMf[self._body[joint.parent]]
            child = self.data.oMf[self._body[joint.child]]
            out.append(LinkTransform(joint.parent, joint.child, parent.actInv(child).homogeneous))
        return out
