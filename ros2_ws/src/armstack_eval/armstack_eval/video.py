"""Annotated camera video of an evaluation: detections, the policy's predicted path and the
commanded end-effector target drawn on the camera frames, written as H.264 MP4. Plain module.

The path (policy/path, poses of ee_link in base_link) is projected with the same calibration
file the simulator renders from and localization deprojects with, so a path that lies on the
image where the gripper goes is a check of the whole geometry chain.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from armstack_camera.calibration import load_camera_file
from armstack_common.transforms import pose_matrix

logger = logging.getLogger(__name__)

# RGB colours of the overlay.
_BOX = (255, 255, 0)
_PATH = (0, 255, 255)
_TARGET = (255, 0, 255)
_TEXT = (255, 255, 255)


@dataclass(frozen=True)
class Projector:
    """Pinhole camera (with OpenCV distortion) mounted at `camera_pose` in base_link."""

    K: np.ndarray  # (3, 3)
    D: np.ndarray  # (n,) OpenCV distortion coefficients (plumb_bob: k1 k2 p1 p2 k3)
    camera_pose: np.ndarray  # (4, 4) optical frame in base_link
    width: int
    height: int

    @classmethod
    def from_calibration(cls, path: str | Path) -> Projector:
        """From config/camera/calibration.yaml (armstack_camera reads and checks the file)."""
        model, extrinsics = load_camera_file(path)
        if extrinsics is None:
            raise ValueError(f"{path}: no extrinsics: the camera's pose in base_link is needed")
        return cls(np.asarray(model.K, dtype=np.float64), np.asarray(model.D, dtype=np.float64),
                   pose_matrix(extrinsics.translation, extrinsics.rotation_xyzw),
                   model.width, model.height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of base_link points and which of them lie in front of the camera.

        points (N, 3) -> uv (N, 2) in the OpenCV pixel convention, in_front (N,) bool.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        world_to_cam = np.linalg.inv(self.camera_pose)
        in_cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]  # (N, 3) optical frame
        in_front = in_cam[:, 2] > 1e-6
        if points.shape[0] == 0:
            return np.zeros((0, 2)), in_front
        rvec, _ = cv2.Rodrigues(world_to_cam[:3, :3])
        uv, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, world_to_cam[:3, 3], self.K, self.D)
        return uv.reshape(-1, 2), in_front


@dataclass(frozen=True)
class Box:
    """A 2D detection: centre and size in pixels."""

    label: str
    score: float
    cx: float
    cy: float
    w: float
    h: float


def draw_overlay(
    rgb: np.ndarray,
    boxes: list[Box],
    path_uv: np.ndarray | None = None,
    target_uv: np.ndarray | None = None,
    lines: tuple[str, ...] = (),
) -> np.ndarray:
    """A copy of the frame (H, W, 3) uint8 RGB with detections, path (K, 2), target (2,) and
    text lines drawn on it."""
    out = np.ascontiguousarray(rgb).copy()
    for box in boxes:
        p0 = (int(round(box.cx - box.w / 2)), int(round(box.cy - box.h / 2)))
        p1 = (int(round(box.cx + box.w / 2)), int(round(box.cy + box.h / 2)))
        cv2.rectangle(out, p0, p1, _BOX, 1)
        cv2.putText(out, f"{box.label} {box.score:.2f}", (p0[0], max(p0[1] - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, _BOX, 1, cv2.LINE_AA)
    if path_uv is not None and len(path_uv) >= 2:
        pts = np.round(path_uv).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], False, _PATH, 2, cv2.LINE_AA)
        cv2.circle(out, tuple(int(v) for v in pts[-1, 0]), 3, _PATH, -1)
    if target_uv is not None:
        u, v = (int(round(c)) for c in target_uv)
        cv2.drawMarker(out, (u, v), _TARGET, cv2.MARKER_CROSS, 12, 2)
    for row, text in enumerate(lines):
        cv2.putText(out, text, (6, 16 + 16 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _TEXT, 1, cv2.LINE_AA)
    return out


class VideoWriter:
    """H.264 MP4 of RGB frames at a fixed rate (PyAV); frames of another size are resized."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"VideoWriter needs even width and height for yuv420p, got {width}x{height}")
        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=round(fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        # ultrafast: the video is encoded while the graph runs on the same cores.
        self._stream.options = {"preset": "ultrafast", "crf": "26"}
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != (self._stream.height, self._stream.width):
            rgb = cv2.resize(rgb, (self._stream.width, self._stream.height), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


class StampHistory:
    """Recent values by stamp (ns, arriving roughly in order); `at(t)` is the newest value
    stamped at or before t. Bounded: the oldest entries go first."""

    def __init__(self, size: int) -> None:
        self._stamps: list[int] = []
        self._values: list[object] = []
        self._size = size

    def add(self, stamp_ns: int, value: object) -> None:
        k = bisect.bisect_right(self._stamps, stamp_ns)
        if k > 0 and self._stamps[k - 1] == stamp_ns:
            self._values[k - 1] = value
            return
        self._stamps.insert(k, stamp_ns)
        self._values.insert(k, value)
        if len(self._stamps) > self._size:
            del self._stamps[0], self._values[0]

    def at(self, stamp_ns: int) -> object | None:
        k = bisect.bisect_right(self._stamps, stamp_ns)
        return self._values[k - 1] if k > 0 else None


class AnnotatedVideo:
    """Decimates camera frames to `fps`, annotates each with what the graph had published for
    that frame, and encodes them in a thread of its own.

    Detections, paths and targets carry the stamp of the frame they were computed from but come
    later than it (inference time), so a frame is drawn only `delay` s after it arrived, with
    the newest of each stamped at or before the frame.
    Frames beyond `max_queue` waiting are dropped (counted), never blocking the caller.
    """

    def __init__(self, path: str | Path, projector: Projector, fps: float = 10.0,
                 delay: float = 0.4, max_queue: int = 60) -> None:
        if not fps > 0.0:
            raise ValueError(f"AnnotatedVideo.fps must be > 0, got {fps}")
        self.path, self.projector, self.fps, self.delay = Path(path), projector, fps, delay
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(max_queue)
        # A few seconds of each at their rates: far more than the drawing delay.
        self._boxes = StampHistory(120)  # list[Box]
        self._path = StampHistory(60)  # (K, 3) base_link
        self._target = StampHistory(200)  # (3,) base_link
        self._caption = ""
        self._last_stamp = -1
        self.dropped = 0
        self._writer: VideoWriter | None = None
        self._thread = threading.Thread(target=self._run, name="video", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- producer side
    def frame(self, stamp_ns: int, rgb: np.ndarray, arrived: float) -> None:
        if stamp_ns - self._last_stamp < 1e9 / self.fps - 1e6:  # 1 ms slack for stamp noise
            return
        self._last_stamp = stamp_ns
        with self._lock:
            caption = self._caption
        try:
            self._queue.put_nowait((stamp_ns, rgb, arrived, caption))
        except queue.Full:
            self.dropped += 1

    def detections(self, stamp_ns: int, boxes: list[Box]) -> None:
        with self._lock:
            self._boxes.add(stamp_ns, boxes)

    def predicted_path(self, stamp_ns: int, points: np.ndarray) -> None:
        with self._lock:
            self._path.add(stamp_ns, np.asarray(points, dtype=np.float64).reshape(-1, 3))

    def target(self, stamp_ns: int, xyz: np.ndarray) -> None:
        with self._lock:
            self._target.add(stamp_ns, np.asarray(xyz, dtype=np.float64).reshape(3))

    def caption(self, text: str) -> None:
        with self._lock:
            self._caption = text

    def close(self) -> int:
        """Finish the file; returns the number of frames written."""
        self._queue.put(None)
        self._thread.join()
        if self._writer is None:
            return 0
        self._writer.close()
        return self._writer.frames

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            stamp_ns, rgb, arrived, caption = item
            wait = arrived + self.delay - time.time()
            if wait > 0:
                time.sleep(wait)
            try:
                self._write(stamp_ns, rgb, caption)
            except (ValueError, OSError, av.FFmpegError) as exc:
                logger.error("video frame not written: %s", exc)

    def _write(self, stamp_ns: int, rgb: np.ndarray, caption: str) -> None:
        with self._lock:
            boxes = self._boxes.at(stamp_ns) or []
            path, target = self._path.at(stamp_ns), self._target.at(stamp_ns)
        path_uv = target_uv = None
        if path is not None:
            uv, front = self.projector.project(path)
            path_uv = uv[front]
        if target is not None:
            uv, front = self.projector.project(target[None])
            target_uv = uv[0] if front[0] else None
        if self._writer is None:
            height, width = rgb.shape[:2]
            self._writer = VideoWriter(self.path, width - width % 2, height - height % 2, self.fps)
        self._writer.add(draw_overlay(rgb, boxes, path_uv, target_uv, (caption,) if caption else ()))
