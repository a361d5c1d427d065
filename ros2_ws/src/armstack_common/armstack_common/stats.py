"""Rolling timing statistics for diagnostics and benchmarks (no ROS).

Each stage of the 50 Hz stack reports its rate and latency as median / p99 /
max over a recent window (design.md, "Time and latency"); a fixed-size ring
keeps that O(1) per sample and allocation-free on the hot path.
"""

from __future__ import annotations

import numpy as np


class RollingStats:
    """The last `window` samples of one quantity (e.g. a latency in ms)."""

    def __init__(self, window: int = 500) -> None:
        if window < 1:
            raise ValueError(f"RollingStats.window must be >= 1, got {window}")
        self._ring = np.zeros(window, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        self._ring[self._next] = value
        self._next = (self._next + 1) % self._ring.size
        self._count = min(self._count + 1, self._ring.size)

    def __len__(self) -> int:
        return self._count

    def summary(self) -> dict[str, float]:
        """median, p99, max and mean of the window; NaN when empty."""
        if self._count == 0:
            return {"median": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
        data = self._ring[: self._count]
        return {
            "median": float(np.median(data)),
            "p99": float(np.percentile(data, 99)),
            "max": float(data.max()),
            "mean": float(data.mean()),
        }


class RateMeter:
    """Event rate and period jitter from event timestamps (seconds)."""

    def __init__(self, window: int = 500) -> None:
        self.periods = RollingStats(window)
        self._last: float | None = None
        self.count = 0

    def tick(self, t: float) -> None:
        if self._last is not None and t > self._last:
            self.periods.add(t - self._last)
        self._last = t
        self.count += 1

    def rate_hz(self) -> float:
        median = self.periods.summary()["median"]
        return 0.0 if not median or median != median else 1.0 / median

    def last_time(self) -> float | None:
        return self._last
