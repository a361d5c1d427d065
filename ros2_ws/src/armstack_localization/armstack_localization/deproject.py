"""From 2D detections and an aligned depth image to object positions in the robot base frame.

Conventions: pixel coordinates are continuous (pixel centres at +0.5), the same as detector
boxes and as OpenCV's projection (a point on the optical axis projects to (cx, cy)). Depth is
the z coordinate in the camera optical frame (what RealSense aligned depth and the simulator
give), not the length of the ray. Camera frame: camera_color_optical_frame (x right, y down,
z forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Scale from MAD to the standard deviation of a normal distribution.
_MAD_TO_SIGMA = 1.4826
# Tight iteration limits for undistortion: OpenCV 4's default (5 iterations) leaves pixel-level
# error near the image corners for strong distortion.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


@dataclass(frozen=True)
class LocalizationConfig:
    """How depth is read inside a detection box."""

    # Side of the central part of the box whose depths are used, as a fraction of the box side:
    # the box corners mostly see the background.
    central_fraction: float = 0.5
    # Fewer valid depth pixels than this in the central region: no position for the detection.
    min_valid_pixels: int = 8
    # Depths farther than this many robust sigmas (MAD) from the median are outliers.
    outlier_sigmas: float = 3.0
    # Depth readings outside this range (m) are treated as invalid.
    min_depth_m: float = 0.05
    max_depth_m: float = 5.0
    # Metres per depth unit: 16UC1 depth images are in millimetres.
    depth_scale: float = 0.001
    # Depth sees an object's near surface; its centre lies about half its thickness farther
    # along the viewing ray (0.015 m for the 3 cm cubes). 0 publishes the surface point.
    surface_to_centre_m: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.central_fraction <= 1.0:
            raise ValueError(f"central_fraction must be in (0, 1], got {self.central_fraction}")
        if self.min_valid_pixels < 1:
            raise ValueError(f"min_valid_pixels must be >= 1, got {self.min_valid_pixels}")
        if self.outlier_sigmas <= 0.0:
            raise ValueError(f"outlier_sigmas must be > 0, got {self.outlier_sigmas}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(
                f"min_depth_m must be >= 0 and below max_depth_m, got min_depth_m "
                f"{self.min_depth_m}, max_depth_m {self.max_depth_m}"
            )
        if self.depth_scale <= 0.0:
            raise ValueError(f"depth_scale must be > 0, got {self.depth_scale}")
        if not 0.0 <= self.surface_to_centre_m < 1.0:
            raise ValueError(f"surface_to_centre_m must be in [0, 1), got {self.surface_to_centre_m}")


@dataclass(frozen=True)
class LocalizedObject:
    """One detection placed in 3D."""

    position: np.ndarray  # (3,) metres, in the frame of T_base_cam's target (base_link)
    size: np.ndarray  # (2,) metres: box width and height seen at the object's depth
    depth_m: float  # robust depth of the box centre region, camera z
    class_id: int | str  # passed through as given (Detection2D hypotheses carry strings)
    score: float
    detection_index: int  # index into the detections this came from


@dataclass(frozen=True)
class LocalizationResult:
    objects: list[LocalizedObject]
    dropped_no_depth: int  # detections with too few valid depth pixels


def robust_box_depth(
    depth_m: np.ndarray,
    box: Sequence[float],
    central_fraction: float = 0.5,
    min_valid_pixels: int = 8,
    outlier_sigmas: float = 3.0,
    depth_range: tuple[float, float] = (0.0, np.inf),
) -> float | None:
    """Median depth of the central part of `box` after rejecting outliers, or None.

    depth_m: (H, W) depths in metres; 0, NaN and inf mean "no reading". box: x1, y1, x2, y2
    in pixels. Pixels within `depth_range` (exclusive of 0) count as valid; the median of the
    valid ones is refined once by dropping values farther than `outlier_sigmas` robust sigmas
    (1.4826 * MAD) from it, which removes background seen through holes and flying pixels.
    """
    h, w = depth_m.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w = (x2 - x1) * central_fraction / 2.0
    half_h = (y2 - y1) * central_fraction / 2.0
    # Pixel i covers [i, i + 1): take every pixel whose centre lies in the central region, and
    # at least the pixel under the centre for tiny boxes.
    c0 = min(max(int(np.ceil(cx - half_w - 0.5)), 0), w - 1)
    c1 = min(max(int(np.floor(cx + half_w - 0.5)), c0), w - 1)
    r0 = min(max(int(np.ceil(cy - half_h - 0.5)), 0), h - 1)
    r1 = min(max(int(np.floor(cy + half_h - 0.5)), r0), h - 1)
    region = depth_m[r0 : r1 + 1, c0 : c1 + 1].ravel()
    lo, hi = depth_range
    valid = region[np.isfinite(region) & (region > max(lo, 0.0)) & (region <= hi)]
    if valid.size < min_valid_pixels:
        return None
    median = float(np.median(valid))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(valid - median)))
    if sigma > 0.0:
        inliers = valid[np.abs(valid - median) <= outlier_sigmas * sigma]
        median = float(np.median(inliers))
    return median


def _undistort_normalized(uv: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) -> ideal normalized image coordinates (N, 2) (x/z, y/z)."""
    src = uv.reshape(-1, 1, 2).astype(np.float64)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x keeps the criteria in a separate call
        out = cv2.undistortPointsIter(src, K, dist, None, None, _UNDISTORT_CRITERIA)
    else:
        out = cv2.undistortPoints(src, K, dist, criteria=_UNDISTORT_CRITERIA)
    return out.reshape(-1, 2)


