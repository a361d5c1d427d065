"""A colour-only camera through OpenCV's VideoCapture (V4L2 devices, also video files/URLs).

`device` is a V4L2 index ("0") or device path ("/dev/video2"), opened with the V4L2 backend;
anything else (a video file, an RTSP URL, a GStreamer pipeline) goes to OpenCV's automatic
backend choice. Frames are stamped with the host wall time at which `grab` returned, the
closest this API gets to the capture time.
"""

from __future__ import annotations

import time

import cv2

from armstack_camera.source import Frame, SourceError, SourceInfo


def _is_v4l2(device: str) -> bool:
    return device.isdigit() or device.startswith("/dev/video")


class V4l2Source:
    def __init__(
        self, device: str, width: int = 0, height: int = 0, fps: float = 0.0, fourcc: str = ""
    ) -> None:
        if not device:
            raise ValueError("V4l2Source.device must be set (an index like '0' or a path)")
        if fourcc and len(fourcc) != 4:
            raise ValueError(
                f"V4l2Source.fourcc must have 4 characters (e.g. MJPG), got {fourcc!r}"
            )
        self.device = device
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._cap: cv2.VideoCapture | None = None
        self._frame_number = 0

    def open(self) -> SourceInfo:
        if _is_v4l2(self.device):
            target = int(self.device) if self.device.isdigit() else self.device
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video device {self.device}")
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        # The driver may round the request to a supported mode: report what it chose.
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        backend = cap.getBackendName()
        return SourceInfo(
            description=f"video {self.device} via {backend}, {width}x{height} at "
            f"{cap.get(cv2.CAP_PROP_FPS):g} fps",
            hardware_id=self.device,
            width=width,
            height=height,
            has_depth=False,
            model=None,
        )

    def read(self, timeout_s: float) -> Frame | None:
        # VideoCapture has no per-call timeout; a device that stops delivering blocks `grab`
        # until the driver gives up, and the capture loop's watchdog reports the stall.
        if self._cap is None:
            raise SourceError("read before open")
        if not self._cap.grab():
            raise SourceError(f"video {self.device} returned no frame (unplugged or ended)")
        stamp = time.time()
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise SourceError(f"video {self.device}: cannot decode the grabbed frame")
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._frame_number += 1
        return Frame(rgb, None, stamp, self._frame_number)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
