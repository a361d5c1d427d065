"""The capture thread: reads a source, hands frames on, and survives stalls and unplugs.

The loop opens a source, reads frames with a stall timeout and passes each to `on_frame`.
No frame within the timeout, or any error from the source, closes it and opens a fresh one
after a backoff that doubles up to a maximum (reset by the next frame); a finished finite
source ends the loop. The thread never takes a lock a ROS callback holds, so a stuck device
blocks only itself: `status()` (read from the diagnostics timer) still reports the age of
the last frame even while the thread sits in a driver call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from armstack_camera.source import EndOfStream, Frame, FrameSource, SourceInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    # No frame for this long means the device stalled (or was unplugged).
    stall_timeout_s: float = 1.0
    # Wait before the first reconnect attempt; doubles per failure up to backoff_max_s.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.stall_timeout_s <= 0.0:
            raise ValueError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
        if self.backoff_initial_s <= 0.0:
            raise ValueError(f"backoff_initial_s must be > 0, got {self.backoff_initial_s}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s must be >= backoff_initial_s, got {self.backoff_max_s} < "
                f"{self.backoff_initial_s}"
            )


@dataclass(frozen=True)
class CaptureStatus:
    state: str  # one of CaptureLoop.STATES
    frames: int  # frames handed on since start
    reconnects: int  # source re-opened after a stall or error
    last_error: str  # the latest stall or error, "" when none yet
    last_frame_age_s: float | None  # None before the first frame
    info: SourceInfo | None  # of the currently (or last) open source


class CaptureLoop:
    STATES = ("idle", "connecting", "streaming", "backoff", "finished", "stopped")

    def __init__(
        self,
        open_source: Callable[[], FrameSource],
        on_frame: Callable[[Frame], None],
        config: CaptureConfig | None = None,
        on_open: Callable[[SourceInfo], None] | None = None,
    ) -> None:
        self._open_source = open_source
        self._on_frame = on_frame
        self._on_open = on_open
        self.config = config or CaptureConfig()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "idle"
        self._frames = 0
        self._reconnects = 0
        self._last_error = ""
        self._last_frame_t: float | None = None
        self._info: SourceInfo | None = None
        self._backoff = self.config.backoff_initial_s

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("CaptureLoop already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to end and wait; False if it is still stuck in a driver call."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            logger.error(
                "capture thread did not stop within %.1f s (stuck in the driver?)", timeout_s
            )
            return False
        self._state = "stopped"
        return True

    def status(self) -> CaptureStatus:
        last = self._last_frame_t
        age = None if last is None else time.monotonic() - last
        return CaptureStatus(
            self._state, self._frames, self._reconnects, self._last_error, age, self._info
        )

    def _fail(self, message: str) -> None:
        self._last_error = message
        logger.warning("camera: %s", message)

    def _stream(self, source: FrameSource) -> None:
        """Read until stop, stall or error (raised); EndOfStream passes through."""
        self._state = "connecting"
        self._info = source.open()
        logger.info("camera: opened %s", self._info.description)
        if self._on_open is not None:
            self._on_open(self._info)
        self._state = "streaming"
        timeout = self.config.stall_timeout_s
        while not self._stop.is_set():
            frame = source.read(timeout)
            if self._stop.is_set():
                return
            if frame is None:
                raise TimeoutError(f"no frame within {timeout:g} s (stalled or unplugged)")
            self._last_frame_t = time.monotonic()
            self._frames += 1
            self._backoff = self.config.backoff_initial_s
            try:
                self._on_frame(frame)
            except Exception:  # a publishing problem must not reconnect the camera
                logger.exception("camera: handling a frame failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            source: FrameSource | None = None
            try:
                source = self._open_source()
                self._stream(source)
            except EndOfStream as end:
                logger.info("camera: %s", end)
                self._state = "finished"
                return
            except Exception as exc:  # any device failure: report, back off, reconnect
                self._fail(f"{type(exc).__name__}: {exc}")
            finally:
                if source is not None:
                    try:
                        source.close()
                    except Exception as exc:
                        logger.warning("camera: closing the source failed: %s", exc)
            if self._stop.is_set():
                break
            self._state = "backoff"
            if self._stop.wait(self._backoff):
                break
            self._backoff = min(2.0 * self._backoff, self.config.backoff_max_s)
            self._reconnects += 1
        self._state = "stopped"
