"""Pair each detection with the depth frame of the same camera frame, by header stamp.

Colour and aligned depth of one frame carry the same stamp, and the detector keeps it, so
a detection belongs to the depth frame whose stamp equals its own (within a tolerance, for
drivers that stamp the two streams a little apart). Depth arrives long before its
detection (inference sits in between), so depth frames wait in a small cache; a detection
that finds no partner waits until a depth frame newer than it arrives, which proves its own
was lost (depth frames arrive in stamp order), and is then dropped and counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

D = TypeVar("D")  # a detection message
P = TypeVar("P")  # a depth message


@dataclass(frozen=True)
class PairingConfig:
    # Largest stamp difference (s) still counted as the same frame: below half a frame period
    # at 60 fps, above the sub-millisecond spread of a RealSense frameset's stream stamps.
    tolerance_s: float = 0.005
    # Depth frames kept; must cover the detector's latency (30 fps x 1 s here).
    depth_cache_size: int = 30
    # Detections waiting for their depth frame; beyond this the oldest is dropped.
    max_pending: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.tolerance_s <= 1.0:
            raise ValueError(f"tolerance_s must be in [0, 1], got {self.tolerance_s}")
        if self.depth_cache_size < 1:
            raise ValueError(f"depth_cache_size must be >= 1, got {self.depth_cache_size}")
        if self.max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {self.max_pending}")


class StampPairer(Generic[D, P]):
    def __init__(self, config: PairingConfig | None = None) -> None:
        self.config = config or PairingConfig()
        self._depth: deque[tuple[float, P]] = deque(maxlen=self.config.depth_cache_size)
        self._pending: deque[tuple[float, D]] = deque()
        self.paired = 0
        self.dropped = 0  # detections that never found their depth frame

    def _match(self, stamp: float) -> P | None:
        best, best_dt = None, self.config.tolerance_s
        for depth_stamp, depth in self._depth:
            dt = abs(depth_stamp - stamp)
            if dt <= best_dt:
                best, best_dt = depth, dt
        return best

    def _newest_depth(self) -> float:
        return self._depth[-1][0] if self._depth else float("-inf")

    def add_detection(self, stamp_s: float, detection: D) -> tuple[D, P] | None:
        """The pair if the depth frame is here; else None (kept pending or dropped)."""
        depth = self._match(stamp_s)
        if depth is not None:
            self.paired += 1
            return detection, depth
        if self._newest_depth() > stamp_s + self.config.tolerance_s:
            self.dropped += 1  # its depth frame went by already (lost, or evicted)
            return None
        self._pending.append((stamp_s, detection))
        while len(self._pending) > self.config.max_pending:
            self._pending.popleft()
            self.dropped += 1
        return None

    def add_depth(self, stamp_s: float, depth: P) -> list[tuple[D, P]]:
        """Cache a depth frame; the pending detections it completes (or proves lost)."""
        self._depth.append((stamp_s, depth))
        pairs: list[tuple[D, P]] = []
        waiting: deque[tuple[float, D]] = deque()
        for det_stamp, detection in self._pending:
            if abs(det_stamp - stamp_s) <= self.config.tolerance_s:
                pairs.append((detection, depth))
            elif stamp_s > det_stamp + self.config.tolerance_s:
                self.dropped += 1
            else:
                waiting.append((det_stamp, detection))
        self._pending = waiting
        self.paired += len(pairs)
        return pairs
