"""Counters and timings of the ik node, turned into one diagnostics status (no ROS)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from armstack_common.diagnostics import DiagnosticReport, Level
from armstack_common.stats import RateMeter, RollingStats

from .controller import IKController, Outcome, Submission


@dataclass(frozen=True)
class SolveLimits:
    """Diagnostics thresholds on the IK solve time p99: the ik node's live parameters
    solve_warn_ms and solve_error_ms (defaults in node_config.IK_NODE_PARAMS)."""

    solve_warn_ms: float
    solve_error_ms: float

    def __post_init__(self) -> None:
        if not self.solve_warn_ms > 0.0:
            raise ValueError(f"solve_warn_ms must be > 0, got {self.solve_warn_ms}")
        if self.solve_error_ms < self.solve_warn_ms:
            raise ValueError(
                f"solve_error_ms must be >= solve_warn_ms, got {self.solve_error_ms} < {self.solve_warn_ms}"
            )


class IKStats:
    """Everything the ik node reports: outcome counts, solve and command latency.

    `limits` may be replaced at any time (a live parameter update); the next report uses it.
    """

    def __init__(self, limits: SolveLimits, window: int = 500) -> None:
        self.limits = limits
        self.outcomes: Counter[str] = Counter()
        self.issues: Counter[str] = Counter()
        self.solve_ms = RollingStats(window)
        # ee_command callback start -> joint_command published (per_command mode) or
        # target set (timer mode)
        self.latency_ms = RollingStats(window)
        self.age_ms = RollingStats(window)  # command stamp -> receipt (upstream latency)
        self.rate = RateMeter(window)
        self.last_reason = ""
        self.last_position_error = math.nan
        self._reported_problems = 0  # held + rejected at the previous report

    def record(self, submission: Submission, received: float, stamp: float) -> None:
        """One submitted command: its outcome, IK time, and age at `received` (s)."""
        self.rate.tick(received)
        self.outcomes[submission.outcome.value] += 1
        self.age_ms.add((received - stamp) * 1e3)
        if submission.issue is not None:
            self.issues[submission.issue.value] += 1
            self.last_reason = submission.reason
        if submission.outcome is not Outcome.REJECTED:
            self.solve_ms.add(submission.solve_time * 1e3)
            self.last_position_error = submission.position_error

    def record_latency(self, seconds: float) -> None:
        self.latency_ms.add(seconds * 1e3)

    def report(self, controller: IKController, now: float, name: str) -> DiagnosticReport:
        """The status for `diagnostics`; WARN when commands were held or refused since the
        last report (with the last reason), or no joint state has arrived."""
        report = DiagnosticReport(name=name)
        report.add("commands", self.rate.count)
        report.add("command_rate_hz", self.rate.rate_hz())
        for outcome in Outcome:
            report.add(outcome.value, self.outcomes[outcome.value])
        for issue, count in sorted(self.issues.items()):
            report.add(f"count_{issue}", count)
        solve = self.solve_ms.summary()
        report.add("solve_ms_median", solve["median"])
        report.add("solve_ms_max", solve["max"])
        if len(self.solve_ms):
            limits = self.limits
            report.check_max("solve_ms_p99", solve["p99"], limits.solve_warn_ms, limits.solve_error_ms, " ms")
        latency = self.latency_ms.summary()
        report.add("latency_ms_median", latency["median"])
        report.add("latency_ms_p99", latency["p99"])
        report.add("command_age_ms_median", self.age_ms.summary()["median"])
        report.add("last_position_error_mm", self.last_position_error * 1e3)
        report.add("last_error", self.last_reason or "-")
        tracking = controller.tracking_error()
        report.add("tracking_error_rad", math.nan if tracking is None else tracking)
        age = controller.measured_age(now)
        if age is None:
            report.raise_to(Level.WARN, "no joint_states received")
        else:
            report.add("joint_state_age_s", age)
        problems = self.outcomes[Outcome.HELD.value] + self.outcomes[Outcome.REJECTED.value]
        if problems > self._reported_problems:
            new = problems - self._reported_problems
            report.raise_to(Level.WARN, f"{new} command(s) held or rejected; last: {self.last_reason}")
        self._reported_problems = problems
        return report
