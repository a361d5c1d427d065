"""Ground-truth boxes of cubes from their true poses, and how much of each the camera sees.

Boxes are xyxy in continuous pixel-edge coordinates (0..W, 0..H), the convention of
armstack_detector's boxes. The calibration's `project` uses the OpenCV convention (pixel
(0, 0) is the centre of the top-left pixel), hence the half-pixel shift in `project_edges`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Unit cube corners, (8, 3), each coordinate +-1.
_CORNER_SIGNS = np.array(
    [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float
)


class Projector(Protocol):
    """What is needed of armstack_sim's CameraCalibration."""

    width: int
    height: int
    translation: np.ndarray  # (3,) camera origin in the world frame

    def project(self, points: np.ndarray) -> np.ndarray: ...


def cube_corners(position: np.ndarray, rotation: np.ndarray, size: float) -> np.ndarray:
    """Corners of a cube with centre `position` (3,), axes `rotation` (3, 3) -> (8, 3)."""
    return position + (_CORNER_SIGNS * (size / 2.0)) @ rotation.T


def face_samples(
    position: np.ndarray, rotation: np.ndarray, size: float, per_side: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A per_side x per_side grid of points on each of the 6 faces and the faces' outward
    normals. Points sit at cell centres, so none lies on an edge where depth is ambiguous.

    Returns points (6 * per_side**2, 3) and normals (6 * per_side**2, 3).
    """
    ticks = (np.arange(per_side) + 0.5) / per_side * 2.0 - 1.0  # (k,) in (-1, 1)
    a, b = np.meshgrid(ticks, ticks, indexing="ij")
    a, b = a.ravel(), b.ravel()  # (k*k,)
    local_points, local_normals = [], []
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            p = np.zeros((a.size, 3))
            p[:, axis] = sign
            p[:, others[0]], p[:, others[1]] = a, b
            n = np.zeros((a.size, 3))
            n[:, axis] = sign
            local_points.append(p)
            local_normals.append(n)
    points = position + (np.concatenate(local_points) * (size / 2.0)) @ rotation.T
    normals = np.concatenate(local_normals) @ rotation.T
    return points, normals


def project_edges(camera: Projector, points: np.ndarray) -> np.ndarray:
    """Points (N, 3) -> (N, 3): u, v in pixel-edge coordinates and depth z (m)."""
    uvz = camera.project(points)
    uvz[:, :2] += 0.5
    return uvz


def clip_box(box: np.ndarray, width: float, height: float) -> np.ndarray:
    """xyxy (4,) clipped to the image -> (4,)."""
    return np.clip(box, 0.0, [width, height, width, height])


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N,); inverted boxes have area 0."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0.0, None
    )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a (N, 4) with every box of b (M, 4), xyxy -> (N, M)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-12)


@dataclass(frozen=True)
class CubeView:
    """One cube as the camera sees it."""

    box: np.ndarray  # (4,) tight xyxy of the projected corners, clipped to the image
    visible: float  # share of the camera-facing surface samples that are in frame and unoccluded
    in_frame: float  # share of the unclipped box area inside the image


def view_cube(
    camera: Projector,
    depth: np.ndarray,
    position: np.ndarray,
    rotation: np.ndarray,
    size: float,
    depth_tolerance: float,
    per_side: int = 4,
) -> CubeView | None:
    """Box and visibility of a cube in a rendered depth image (H, W) of z in metres.

    A surface sample counts as visible when it faces the camera, projects into the image
    and the rendered depth at its pixel is within `depth_tolerance` of its own depth (a
    closer surface there means an occluder). None if the cube is behind the camera.
    """
    corners = project_edges(camera, cube_corners(position, rotation, size))  # (8, 3)
    if np.any(corners[:, 2] <= 0.0):
        return None
    full = np.array([*corners[:, :2].min(0), *corners[:, :2].max(0)])
    box = clip_box(full, camera.width, camera.height)
    in_frame = float(box_area(box)[0] / max(box_area(full)[0], 1e-12))

    points, normals = face_samples(position, rotation, size, per_side)
    # Faces seen nearly edge-on cover few pixels and their depth varies fast across a
    # pixel; leave them out of the count.
    to_camera = camera.translation - points
    facing = np.einsum("ij,ij->i", normals, to_camera) > 0.2 * np.linalg.norm(to_camera, axis=1)
    uvz = project_edges(camera, points[facing])
    col = np.floor(uvz[:, 0]).astype(int)
    row = np.floor(uvz[:, 1]).astype(int)
    h, w = depth.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    seen = np.zeros(len(uvz), dtype=bool)
    seen[inside] = np.abs(depth[row[inside], col[inside]] - uvz[inside, 2]) <= depth_tolerance
    visible = float(seen.mean()) if len(seen) else 0.0
    return CubeView(box=box.astype(np.float32), visible=visible, in_frame=in_frame)


@dataclass(frozen=True)
class Labels:
    """Ground truth of one image."""

    boxes: np.ndarray  # (N, 4) float32 xyxy, pixel edges
    classes: np.ndarray  # (N,) int64
    ignore: np.ndarray  # (N,) bool: too hidden to count
    visible: np.ndarray  # (N,) float32 visible fraction

    @classmethod
    def empty(cls) -> Labels:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool),
                   np.zeros(0, np.float32))
