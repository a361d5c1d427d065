"""Detector results for ROS: class names, vision_msgs/Detection2DArray, and a debug overlay.

Detection2D carries the class as a string (vision_msgs 4), so the node publishes names:
from a labels file when one is given, else from the model's own metadata, else the class
index as text. Boxes go out as centre + size in original-image pixels, the same continuous
pixel-edge coordinates the decoders return.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from armstack_detector.decoders import Detections


def load_labels(path: str | Path) -> dict[int, str]:
    """One class name per line, line i naming class i; blank lines and '#' comments skipped."""
    names: dict[int, str] = {}
    for line in Path(path).read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            names[len(names)] = text
    if not names:
        raise ValueError(f"labels file {path} names no class")
    return names


class ClassNames:
    """Class index -> name; an index the table lacks is named by its number."""

    def __init__(self, names: dict[int, str] | None = None) -> None:
        self.names = dict(names or {})

    def __call__(self, class_id: int) -> str:
        return self.names.get(int(class_id), str(int(class_id)))


def detections_to_msg(detections: Detections, names: ClassNames, header) -> Detection2DArray:
    """Detections (boxes (N, 4) xyxy, original pixels) -> Detection2DArray with `header`."""
    msg = Detection2DArray(header=header)
    for box, score, class_id in zip(
        detections.boxes, detections.scores, detections.class_ids, strict=True
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        det = Detection2D(header=header)
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x = x2 - x1
        det.bbox.size_y = y2 - y1
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = names(class_id)
        hypothesis.hypothesis.score = float(score)
        det.results.append(hypothesis)
        msg.detections.append(det)
    return msg


def _colour(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class (golden-angle hue steps)."""
    hue = int((class_id * 137.508) % 180)  # OpenCV hue range is 0..179
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_overlay(image_rgb: np.ndarray, detections: Detections, names: ClassNames) -> np.ndarray:
    """A copy of image (H, W, 3) RGB with each box and its 'name score' drawn on it."""
    out = np.ascontiguousarray(image_rgb).copy()
    thickness = max(1, round(min(out.shape[:2]) / 240))
    for box, score, class_id in zip(
        detections.boxes, detections.scores, detections.class_ids, strict=True
    ):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = _colour(int(class_id))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"{names(class_id)} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(
            out,
            label,
            (x1 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return out
