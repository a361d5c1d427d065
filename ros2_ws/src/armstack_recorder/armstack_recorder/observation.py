"""Messages to the dataset's feature vectors (no ROS: reads message fields by name).

Features written by the recorder (names go to meta/info.json):
    observation.state              (7,) joint positions from joint_states, in `joint_names` order
                                   (rad; left_finger in m). right_finger mimics left_finger and
                                   is not recorded.
    action                         joint_command: (7,) position targets, same names and order;
                                   ee_command: (8,) x, y, z, qx, qy, qz, qw, gripper in the
                                   command's frame (base_link), the quaternion normalized and
                                   put in the qw >= 0 hemisphere (q and -q are one rotation).
    observation.environment_state  (4 * N,) for each class of `object_classes`, in order:
                                   <class>_x, <class>_y, <class>_z (m, base_link) and
                                   <class>_present (1.0 seen, 0.0 not). A class absent from an
                                   objects message is all zeros with present = 0: "not seen in
                                   that frame", which the present flag lets a policy tell from
                                   an object at the origin. Several detections of one class:
                                   the highest-scoring one is used.
    observation.images.<camera>    (H, W, 3) uint8 RGB from rgb8/bgr8/rgba8/bgra8/mono8 images.

A message that cannot be converted raises ObservationError; the recorder counts it and does
not use it (a sample needing it is then missing or stale, never filled in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OBJECT_CLASSES: tuple[str, ...] = ("red_cube", "green_cube", "blue_cube")
OBJECT_FIELDS: tuple[str, ...] = ("x", "y", "z", "present")
# channels to take, in RGB order, from each supported encoding
_ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)), "mono8": (1, (0, 0, 0)),
}
IMAGE_ENCODINGS = tuple(_ENCODINGS)


class ObservationError(ValueError):
    """A message does not hold what the dataset needs (the message says what is wrong)."""


def joint_vector(names: Sequence[str], positions: Sequence[float],
                 order: Sequence[str]) -> np.ndarray:
    """Positions of the joints `order` from a JointState's parallel name/position lists: (D,).

    Extra joints (right_finger) are ignored; a missing joint or a non-finite value raises.
    """
    if len(positions) != len(names):
        raise ObservationError(f"{len(names)} names but {len(positions)} positions")
    by_name = dict(zip(names, positions, strict=True))
    missing = [j for j in order if j not in by_name]
    if missing:
        raise ObservationError(f"joints {missing} missing (message has {list(names)})")
    out = np.array([by_name[j] for j in order], dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise ObservationError(f"non-finite joint positions {out.tolist()}")
    return out


def ee_action(position: Sequence[float], quaternion_xyzw: Sequence[float], gripper: float,
              frame_id: str, expected_frame: str) -> np.ndarray:
    """An ee_command as (8,) x, y, z, qx, qy, qz, qw, gripper (qw >= 0, unit quaternion)."""
    if frame_id != expected_frame:
        raise ObservationError(f"ee_command in frame {frame_id!r}, expected {expected_frame!r}")
    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ObservationError(f"ee_command quaternion {q.tolist()} is not a rotation")
    q = q / norm
    if q[3] < 0.0:
        q = -q
    out = np.concatenate([np.asarray(position, dtype=np.float64), q, [gripper]]).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ObservationError(f"non-finite ee_command {out.tolist()}")
    return out


@dataclass(frozen=True)
class Detection:
    """One localized object: class, confidence, position in the objects message's frame."""

    class_id: str
    score: float
    position: tuple[float, float, float]


@dataclass(frozen=True)
class ObjectSlots:
    """Fixed class order of observation.environment_state (see the module doc)."""

    classes: tuple[str, ...] = OBJECT_CLASSES

    def __post_init__(self) -> None:
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"ObjectSlots.classes must be non-empty names, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ObjectSlots.classes has duplicates: {self.classes!r}")

    @property
    def names(self) -> list[str]:
        """Feature names, class-major: red_cube_x, red_cube_y, ..., blue_cube_present."""
        return [f"{c}_{f}" for c in self.classes for f in OBJECT_FIELDS]

    def vector(self, detections: Sequence[Detection], frame_id: str,
               expected_frame: str) -> np.ndarray:
        """(len(classes) * 4,) float32; classes not detected are zeros with present = 0.
        Detections of classes outside the list are ignored."""
        if frame_id != expected_frame:
            raise ObservationError(f"objects in frame {frame_id!r}, expected {expected_frame!r}")
        out = np.zeros((len(self.classes), len(OBJECT_FIELDS)), dtype=np.float32)  # (N, 4)
        best = np.full(len(self.classes), -math.inf)
        index = {c: i for i, c in enumerate(self.classes)}
        for det in detections:
            i = index.get(det.class_id)
            if i is None or det.score <= best[i]:
                continue
            if not all(math.isfinite(v) for v in det.position):
                raise ObservationError(f"non-finite position of {det.class_id}: {det.position}")
            best[i] = det.score
            out[i] = (*det.position, 1.0)
        return out.reshape(-1)


def detections_of(msg: Any) -> list[Detection]:
    """vision_msgs/Detection3DArray -> its detections (best hypothesis each; bbox centre).

    The box centre is the object position every Detection3D carries (the hypothesis pose is
    optional in vision_msgs); detections without a hypothesis say nothing of the class."""
    out = []
    for det in msg.detections:
        if not det.results:
            continue
        best = max(det.results, key=lambda r: r.hypothesis.score)
        p = det.bbox.center.position
        out.append(Detection(best.hypothesis.class_id, float(best.hypothesis.score),
                             (float(p.x), float(p.y), float(p.z))))
    return out


def image_rgb(encoding: str, height: int, width: int, step: int, data: Any,
              expected: tuple[int, int], copy: bool = True) -> np.ndarray:
    """A sensor_msgs/Image's pixels as an (H, W, 3) uint8 RGB array.

    `expected` = (H, W) of the dataset's camera feature; other sizes are refused rather than
    resized, so what is recorded is what the camera saw. copy=False returns a view of `data`
    for unpadded rgb8 (any other layout is converted, hence copied): only for a buffer nobody
    will write to again."""
    if encoding not in _ENCODINGS:
        raise ObservationError(f"image encoding {encoding!r} is not one of {IMAGE_ENCODINGS}")
    if (height, width) != tuple(expected):
        raise ObservationError(f"image is {height}x{width} (HxW), the dataset camera is "
                               f"{expected[0]}x{expected[1]}")
    channels, pick = _ENCODINGS[encoding]
    row = width * channels
    buf = np.frombuffer(data, dtype=np.uint8)
    if step < row or buf.size < step * (height - 1) + row:
        raise ObservationError(f"image data too short: {buf.size} bytes for {height} rows of "
                               f"step {step} ({encoding})")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1))
    pixels = rows.reshape(height, width, channels)
    if encoding == "rgb8":
        return np.array(pixels, copy=copy or step != row)
    return pixels[:, :, list(pick)]  # fancy indexing copies
