"""Localization's messages: Detection2DArray in, TF into the buffer, Detection3DArray and
markers out. Message packages only, no rclpy."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from vision_msgs.msg import (
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesisWithPose,
)
from visualization_msgs.msg import Marker, MarkerArray

from armstack_common.tf_buffer import TransformBuffer
from armstack_common.timeutil import stamp_to_sec


def detections_from_msg(msg: Detection2DArray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """boxes (N, 4) xyxy pixels, scores (N,), class labels of each detection's best hypothesis.

    Detections without any hypothesis are skipped (nothing says what they are).
    """
    boxes, scores, labels = [], [], []
    for det in msg.detections:
        if not det.results:
            continue
        best = max(det.results, key=lambda r: r.hypothesis.score)
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        hw, hh = det.bbox.size_x / 2.0, det.bbox.size_y / 2.0
        boxes.append((cx - hw, cy - hh, cx + hw, cy + hh))
        scores.append(best.hypothesis.score)
        labels.append(best.hypothesis.class_id)
    return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), labels)


def add_tf_message(buffer: TransformBuffer, msg, static: bool) -> int:
    """Put every transform of a tf2_msgs/TFMessage into `buffer`; returns how many were bad."""
    bad = 0
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        try:
            buffer.set_transform(
                t.header.frame_id,
                t.child_frame_id,
                stamp_to_sec(t.header.stamp),
                (tr.x, tr.y, tr.z),
                (q.x, q.y, q.z, q.w),
                static=static,
            )
        except ValueError:
            bad += 1
    return bad


@dataclass(frozen=True)
class PlacedObject:
    """One object ready to publish, in the base frame."""

    label: str
    score: float
    position: np.ndarray  # (3,) m
    size: np.ndarray  # (3,) m, axis-aligned in the base frame
    track_id: int = 0  # 0: not tracked


def object_size(extent_wh: np.ndarray) -> np.ndarray:
    """(2,) width, height seen at the object's depth -> (3,) box size.

    One view gives no depth extent; the object is taken as deep as it is wide (right for the
    cubes on the table), its height as seen.
    """
    width, height = float(extent_wh[0]), float(extent_wh[1])
    return np.array([width, width, height])


def objects_to_msg(objects: Sequence[PlacedObject], header) -> Detection3DArray:
    msg = Detection3DArray(header=header)
    for obj in objects:
        det = Detection3D(header=header, id=str(obj.track_id) if obj.track_id else "")
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = obj.label
        hypothesis.hypothesis.score = float(obj.score)
        pose = hypothesis.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in obj.position)
        pose.orientation.w = 1.0
        det.results.append(hypothesis)
        det.bbox.center = pose
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in obj.size)
        msg.detections.append(det)
    return msg


_NAMED_COLOURS = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.7, 0.2),
    "blue": (0.1, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.1),
    "orange": (0.95, 0.5, 0.05),
    "purple": (0.55, 0.15, 0.7),
}


def class_colour(label: str) -> tuple[float, float, float]:
    """RGB in [0, 1]: the colour a label names (red_cube is red), else one fixed per label."""
    for word, rgb in _NAMED_COLOURS.items():
        if word in label.lower():
            return rgb
    hue = (zlib.crc32(label.encode()) % 360) / 60.0  # stable across runs, unlike hash()
    x = 1.0 - abs(hue % 2.0 - 1.0)
    sector = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
    return tuple(0.2 + 0.7 * c for c in sector)


def markers_msg(objects: Sequence[PlacedObject], header, lifetime_s: float) -> MarkerArray:
    """DELETEALL, then a cube and a text label per object (rviz drops stale ones itself)."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    lifetime_sec = int(lifetime_s)
    for i, obj in enumerate(objects):
        r, g, b = class_colour(obj.label)
        cube = Marker(header=header, ns="objects", id=i, type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position = Point(
            x=float(obj.position[0]), y=float(obj.position[1]), z=float(obj.position[2])
        )
        cube.pose.orientation.w = 1.0
        cube.scale.x, cube.scale.y, cube.scale.z = (max(float(v), 1e-3) for v in obj.size)
        cube.color = ColorRGBA(r=r, g=g, b=b, a=0.8)
        text = Marker(
            header=header, ns="labels", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD
        )
        text.pose.position = Point(
            x=cube.pose.position.x,
            y=cube.pose.position.y,
            z=cube.pose.position.z + cube.scale.z / 2.0 + 0.02,
        )
        text.pose.orientation.w = 1.0
        text.scale.z = 0.02  # text height, m
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = (
            f"{obj.label} #{obj.track_id} {obj.score:.2f}"
            if obj.track_id
            else (f"{obj.label} {obj.score:.2f}")
        )
        for marker in (cube, text):
            marker.lifetime.sec = lifetime_sec
            marker.lifetime.nanosec = int(round((lifetime_s - lifetime_sec) * 1e9))
            markers.append(marker)
    return MarkerArray(markers=markers)