def deproject_pixel(u, v, z, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Pixel(s) (u, v) with depth z -> point(s) (..., 3) in the camera optical frame.

    u, v, z: scalars or arrays of one shape. K: (3, 3). dist: OpenCV / plumb_bob coefficients
    (k1, k2, p1, p2[, k3, ...]); None or all zeros means no distortion.
    """
    u, v, z = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float), np.asarray(z, float))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)  # (N, 2)
    K = np.asarray(K, dtype=np.float64)
    coeffs = np.zeros(0) if dist is None else np.asarray(dist, dtype=np.float64).ravel()
    if np.any(coeffs != 0.0):
        xy = _undistort_normalized(uv, K, coeffs)
    else:
        xy = (uv - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])  # skew-free pinhole
    zf = z.ravel()[:, None]
    points = np.concatenate([xy * zf, zf], axis=1)  # (N, 3)
    return points.reshape(*u.shape, 3)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform to points (..., 3)."""
    T = np.asarray(T, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def _plain(value: int | str | np.generic) -> int | str:
    return value.item() if isinstance(value, np.generic) else value


def localize(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: Sequence[int | str],
    depth_image: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray | None,
    T_base_cam: np.ndarray,
    config: LocalizationConfig | None = None,
) -> LocalizationResult:
    """Place each detection in the base frame using the aligned depth image.

    boxes (N, 4) xyxy in colour-image pixels, scores (N,), class_ids (N,); depth_image (H, W)
    raw depth units (16UC1 mm with the default depth_scale), aligned to the colour image so the
    boxes index it directly. T_base_cam: (4, 4) pose of the camera optical frame in base_link.
    The position is the box centre pixel deprojected at the robust depth of its central region,
    which lies on the visible surface, moved `surface_to_centre_m` farther along the viewing ray
    towards the object's centre of volume.
    Detections without enough valid depth are dropped and counted.
    """
    config = config or LocalizationConfig()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    depth_m = depth_image.astype(np.float32) * np.float32(config.depth_scale)  # (H, W)
    depths = [
        robust_box_depth(
            depth_m,
            box,
            config.central_fraction,
            config.min_valid_pixels,
            config.outlier_sigmas,
            (config.min_depth_m, config.max_depth_m),
        )
        for box in boxes
    ]
    kept = [i for i, d in enumerate(depths) if d is not None]
    if not kept:
        return LocalizationResult([], len(boxes))
    z = np.array([depths[i] for i in kept])  # (M,)
    centres = (boxes[kept, :2] + boxes[kept, 2:]) / 2.0  # (M, 2)
    cam = deproject_pixel(centres[:, 0], centres[:, 1], z, K, dist)  # (M, 3)
    if config.surface_to_centre_m > 0.0:
        rays = cam / np.linalg.norm(cam, axis=1, keepdims=True)
        cam = cam + config.surface_to_centre_m * rays
    base = transform_points(T_base_cam, cam)
    K = np.asarray(K, dtype=np.float64)
    extent = boxes[kept, 2:] - boxes[kept, :2]  # (M, 2) pixels
    sizes = extent * z[:, None] / np.array([K[0, 0], K[1, 1]])
    objects = [
        LocalizedObject(base[j], sizes[j], float(z[j]), _plain(class_ids[i]), float(scores[i]), i)
        for j, i in enumerate(kept)
    ]
    return LocalizationResult(objects, len(boxes) - len(kept))
