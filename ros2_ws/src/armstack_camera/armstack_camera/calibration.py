"""Camera models: intrinsics (what sensor_msgs/CameraInfo carries) and mounting extrinsics.

Two file formats are read:
- armstack's config/camera/calibration.yaml (width, height, fx, fy, cx, cy, distortion,
  frame_id, extrinsics: parent_frame, translation, rotation_xyzw);
- the ROS camera_calibration YAML that camera_calibration / camera_info_manager write
  (image_width, image_height, camera_matrix: {rows, cols, data}, distortion_model,
  distortion_coefficients, rectification_matrix, projection_matrix).

Pixel convention of both (and of CameraInfo): u = fx * x / z + cx with pixel (0, 0) the
centre of the top-left pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

DEFAULT_FRAME_ID = "camera_color_optical_frame"
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of one image stream. K all zeros means uncalibrated (CameraInfo convention)."""

    width: int
    height: int
    K: np.ndarray  # (3, 3)
    D: tuple[float, ...]  # distortion coefficients in the order of distortion_model
    distortion_model: str = "plumb_bob"
    frame_id: str = DEFAULT_FRAME_ID
    P: np.ndarray | None = None  # (3, 4); None: [K | 0] (unrectified monocular camera)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"CameraModel.width/height must be > 0, got {self.width}x{self.height}"
            )
        if np.asarray(self.K).shape != (3, 3):
            raise ValueError(f"CameraModel.K must be (3, 3), got {np.asarray(self.K).shape}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f"CameraModel.distortion_model must be one of {list(DISTORTION_MODELS)}, "
                f"got '{self.distortion_model}'"
            )
        if self.P is not None and np.asarray(self.P).shape != (3, 4):
            raise ValueError(f"CameraModel.P must be (3, 4), got {np.asarray(self.P).shape}")
        if not self.frame_id:
            raise ValueError("CameraModel.frame_id must not be empty")

    @classmethod
    def pinhole(
        cls,
        width: int,
        height: int,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        D=(0.0, 0.0, 0.0, 0.0, 0.0),
        frame_id: str = DEFAULT_FRAME_ID,
        distortion_model: str = "plumb_bob",
    ) -> CameraModel:
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(width, height, K, tuple(float(d) for d in D), distortion_model, frame_id)

    @classmethod
    def uncalibrated(cls, width: int, height: int, frame_id: str = DEFAULT_FRAME_ID) -> CameraModel:
        return cls(width, height, np.zeros((3, 3)), (), "plumb_bob", frame_id)

    @property
    def calibrated(self) -> bool:
        return bool(np.any(self.K != 0.0))

    def projection(self) -> np.ndarray:
        """(3, 4) projection matrix: the given P, else [K | 0]."""
        if self.P is not None:
            return np.asarray(self.P, dtype=np.float64)
        return np.hstack([np.asarray(self.K, dtype=np.float64), np.zeros((3, 1))])

    def with_frame_id(self, frame_id: str) -> CameraModel:
        return CameraModel(
            self.width, self.height, self.K, self.D, self.distortion_model, frame_id, self.P
        )


@dataclass(frozen=True)
class Extrinsics:
    """Pose of the camera's optical frame (child_frame) in parent_frame."""

    parent_frame: str
    child_frame: str
    translation: np.ndarray  # (3,) m
    rotation_xyzw: np.ndarray  # (4,) unit quaternion


def _need(raw: dict, key: str, path: Path, where: str = ""):
    if not isinstance(raw, dict) or key not in raw:
        raise ValueError(f"{path}: missing key {where}{key}")
    return raw[key]


def _matrix(raw: dict, key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    entry = _need(raw, key, path)
    data = np.asarray(_need(entry, "data", path, f"{key}."), dtype=np.float64)
    if data.size != shape[0] * shape[1]:
        raise ValueError(
            f"{path}: {key}.data must have {shape[0] * shape[1]} values, got {data.size}"
        )
    return data.reshape(shape)


def _read_ros_format(raw: dict, path: Path, frame_id: str) -> CameraModel:
    K = _matrix(raw, "camera_matrix", (3, 3), path)
    D = ()
    if "distortion_coefficients" in raw:
        D = tuple(
            float(v)
            for v in _need(raw["distortion_coefficients"], "data", path, "distortion_coefficients.")
        )
    P = _matrix(raw, "projection_matrix", (3, 4), path) if "projection_matrix" in raw else None
    return CameraModel(
        int(_need(raw, "image_width", path)),
        int(_need(raw, "image_height", path)),
        K,
        D,
        str(raw.get("distortion_model", "plumb_bob")),
        frame_id,
        P,
    )


def _read_armstack_format(raw: dict, path: Path, frame_id: str) -> CameraModel:
    values = {k: float(_need(raw, k, path)) for k in ("fx", "fy", "cx", "cy")}
    for key in ("fx", "fy"):
        if values[key] <= 0.0:
            raise ValueError(f"{path}: {key} must be > 0, got {values[key]}")
    return CameraModel.pinhole(
        int(_need(raw, "width", path)),
        int(_need(raw, "height", path)),
        D=tuple(float(d) for d in raw.get("distortion", ()) or ()),
        frame_id=str(raw.get("frame_id", frame_id)),
        distortion_model=str(raw.get("distortion_model", "plumb_bob")),
        **values,
    )


def _read_extrinsics(raw: dict, path: Path, child_frame: str) -> Extrinsics | None:
    extr = raw.get("extrinsics")
    if extr is None:
        return None
    translation = np.asarray(_need(extr, "translation", path, "extrinsics."), dtype=np.float64)
    quat = np.asarray(_need(extr, "rotation_xyzw", path, "extrinsics."), dtype=np.float64)
    if translation.shape != (3,):
        raise ValueError(f"{path}: extrinsics.translation must have 3 values")
    if quat.shape != (4,) or abs(np.linalg.norm(quat) - 1.0) > 1e-3:
        raise ValueError(f"{path}: extrinsics.rotation_xyzw must be a unit quaternion (x, y, z, w)")
    parent = str(extr.get("parent_frame", "base_link"))
    return Extrinsics(parent, child_frame, translation, quat / np.linalg.norm(quat))


def load_camera_file(
    path: str | Path, frame_id: str = DEFAULT_FRAME_ID
) -> tuple[CameraModel, Extrinsics | None]:
    """Read a camera file of either format; errors name the file and the key.

    `frame_id` is used where the file names none (the ROS format never does).
    """
    path = Path(path)
    with open(path) as stream:
        raw = yaml.safe_load(stream)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "camera_matrix" in raw:
        model = _read_ros_format(raw, path, frame_id)
    elif "fx" in raw:
        model = _read_armstack_format(raw, path, frame_id)
    else:
        raise ValueError(
            f"{path}: neither a ROS camera_calibration file (camera_matrix) nor an armstack "
            f"calibration file (fx, fy, cx, cy)"
        )
    return model, _read_extrinsics(raw, path, model.frame_id)


def write_ros_camera_yaml(
    path: str | Path, model: CameraModel, camera_name: str = "camera"
) -> None:
    """Write `model` in the ROS camera_calibration format (what camera_info_manager reads)."""
    data = {
        "image_width": model.width,
        "image_height": model.height,
        "camera_name": camera_name,
        "camera_matrix": {"rows": 3, "cols": 3, "data": np.asarray(model.K).ravel().tolist()},
        "distortion_model": model.distortion_model,
        "distortion_coefficients": {"rows": 1, "cols": len(model.D), "data": list(model.D)},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": model.projection().ravel().tolist()},
    }
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
