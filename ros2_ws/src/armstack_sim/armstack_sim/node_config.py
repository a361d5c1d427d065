"""Parameters of the sim node, declared once here, and its diagnostics statuses (no ROS).

sim_node hands PARAMS to armstack_common.params.NodeParameters with `SimReportLimits.from_params`
as the validator, so the live diagnostics thresholds are checked at start and on every
`ros2 param set`, and the next report uses the accepted ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from armstack_common.diagnostics import DiagnosticReport, Level
from armstack_common.params import ParamSpec

from armstack_sim.world import SimConfig

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("seed", 0, "seed of the first episode's object placement; -1 draws one", range=(-1, 2**31 - 1)),
    ParamSpec("camera_rate", 30.0, "colour/depth frame rate", "Hz", range=(1.0, 60.0)),
    ParamSpec("real_time_factor", 1.0, "simulated seconds per wall second", range=(0.05, 20.0),
              read_only=True),
    ParamSpec("servo_port_link", "/tmp/armstack_sim_servo_bus",
              "stable symlink to the emulated bus's pty (empty: none)", read_only=True),
    ParamSpec("wire_timing", True, "delay servo replies by the physical wire time at the bus baud rate",
              read_only=True),
    ParamSpec("publish_ground_truth", True,
              "publish true object poses on sim/ground_truth and the true ee_link pose on sim/ee_pose"),
    ParamSpec("render_warn_ms", 40.0, "median render time above which diagnostics warn", "ms",
              range=(1.0, 1000.0)),
    ParamSpec("render_error_ms", 160.0, "median render time above which diagnostics report an error; "
              ">= render_warn_ms", "ms", range=(1.0, 4000.0)),
    ParamSpec("rtf_warn_fraction", 0.9, "diagnostics warn when the measured real-time ratio falls below "
              "this fraction of real_time_factor", range=(0.0, 1.0)),
    ParamSpec("rtf_error_fraction", 0.5, "diagnostics error when the measured real-time ratio falls "
              "below this fraction of real_time_factor; <= rtf_warn_fraction", range=(0.0, 1.0)),
    ParamSpec("camera_paused", False, "stop publishing camera frames (a stalled camera, for fault tests); "
              "physics and ground truth run on"),
    ParamSpec("objects", ["red", "green", "blue"], "colours of the cubes on the table, one cube each "
              "(red, green, blue, yellow, orange, purple)", read_only=True),
    # Demonstrations may cover a wider area than the evaluation, so a policy meets no layout at
    # the edge of what it was shown.
    ParamSpec("workspace_x", list(SimConfig.workspace_x), "low, high x of the cubes' centres in base_link at "
              "each reset (uniform)", "m", read_only=True),
    ParamSpec("workspace_y", list(SimConfig.workspace_y), "low, high y of the cubes' centres in base_link at "
              "each reset (uniform)", "m", read_only=True),
    ParamSpec("task_status_rate", 10.0, "rate of sim/task_status", "Hz", range=(1.0, 100.0), read_only=True),
)


@dataclass(frozen=True)
class SimReportLimits:
    """The sim node's diagnostics thresholds (live parameters); validated on construction."""

    rtf_warn_fraction: float
    rtf_error_fraction: float
    render_warn_ms: float
    render_error_ms: float

    def __post_init__(self) -> None:
        if self.rtf_error_fraction > self.rtf_warn_fraction:
            raise ValueError(f"rtf_error_fraction must be <= rtf_warn_fraction (a rate floor), got "
                             f"{self.rtf_error_fraction} > {self.rtf_warn_fraction}")
        if self.render_error_ms < self.render_warn_ms:
            raise ValueError(f"render_error_ms must be >= render_warn_ms, got "
                             f"{self.render_error_ms} < {self.render_warn_ms}")

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> SimReportLimits:
        return cls(*(float(values[name]) for name in
                     ("rtf_warn_fraction", "rtf_error_fraction", "render_warn_ms", "render_error_ms")))


def physics_report(real_time_ratio: float, real_time_factor: float, step_us: dict[str, float],
                   limits: SimReportLimits) -> DiagnosticReport:
    """Status of the physics loop: the measured ratio of simulated to wall time against the
    configured real_time_factor, and the step time summary (armstack_common.stats)."""
    report = DiagnosticReport("sim: physics", hardware_id="mujoco")
    report.check_min("real_time_ratio", real_time_ratio, warn=limits.rtf_warn_fraction * real_time_factor,
                     error=limits.rtf_error_fraction * real_time_factor)
    report.add("step_us_median", step_us["median"])
    report.add("step_us_p99", step_us["p99"])
    return report


def camera_report(frame_id: str, rate_hz: float, render_ms: dict[str, float], paused: bool,
                  limits: SimReportLimits) -> DiagnosticReport:
    """Status of the simulated camera: frame rate and render time summary."""
    report = DiagnosticReport("sim: camera", hardware_id=frame_id)
    report.add("rate_hz", rate_hz)
    report.check_max("render_ms_median", render_ms["median"], warn=limits.render_warn_ms,
                     error=limits.render_error_ms, units="ms")
    report.add("render_ms_p99", render_ms["p99"])
    if paused:
        report.raise_to(Level.WARN, "paused: no frames published (camera_paused)")
    return report
