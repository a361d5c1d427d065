"""Build diagnostic_msgs statuses the same way in every node.

A node collects (level, message, key/values) per component through
`DiagnosticReport`, which stays ROS-free so its thresholds are testable; the
node converts it with `to_msg` (the only rclpy-facing part) and publishes on
`diagnostics`, where rqt_runtime_monitor and the aggregator read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Level(IntEnum):
    # Values of diagnostic_msgs/DiagnosticStatus levels.
    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass
class DiagnosticReport:
    """One component's status: the worst level raised wins; every reason is kept."""

    name: str
    hardware_id: str = ""
    level: Level = Level.OK
    reasons: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)

    def raise_to(self, level: Level, reason: str) -> None:
        self.level = max(self.level, level)
        self.reasons.append(reason)

    def add(self, key: str, value: Any) -> None:
        self.values[key] = f"{value:.3f}" if isinstance(value, float) else str(value)

    def check_max(self, key: str, value: float, warn: float, error: float, units: str = "") -> None:
        """Record `value` and raise WARN/ERROR when it exceeds a threshold."""
        self.add(key, value)
        if value > error:
            self.raise_to(Level.ERROR, f"{key} {value:.3g}{units} > {error:.3g}{units}")
        elif value > warn:
            self.raise_to(Level.WARN, f"{key} {value:.3g}{units} > {warn:.3g}{units}")

    def check_min(self, key: str, value: float, warn: float, error: float, units: str = "") -> None:
        """Record `value` and raise WARN/ERROR when it falls below a threshold (e.g. a rate)."""
        self.add(key, value)
        if value < error:
            self.raise_to(Level.ERROR, f"{key} {value:.3g}{units} < {error:.3g}{units}")
        elif value < warn:
            self.raise_to(Level.WARN, f"{key} {value:.3g}{units} < {warn:.3g}{units}")

    def check_latency(self, summary: dict[str, float], warn_ms: float, error_ms: float) -> None:
        """A stage's latency window (RollingStats.summary(), ms): the median is held to the
        thresholds, so one slow frame does not flag the stage; the p99 is recorded beside it."""
        self.check_max("latency_median_ms", summary["median"], warn_ms, error_ms, "ms")
        self.add("latency_p99_ms", summary["p99"])

    @property
    def message(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "OK"


def to_msg(reports: list[DiagnosticReport], stamp: Any) -> Any:
    """A diagnostic_msgs/DiagnosticArray holding `reports`."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    array = DiagnosticArray()
    array.header.stamp = stamp
    for r in reports:
        status = DiagnosticStatus(
            level=bytes([int(r.level)]), name=r.name, message=r.message, hardware_id=r.hardware_id
        )
        status.values = [KeyValue(key=k, value=v) for k, v in r.values.items()]
        array.status.append(status)
    return array
