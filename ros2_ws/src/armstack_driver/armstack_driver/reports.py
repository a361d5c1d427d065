"""The driver's diagnostics: bus, loop and motion status from a `LoopStatus` snapshot.

Plain module: no rclpy (the node converts with armstack_common.diagnostics.to_msg).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from armstack_common.diagnostics import DiagnosticReport, Level

from armstack_driver.config import DriverConfig
from armstack_driver.loop import LoopStatus


@dataclass
class CommandRejections:
    """joint_command messages refused by the checks (NaN, out of range, unknown joint)."""

    total: int = 0
    since_report: int = 0
    last_reason: str = ""

    def add(self, reason: str) -> None:
        self.total += 1
        self.since_report += 1
        self.last_reason = reason


@dataclass
class DriverReporter:
    """Builds the three statuses; remembers counters between reports to flag what is new."""

    node_name: str
    port: str
    config: DriverConfig  # rate_hz and the rate thresholds; replaced on a live parameter update
    setup_error: str = ""  # why the last configure failed (empty once configured)
    setup_notes: list[str] = field(default_factory=list)  # warnings from configure
    enable_error: str = ""  # why the last enable (activate, driver/enable) failed
    rejections: CommandRejections = field(default_factory=CommandRejections)
    _missed_before: int = 0

    def reports(self, status: LoopStatus | None) -> list[DiagnosticReport]:
        bus = DiagnosticReport(f"{self.node_name}: bus", hardware_id=self.port)
        loop = DiagnosticReport(f"{self.node_name}: loop", hardware_id=self.port)
        motion = DiagnosticReport(f"{self.node_name}: motion", hardware_id=self.port)
        for note in self.setup_notes:
            bus.raise_to(Level.WARN, note)
        if status is None:
            reason = f"not configured: {self.setup_error}" if self.setup_error else "not configured"
            level = Level.ERROR if self.setup_error else Level.WARN
            for report in (bus, loop, motion):
                report.raise_to(level, reason)
            motion.add("mode", "unconfigured")
        else:
            self._bus(bus, status)
            self._loop(loop, status)
            self._motion(motion, status)
            if self.enable_error and status.mode != "active":
                motion.raise_to(Level.ERROR, self.enable_error)
        self._rejections(motion)
        return [bus, loop, motion]

    def _bus(self, report: DiagnosticReport, status: LoopStatus) -> None:
        for key, stats in (("sync_read_ms", status.read_ms), ("sync_write_ms", status.write_ms)):
            report.add(f"{key}_median", stats["median"])
            report.add(f"{key}_p99", stats["p99"])
        report.add("read_failures", status.read_failures)
        report.add("reads_recovered_by_retry", status.reads_recovered)
        report.add("last_read_failure", status.last_read_failure or "none")
        report.add("torque_on", status.torque_on)
        for servo_id, problem in sorted(status.servo_problems.items()):
            report.raise_to(Level.ERROR, f"servo {servo_id} ({problem})")

    def _loop(self, report: DiagnosticReport, status: LoopStatus) -> None:
        period = status.period_ms["median"]
        rate = 1000.0 / period if period == period and period > 0 else 0.0
        cfg = self.config
        report.check_min("rate_hz", rate, warn=cfg.rate_warn_fraction * cfg.rate_hz,
                         error=cfg.rate_error_fraction * cfg.rate_hz, units=" Hz")
        report.add("period_ms_p99", status.period_ms["p99"])
        report.add("jitter_ms_median", status.jitter_ms["median"])
        report.add("jitter_ms_p99", status.jitter_ms["p99"])
        report.add("cycle_ms_median", status.cycle_ms["median"])
        report.add("cycle_ms_p99", status.cycle_ms["p99"])
        report.add("cycles", status.cycles)
        report.add("missed_cycles", status.missed_cycles)
        missed = status.missed_cycles - self._missed_before
        self._missed_before = status.missed_cycles
        if missed > 0:
            report.raise_to(Level.WARN, f"{missed} cycles missed since the last report")
        if status.last_sample_age_s is not None:
            report.add("last_state_age_s", status.last_sample_age_s)

    @staticmethod
    def _motion(report: DiagnosticReport, status: LoopStatus) -> None:
        report.add("mode", status.mode)
        report.add("holding", status.hold_reason or "no (following joint_command)")
        report.add("latency_ms_median", status.latency_ms["median"])
        report.add("latency_ms_p99", status.latency_ms["p99"])
        report.add("commands_taken", status.commands_taken)
        report.add("commands_ignored_while_disabled", status.commands_ignored)
        report.add("goals_clipped_by_bus", status.clipped_goals)
        if status.mode == "fault":
            for fault in status.faults:
                report.raise_to(Level.ERROR, f"motion stopped: {fault}")
            report.raise_to(Level.ERROR, "call driver/enable to resume")
        elif status.mode == "estop":
            report.raise_to(Level.WARN, "e-stop engaged: holding; call driver/enable to resume")
        elif status.mode == "inactive":
            report.raise_to(Level.WARN, "motion not enabled")

    def _rejections(self, report: DiagnosticReport) -> None:
        rejections = self.rejections
        report.add("commands_rejected", rejections.total)
        if rejections.since_report:
            report.raise_to(Level.WARN, f"{rejections.since_report} joint_command(s) rejected, last: "
                                        f"{rejections.last_reason}")
            rejections.since_report = 0
        if rejections.last_reason:
            report.add("last_rejection", rejections.last_reason)
