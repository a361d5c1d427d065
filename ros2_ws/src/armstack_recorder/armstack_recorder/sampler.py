"""Sampling message streams on a fixed dataset clock by their own stamps (no ROS).

The dataset clock of an episode started at t0 ticks at t_k = t0 + k/fps (integer nanoseconds,
so the grid never drifts however irregularly it is polled). Sample k takes, for every stream,
the latest message whose header stamp is <= t_k; it is complete when each of those exists and
is at most the stream's max_age older than t_k. Otherwise the stream is named with a reason:

    missing  no message with a stamp <= t_k is buffered (none ever came, or only newer ones)
    stale    the latest one is older than t_k - max_age: the stream stalled or its clock lags

Messages arrive after their stamp (transport, and for objects the whole perception pipeline),
so sample k is decided only once the clock reaches t_k + delay. A message that arrives later
than that and would have changed a decided sample is counted as `late` (raise the delay);
one stamped further ahead of the receiving clock than `future_tolerance` is counted as
`future` (the publisher's clock runs ahead; its data would be used too early).

The poller may fall behind (a starved process): due samples are evaluated late but with the
same messages, as long as the loop is at most max_lag behind. Samples older than that are
not evaluated but counted as overrun, which bounds the buffers to roughly
(delay + max_lag + max_age) of messages per stream.

Thread safety: add() (subscription callbacks) and poll() (the sampling timer) may run on
different threads; one lock guards the buffers. Values are stored by reference, not copied.
"""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from armstack_common.stats import RateMeter, RollingStats

logger = logging.getLogger(__name__)

NS = 1_000_000_000
MISSING = "missing"
STALE = "stale"


def seconds_to_ns(t: float) -> int:
    return int(round(t * NS))


@dataclass(frozen=True)
class StreamConfig:
    name: str
    max_age_s: float  # > 0; 0 disables the age check (e.g. a held position target)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"StreamConfig.name must be a non-empty string, got {self.name!r}")
        if not self.max_age_s >= 0.0:
            raise ValueError(f"StreamConfig.max_age_s of {self.name} must be >= 0, "
                             f"got {self.max_age_s}")


