"""Policy observations from the latest messages, with staleness limits (no ROS).

The node hands every joint_states, objects and image message to an `ObservationAssembler`
(already unpacked into plain values); the inference worker asks it for the observation of the
newest camera frame. Feature layout (the model card's; armstack_learning.features):

    observation.state              (n_obs, S) joint positions in the card's name order
    observation.environment_state  (n_obs, C*F) one slot per object class, class-major, fields
                                   x, y, z (m, base_link) and present (1/0) of the best-scored
                                   detection of that class; a class not seen is all zeros
    observation.images.<cam>       (n_obs, 3, H, W) RGB in [0, 1], resized to the card's size

Time. The observation's stamp t_obs is the camera frame's: the newest stamp that every
camera-derived source (objects, images) has reached (only joint_states when there is none).
History frame j of n (oldest first) is for t_obs - (n-1-j)/fps, the dataset's spacing; each
source contributes its newest message at or before that time (sample and hold, as recording
does), and a history reaching back before a source's first message repeats that message, as
training repeats an episode's first frame.

Staleness is refused, not used: the observation is refused when t_obs is older than
`max_observation_age` (or as far ahead of the clock), when a source's message for a frame is
further than `max_source_skew` from the frame's time (e.g. joint_states stopped while the
camera runs), or while any source has sent nothing.

Object hold (`object_hold`, the model card's observation.environment_state hold_s): a class
not seen in an objects message keeps its last detection, present = 1, for up to that long
after it, as training held it (armstack_learning.features.hold_last_seen). 0 turns it off.

Object labels match a class when equal to it or when they start with "<class>_" (the
simulator's and the detector's "red_cube" is class "red").
"""

from __future__ import annotations

import bisect
import enum
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from armstack_policy.onnx_policy import PolicyCard

logger = logging.getLogger(__name__)

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
IMAGE_PREFIX = "observation.images."
OBJECT_FIELDS = ("x", "y", "z", "present", "score")
JOINT_STATES = "joint_states"
MAX_OBJECT_HOLD = 10.0  # s; longer is no longer "briefly hidden"
OBJECTS = "objects"


