"""Replay of an image folder as a camera, optionally with depth and a camera_info file.

Layout (`root` is the folder given):
- colour images: `root/color/*` if that folder exists, else `root/*`
  (.png, .jpg, .jpeg, .bmp, .tif, .tiff), played in sorted file-name order;
- depth (optional): `root/depth/<stem>.png`, 16-bit single channel millimetres, one per colour
  image with the same file stem;
- camera model (optional): `root/camera_info.yaml`, either format calibration.load_camera_file
  reads.

Frames are paced at `fps` and stamped with the wall time they are produced at, as a camera
would stamp its capture; with `loop` the sequence restarts after the last image.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from armstack_camera.calibration import DEFAULT_FRAME_ID, load_camera_file
from armstack_camera.source import EndOfStream, Frame, SourceError, SourceInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CAMERA_INFO_NAME = "camera_info.yaml"


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FolderSource:
    def __init__(
        self, root: str | Path, fps: float, loop: bool = True, frame_id: str = DEFAULT_FRAME_ID
    ) -> None:
        if fps <= 0.0:
            raise ValueError(f"FolderSource.fps must be > 0, got {fps}")
        self.root = Path(root).expanduser()
        self.period_s = 1.0 / fps
        self.loop = loop
        self.frame_id = frame_id
        self._color: list[Path] = []
        self._depth: list[Path] | None = None
        self._index = 0
        self._frame_number = 0
        self._next_due = 0.0
        self._closed = threading.Event()

    def open(self) -> SourceInfo:
        if not self.root.is_dir():
            raise SourceError(f"image folder not found: {self.root}")
        color_dir = self.root / "color" if (self.root / "color").is_dir() else self.root
        self._color = _list_images(color_dir)
        if not self._color:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {color_dir}")
        depth_dir = self.root / "depth"
        self._depth = None
        if depth_dir.is_dir():
            self._depth = [depth_dir / f"{p.stem}.png" for p in self._color]
            missing = [str(p) for p in self._depth if not p.is_file()]
            if missing:
                raise SourceError(
                    f"{len(missing)} colour image(s) have no depth image, e.g. {missing[0]}"
                )
        model = None
        info_file = self.root / CAMERA_INFO_NAME
        if info_file.is_file():
            model = load_camera_file(info_file, self.frame_id)[0]
        first = self._load_color(self._color[0])
        self._closed.clear()
        self._index = 0
        self._next_due = time.monotonic()
        return SourceInfo(
            description=f"image folder {self.root} ({len(self._color)} images"
            f"{', with depth' if self._depth else ''})",
            hardware_id=str(self.root),
            width=first.shape[1],
            height=first.shape[0],
            has_depth=self._depth is not None,
            model=model,
        )

    @staticmethod
    def _load_color(path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"cannot read image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @staticmethod
    def _load_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise SourceError(f"cannot read depth image {path}")
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise SourceError(
                f"depth image {path} must be 16-bit single channel (mm), got {depth.dtype} "
                f"with shape {depth.shape}"
            )
        if depth.shape != shape:
            raise SourceError(f"depth image {path} is {depth.shape}, its colour image {shape}")
        return depth

    def read(self, timeout_s: float) -> Frame | None:
        if self._index >= len(self._color):
            if not self.loop:
                raise EndOfStream(f"all {len(self._color)} images of {self.root} played")
            self._index = 0
        wait = self._next_due - time.monotonic()
        if wait > timeout_s:
            self._closed.wait(timeout_s)
            return None
        if wait > 0.0 and self._closed.wait(wait):
            return None
        # Pace from the schedule, not from now, so decoding time does not lower the rate;
        # after a long pause restart the schedule instead of bursting to catch up.
        now = time.monotonic()
        self._next_due = max(self._next_due + self.period_s, now)
        stamp = time.time()  # the moment the frame is due: this source's "exposure"
        color = self._load_color(self._color[self._index])
        depth = None
        if self._depth is not None:
            depth = self._load_depth(self._depth[self._index], color.shape[:2])
        self._index += 1
        self._frame_number += 1
        return Frame(color, depth, stamp, self._frame_number)

    def close(self) -> None:
        self._closed.set()
