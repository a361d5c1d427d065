"""Conversions between builtin_interfaces/Time and float seconds (no ROS import)."""

from __future__ import annotations

from typing import Any


def stamp_to_sec(stamp: Any) -> float:
    """A Time message (anything with sec/nanosec) as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp_fields(t: float) -> tuple[int, int]:
    """(sec, nanosec) for a Time message, nanosec always in [0, 1e9)."""
    ns = int(round(t * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000