@dataclass(frozen=True)
class SamplerConfig:
    fps: int
    streams: tuple[StreamConfig, ...]
    delay_s: float = 0.3  # decide sample t at clock time t + delay_s
    max_lag_s: float = 0.5  # samples due longer ago than this are dropped as overrun
    future_tolerance_s: float = 0.02
    max_buffered: int = 512  # messages per stream; bounds memory if stamps run far ahead

    def __post_init__(self) -> None:
        if not isinstance(self.fps, int) or not 1 <= self.fps <= 1000:
            raise ValueError(f"SamplerConfig.fps must be an int in [1, 1000], got {self.fps!r}")
        if not self.streams:
            raise ValueError("SamplerConfig.streams must not be empty")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"SamplerConfig.streams has duplicate names: {names}")
        for name in ("delay_s", "max_lag_s", "future_tolerance_s"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"SamplerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.max_buffered, int) or self.max_buffered < 2:
            raise ValueError(f"SamplerConfig.max_buffered must be an int >= 2, "
                             f"got {self.max_buffered!r}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.fps


@dataclass
class Sample:
    """One tick of the dataset clock. `values` holds every stream when complete."""

    index: int  # k since begin()
    time_ns: int  # t_k
    values: dict[str, Any]
    ages_s: dict[str, float]  # t_k - stamp of the message used, per stream found
    problems: dict[str, str]  # stream -> MISSING | STALE
    lag_s: float  # how long after t_k + delay it was decided

    @property
    def complete(self) -> bool:
        return not self.problems


@dataclass
class PollResult:
    """Samples decided by one poll, in time order: `overrun` skipped ones, then `samples`."""

    overrun: int = 0
    samples: list[Sample] = field(default_factory=list)


@dataclass
class StreamCounters:
    received: int = 0
    invalid: int = 0  # refused by the caller (not convertible), never buffered
    late: int = 0  # arrived after a sample it should have served was decided
    future: int = 0  # stamped ahead of the receiving clock by more than future_tolerance
    evicted: int = 0  # dropped from a full buffer before use
    # of the stamps: the publisher's capture rate, unaffected by bursty delivery
    rate: RateMeter = field(default_factory=lambda: RateMeter(window=200))
    latency_s: RollingStats = field(default_factory=lambda: RollingStats(window=200))


class _Buffer:
    """Messages of one stream ordered by stamp (arrival order may differ)."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.values: list[Any] = []

    def insert(self, stamp: int, value: Any) -> None:
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.values[i] = value  # a re-send for the same stamp: the newest computation wins
            return
        self.stamps.insert(i, stamp)
        self.values.insert(i, value)

    def latest_at_or_before(self, t: int) -> int:
        """Index of the latest entry with stamp <= t, or -1."""
        return bisect.bisect_right(self.stamps, t) - 1

    def drop_before(self, i: int) -> None:
        del self.stamps[:i]
        del self.values[:i]


class Sampler:
    """Buffers stamped messages and decides samples on the dataset clock (see module doc)."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self._streams = {s.name: s for s in config.streams}
        self._buffers = {s.name: _Buffer() for s in config.streams}
        self.counters = {s.name: StreamCounters() for s in config.streams}
        self._period_ns = NS / config.fps
        self._delay_ns = seconds_to_ns(config.delay_s)
        self._reach_ns = seconds_to_ns(config.delay_s + config.max_lag_s)
        self._future_ns = seconds_to_ns(config.future_tolerance_s)
        self._max_age_ns = {s.name: seconds_to_ns(s.max_age_s) for s in config.streams}
        self._lock = threading.Lock()
        self._t0: int | None = None  # grid origin while a grid runs
        self._next_k = 0
        self._decided_ns: int | None = None  # time of the last decided sample

    # ------------------------------------------------------------------ input

    def add(self, stream: str, stamp_ns: int, value: Any, now_ns: int) -> None:
        """Buffer one message of `stream` stamped stamp_ns, received at now_ns."""
        with self._lock:
            counters = self.counters[stream]
            counters.received += 1
            counters.rate.tick(stamp_ns / NS)
            counters.latency_s.add((now_ns - stamp_ns) / NS)
            if stamp_ns > now_ns + self._future_ns:
                counters.future += 1
            buf = self._buffers[stream]
            horizon = self._horizon(now_ns)
            kept = buf.latest_at_or_before(horizon)
            if stamp_ns <= horizon:
                # Only the latest message at or before the horizon can still serve a sample.
                if kept >= 0 and stamp_ns <= buf.stamps[kept]:
                    return
                if self._decided_ns is not None and stamp_ns <= self._decided_ns:
                    counters.late += 1
            buf.insert(stamp_ns, value)
            self._prune(buf, horizon, counters)

    def late_counts(self) -> dict[str, int]:
        with self._lock:
            return {name: c.late for name, c in self.counters.items()}

    def buffered(self) -> dict[str, int]:
        """Messages held per stream (bounded by the horizon and max_buffered)."""
        with self._lock:
            return {name: len(buf.stamps) for name, buf in self._buffers.items()}

    def reject(self, stream: str) -> None:
        """Count a message of `stream` that could not be used at all (bad content)."""
        with self._lock:
            self.counters[stream].invalid += 1

    # ------------------------------------------------------------------ the grid

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def earliest_start_ns(self, now_ns: int) -> int:
        """The oldest grid origin the buffers still cover."""
        return now_ns - self._reach_ns

    def begin(self, t0_ns: int, now_ns: int) -> None:
        """Start a grid at t0 (may lie in the recent past, see earliest_start_ns)."""
        with self._lock:
            if t0_ns < self.earliest_start_ns(now_ns):
                raise ValueError(f"grid origin {(now_ns - t0_ns) / NS:.3f} s in the past is "
                                 f"older than the buffers reach ({self._reach_ns / NS:.3f} s)")
            self._t0, self._next_k, self._decided_ns = t0_ns, 0, None

    def stop(self) -> None:
        with self._lock:
            self._t0 = None
            self._decided_ns = None

    def next_time_ns(self) -> int | None:
        """t_k of the next undecided sample, None without a grid."""
        return None if self._t0 is None else self._time(self._next_k)

    def poll(self, now_ns: int, until_ns: int | None = None, force: bool = False) -> PollResult:
        """Decide every sample due at now_ns (t_k + delay <= now) with t_k <= until_ns.

        force=True decides samples up to until_ns without waiting for the delay (used at
        shutdown, when no later message will be read anyway)."""
        result = PollResult()
        with self._lock:
            if self._t0 is None:
                return result
            last_due = now_ns - self._delay_ns
            end = last_due if until_ns is None else min(last_due, until_ns)
            if force and until_ns is not None:
                end = until_ns
            oldest_ok = now_ns - self._reach_ns
            while self._time(self._next_k) <= end:
                t = self._time(self._next_k)
                if t < oldest_ok and not force:
                    result.overrun += 1
                else:
                    result.samples.append(self._evaluate(self._next_k, t, now_ns))
                self._decided_ns = t
                self._next_k += 1
            if self._decided_ns is not None:
                horizon = self._horizon(now_ns)
                for name, buf in self._buffers.items():
                    self._prune(buf, horizon, self.counters[name])
        return result

    # ------------------------------------------------------------------ internals

    def _time(self, k: int) -> int:
        return self._t0 + (k * NS) // self.config.fps

    def _horizon(self, now_ns: int) -> int:
        """Messages at or before this time matter only as the latest one before it."""
        if self._decided_ns is not None:
            return self._decided_ns
        if self._t0 is not None:
            return self._t0 - 1  # a running grid that has not decided its first sample yet
        return now_ns - self._reach_ns

    def _prune(self, buf: _Buffer, horizon: int, counters: StreamCounters) -> None:
        kept = buf.latest_at_or_before(horizon)
        if kept > 0:
            buf.drop_before(kept)
        excess = len(buf.stamps) - self.config.max_buffered
        if excess > 0:
            counters.evicted += excess
            buf.drop_before(excess)

    def _evaluate(self, k: int, t: int, now_ns: int) -> Sample:
        values, ages, problems = {}, {}, {}
        for name, buf in self._buffers.items():
            i = buf.latest_at_or_before(t)
            if i < 0:
                problems[name] = MISSING
                continue
            age = t - buf.stamps[i]
            ages[name] = age / NS
            limit = self._max_age_ns[name]
            if limit and age > limit:
                problems[name] = STALE
            else:
                values[name] = buf.values[i]
        return Sample(index=k, time_ns=t, values=values if not problems else {}, ages_s=ages,
                      problems=problems, lag_s=max(0, now_ns - self._delay_ns - t) / NS)
