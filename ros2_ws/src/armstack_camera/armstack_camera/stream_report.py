"""The camera node's stream checks for its diagnostics status (no ROS).

The thresholds are the node's live parameters (CameraNodeConfig): a frame older than
frame_age_warn_s warns and one older than stall_timeout_s is an error (the capture loop
reconnects then); while streaming, the frame rate is held against min_rate_warn_fraction and
min_rate_error_fraction of fps.
"""

from __future__ import annotations

from armstack_common.diagnostics import DiagnosticReport, Level

from armstack_camera.capture import CaptureStatus
from armstack_camera.config import CameraNodeConfig


def check_stream(
    report: DiagnosticReport, status: CaptureStatus, rate_hz: float, cfg: CameraNodeConfig
) -> None:
    """Add the capture state, frame age and frame rate checks of `status` to `report`."""
    if status.state == "finished":
        report.raise_to(Level.WARN, "source finished (folder played once)")
        return
    if status.state in ("backoff", "connecting") and status.last_error:
        report.raise_to(Level.ERROR, f"{status.state}: {status.last_error}")
    age = status.last_frame_age_s
    if age is None:
        report.raise_to(Level.WARN, "no frame yet")
        return
    report.check_max("last_frame_age_s", age, cfg.frame_age_warn_s, cfg.stall_timeout_s, "s")
    if status.state == "streaming" and age < cfg.stall_timeout_s:
        report.check_min(
            "rate_hz",
            rate_hz,
            cfg.fps * cfg.min_rate_warn_fraction,
            cfg.fps * cfg.min_rate_error_fraction,
            "Hz",
        )
