"""What every frame source gives the capture loop: frames with capture times, and its model.

A source is opened, read with a timeout, and closed, all from the capture thread. `read`
returns None when no frame arrived within the timeout (the capture loop treats that as a
stall), raises `EndOfStream` when a finite source is done, and raises any other exception
when the device failed (the capture loop then reconnects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from armstack_camera.calibration import CameraModel


class EndOfStream(Exception):
    """A finite source (a folder without looping) has no more frames."""


class SourceError(RuntimeError):
    """The device or file cannot deliver frames; the message says which and why."""


@dataclass(frozen=True)
class Frame:
    """One capture: colour and optionally depth aligned to it, with the time of capture."""

    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth_mm: np.ndarray | None  # (H, W) uint16 millimetres, 0 = no reading; aligned to color
    stamp_s: float  # capture time on the host's system clock (ROS time), seconds
    frame_number: int


@dataclass(frozen=True)
class SourceInfo:
    """What a source knows once open."""

    description: str  # human-readable: device name and serial, file or folder
    hardware_id: str  # for diagnostics: serial number, device path or folder
    width: int
    height: int
    has_depth: bool
    model: CameraModel | None  # the source's own intrinsics (RealSense factory, folder file)


class FrameSource(Protocol):
    def open(self) -> SourceInfo: ...

    def read(self, timeout_s: float) -> Frame | None: ...

    def close(self) -> None: ...