@dataclass(frozen=True)
class ObservationConfig:
    """Layout (from the model card) and staleness limits; validated on construction."""

    state_names: tuple[str, ...]
    object_classes: tuple[str, ...] = ()  # empty: the policy takes no environment state
    object_fields: tuple[str, ...] = ("x", "y", "z", "present")
    object_hold: float = 0.0  # s a class not seen keeps its last detection (module doc)
    cameras: tuple[str, ...] = ()  # camera names; features observation.images.<name>
    image_size: tuple[int, int] | None = None  # (H, W) the policy takes; required with cameras
    n_obs_steps: int = 1
    spacing: float = 0.02  # s between history frames (1 / dataset fps)
    max_observation_age: float = 0.25  # s
    max_source_skew: float = 0.1  # s
    # Messages kept per source: enough to reach (n_obs_steps - 1) * spacing back at the
    # fastest source's rate (joint_states at up to a few hundred Hz).
    history_size: int = 64

    @classmethod
    def for_card(cls, card: PolicyCard, **limits: float | int) -> ObservationConfig:
        """The layout a model card describes; the staleness limits and history size are the
        defaults unless given in `limits`."""
        sizes = {(h, w) for _, h, w in card.cameras}
        if len(sizes) > 1:
            raise ValueError(f"cameras of different image sizes {sorted(sizes)} are not supported")
        return cls(state_names=card.state_names, object_classes=card.object_classes,
                   object_fields=card.object_fields, object_hold=card.object_hold,
                   cameras=tuple(c for c, _, _ in card.cameras),
                   image_size=next(iter(sizes), None), n_obs_steps=card.n_obs_steps,
                   spacing=card.dt, **limits)

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"ObservationConfig.{name}: {message}")

        for name in ("state_names", "object_classes", "object_fields", "cameras"):
            names = getattr(self, name)
            if not isinstance(names, tuple) or len(set(names)) != len(names):
                fail(name, f"must be a tuple of distinct names, got {names!r}")
        if not self.state_names:
            fail("state_names", "must not be empty")
        unknown = [f for f in self.object_fields if f not in OBJECT_FIELDS]
        if unknown:
            fail("object_fields", f"{unknown} unknown; supported: {OBJECT_FIELDS}")
        problem = object_hold_problem(self.object_hold, self.object_fields)
        if problem:
            fail("object_hold", problem)
        if self.cameras and (self.image_size is None or len(self.image_size) != 2
                             or min(self.image_size) < 1):
            fail("image_size", f"must be (H, W) >= 1 with cameras, got {self.image_size!r}")
        if not isinstance(self.n_obs_steps, int) or self.n_obs_steps < 1:
            fail("n_obs_steps", f"must be an int >= 1, got {self.n_obs_steps!r}")
        for name in ("spacing", "max_observation_age", "max_source_skew"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                fail(name, f"must be a finite number > 0 (s), got {value!r}")
        if not isinstance(self.history_size, int) or self.history_size < self.n_obs_steps + 1:
            fail("history_size", f"must be an int >= n_obs_steps + 1, got {self.history_size!r}")

    @property
    def env_dim(self) -> int:
        return len(self.object_classes) * len(self.object_fields)

    @property
    def camera_sources(self) -> tuple[str, ...]:
        """Sources that carry the camera frame's stamp (the observation's clock)."""
        return ((OBJECTS,) if self.object_classes else ()) + tuple(
            IMAGE_PREFIX + c for c in self.cameras)


@dataclass(frozen=True, slots=True)
class DetectedObject:
    """One localized object of an objects message."""

    label: str
    score: float
    position: tuple[float, float, float]  # m, base_link


class Status(enum.Enum):
    READY = "ready"
    MISSING = "missing"  # a source has sent nothing yet
    STALE = "stale"  # too old, too far ahead of the clock, or sources out of step


@dataclass(frozen=True)
class Assembly:
    """Result of `ObservationAssembler.assemble`: an observation or why there is none."""

    status: Status
    stamp: float | None = None  # t_obs, s
    features: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (n_obs, ...) float32
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.status is Status.READY


def object_slots(objects: Iterable[DetectedObject], classes: Sequence[str],
                 fields: Sequence[str]) -> np.ndarray:
    """(len(classes) * len(fields),) float32 environment state, class-major (see module doc)."""
    best: dict[str, DetectedObject] = {}
    for obj in objects:
        cls = next((c for c in classes if obj.label == c or obj.label.startswith(c + "_")), None)
        if cls is not None and (cls not in best or obj.score > best[cls].score):
            best[cls] = obj
    out = np.zeros((len(classes), len(fields)), dtype=np.float32)
    for i, cls in enumerate(classes):
        obj = best.get(cls)
        if obj is None:
            continue
        values = {"x": obj.position[0], "y": obj.position[1], "z": obj.position[2],
                  "present": 1.0, "score": obj.score}
        out[i] = [values[f] for f in fields]
    return out.reshape(-1)


def object_hold_problem(hold: object, fields: Sequence[str]) -> str | None:
    """Why `hold` (s) is not an object hold for slots of `fields`, or None: the one check of the
    layout, the model card and the assembler."""
    if (not isinstance(hold, (int, float)) or isinstance(hold, bool)
            or not 0.0 <= hold <= MAX_OBJECT_HOLD):
        return f"must be a number of seconds in [0, {MAX_OBJECT_HOLD}], got {hold!r}"
    if hold > 0 and "present" not in fields:
        return ("needs the 'present' field, which says whether a slot holds a detection; "
                f"fields are {tuple(fields)!r}")
    return None


class ObjectMemory:
    """Each class's last detection, to fill the slots of a class not seen for up to `hold` s."""

    def __init__(self, classes: int, fields: Sequence[str], hold: float) -> None:
        self.hold = hold
        self._width, self._present = len(fields), fields.index("present")
        self._last = np.zeros((classes, self._width), np.float32)  # last seen slot values
        self._stamp = np.full(classes, -math.inf)  # when each was seen, s

    def fill(self, stamp: float, slots: np.ndarray) -> np.ndarray:
        """(C*F,) slots of a message at `stamp` -> a copy with held classes filled in."""
        out = slots.reshape(len(self._stamp), self._width).copy()
        seen = out[:, self._present] > 0
        newer = seen & (stamp >= self._stamp)  # a late message does not move the memory back
        self._last[newer], self._stamp[newer] = out[newer], stamp
        age = stamp - self._stamp
        held = ~seen & (age >= 0) & (age <= self.hold + 1e-9)
        out[held] = self._last[held]
        return out.reshape(-1)

    def clear(self) -> None:
        self._stamp[:] = -math.inf


def image_feature(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0, 3) uint8 RGB -> (3, H, W) float32 in [0, 1], resized to size = (H, W)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.shape[:2] != tuple(size):
        import cv2  # only image policies need OpenCV

        # INTER_AREA averages when shrinking, as a camera at the lower resolution would see.
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


class _Track:
    """The last `size` messages of one source, in stamp order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.stamps: list[float] = []
        self.values: list[object] = []

    def add(self, stamp: float, value: object) -> None:
        if self.stamps and stamp < self.stamps[-1]:
            i = bisect.bisect_right(self.stamps, stamp)  # late arrival: keep stamp order
        else:
            i = len(self.stamps)
        self.stamps.insert(i, stamp)
        self.values.insert(i, value)
        if len(self.stamps) > self.size:
            del self.stamps[0], self.values[0]

    def clear(self) -> None:
        self.stamps.clear()
        self.values.clear()

    def newest(self) -> float | None:
        return self.stamps[-1] if self.stamps else None

    def at(self, t: float) -> tuple[float, object]:
        """Newest (stamp, value) at or before t; the first message when all are newer than t.
        The track must not be empty."""
        i = max(bisect.bisect_right(self.stamps, t) - 1, 0)
        return self.stamps[i], self.values[i]


class ObservationAssembler:
    """Latest messages in (any thread), observations out (the inference worker).

    `add_*` only store plain values under a lock; the work of assembling (image resizing)
    happens in `assemble`, on the worker's time.
    """

    def __init__(self, config: ObservationConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)  # notified when t_obs may have moved
        sources = (JOINT_STATES, *config.camera_sources)
        self._clocks = config.camera_sources or (JOINT_STATES,)
        self._tracks = {s: _Track(config.history_size) for s in sources}
        self._memory = (ObjectMemory(len(config.object_classes), config.object_fields,
                                     config.object_hold) if config.object_hold > 0 else None)
        self._index_cache: tuple[tuple[str, ...], np.ndarray | None] = ((), None)
        self.rejected_joint_states = 0  # messages lacking one of the state names

    def add_joint_state(self, stamp: float, names: Sequence[str],
                        positions: Sequence[float]) -> bool:
        """Store the state in the card's name order; False (and counted) if a name is missing
        or a value is not finite."""
        names = tuple(names)
        cached_names, index = self._index_cache
        if names != cached_names:
            lookup = {n: i for i, n in enumerate(names)}
            missing = [n for n in self.config.state_names if n not in lookup]
            index = None if missing else np.array([lookup[n] for n in self.config.state_names])
            self._index_cache = (names, index)
        values = np.asarray(positions, dtype=np.float64)
        if index is None or len(values) != len(names):
            self.rejected_joint_states += 1
            return False
        state = values[index].astype(np.float32)  # (S,)
        if not np.isfinite(state).all():
            self.rejected_joint_states += 1
            return False
        self._add(JOINT_STATES, stamp, state)
        return True

    def add_objects(self, stamp: float, objects: Iterable[DetectedObject]) -> None:
        if not self.config.object_classes:
            return
        slots = object_slots(objects, self.config.object_classes, self.config.object_fields)
        with self._lock:
            if self._memory is not None:
                slots = self._memory.fill(stamp, slots)
            self._add_locked(OBJECTS, stamp, slots)

    def add_image(self, camera: str, stamp: float, rgb: np.ndarray) -> None:
        """rgb (H, W, 3) uint8; kept as given (a view of the message is fine: it is not
        written to) until `assemble` converts the frames it needs."""
        key = IMAGE_PREFIX + camera
        if key not in self._tracks:
            raise KeyError(f"camera {camera!r} is not one the policy takes {self.config.cameras}")
        self._add(key, stamp, rgb)

    def _add(self, source: str, stamp: float, value: object) -> None:
        with self._lock:
            self._add_locked(source, stamp, value)

    def _add_locked(self, source: str, stamp: float, value: object) -> None:
        self._tracks[source].add(stamp, value)
        if source in self._clocks:
            self._new_frame.notify_all()

    def clear(self) -> None:
        """Forget every message (a new episode starts from fresh observations)."""
        with self._lock:
            for track in self._tracks.values():
                track.clear()
            if self._memory is not None:
                self._memory.clear()

    def newest_stamp(self) -> float | None:
        """t_obs the next `assemble` would use, or None while a clock source is silent."""
        with self._lock:
            return self._observation_time()

    def wait_for_newer(self, stamp: float | None, timeout: float) -> bool:
        """Block until an observation newer than `stamp` (None: any) can be assembled, or
        `timeout` s pass; True if there is one."""
        def newer() -> bool:
            t_obs = self._observation_time()
            return t_obs is not None and (stamp is None or t_obs > stamp)

        with self._new_frame:
            return self._new_frame.wait_for(newer, timeout)

    def _observation_time(self) -> float | None:
        newest = [self._tracks[s].newest() for s in self._clocks]
        return None if None in newest else min(newest)

    def assemble(self, now: float) -> Assembly:
        """The observation of the newest camera frame, or why there is none (see module doc)."""
        cfg = self.config
        with self._lock:
            t_obs = self._observation_time()
            silent = [s for s, track in self._tracks.items() if track.newest() is None]
            if silent:
                return Assembly(Status.MISSING, t_obs,
                                reason=f"nothing received yet on {', '.join(silent)}")
            age = now - t_obs
            if abs(age) > cfg.max_observation_age:
                when = f"{age:.3f} s old" if age > 0 else f"{-age:.3f} s ahead of the clock"
                return Assembly(Status.STALE, t_obs, reason=f"observation {when} "
                                f"(max_observation_age {cfg.max_observation_age} s)")
            picked: dict[str, list[object]] = {}
            n = cfg.n_obs_steps
            for source, track in self._tracks.items():
                frames = []
                for j in range(n):
                    t_frame = t_obs - (n - 1 - j) * cfg.spacing
                    stamp, value = track.at(t_frame)
                    skew = t_frame - stamp  # > 0: the message is older than the frame
                    # Older history frames may repeat a first message that is newer than
                    # them (as training repeats an episode's first frame); the newest frame
                    # must have its own data.
                    if skew > cfg.max_source_skew or (
                            j == n - 1 and -skew > cfg.max_source_skew):
                        return Assembly(Status.STALE, t_obs, reason=self._skew_reason(
                            source, stamp, t_frame))
                    frames.append(value)
                picked[source] = frames
        return Assembly(Status.READY, t_obs, self._features(picked))

    def _skew_reason(self, source: str, stamp: float, t_frame: float) -> str:
        return (f"{source}: no message within max_source_skew {self.config.max_source_skew} s "
                f"of the observation frame at {t_frame:.3f} s (nearest is "
                f"{abs(t_frame - stamp):.3f} s {'before' if stamp <= t_frame else 'after'} it)")

    def _features(self, picked: dict[str, list[object]]) -> dict[str, np.ndarray]:
        features = {STATE_KEY: np.stack(picked[JOINT_STATES])}  # (n_obs, S)
        if self.config.object_classes:
            features[ENV_STATE_KEY] = np.stack(picked[OBJECTS])  # (n_obs, C*F)
        for cam in self.config.cameras:
            key = IMAGE_PREFIX + cam
            # (n_obs, 3, H, W); a frame repeated in the history is converted once
            converted = {id(f): image_feature(f, self.config.image_size) for f in picked[key]}
            features[key] = np.stack([converted[id(f)] for f in picked[key]])
        return features
