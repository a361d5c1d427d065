"""One episode's raw streams and the result computed from them. Plain module: no rclpy.

`EpisodeLog` is filled by the runner node's subscription callbacks (executor thread) while the
episode sequence (another thread) opens and closes it, hence the lock. Times are wall-clock
seconds, the clock of the header stamps and of DDS source timestamps on one host.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from armstack_common.robot_names import ARM_JOINTS, JOINT_NAMES

from armstack_eval.metrics import (
    COMMAND,
    OBJECTS,
    StampedArrivals,
    command_jerk,
    describe,
    interval_jitter_ms,
)

# Jerk is taken over the arm's revolute joints, ARM_JOINTS (rad); the gripper is in metres.
# joint_states arrive at the driver's rate (200 Hz); traces keep one sample per this many s.
STATE_TRACE_PERIOD = 0.02
# The policy node's running count of control periods its timer missed (diagnostics).
MISSED_PERIODS = ("policy: policy", "missed_periods")


@dataclass
class EpisodeResult:
    """What an episode came to; every field is JSON-ready (traces are kept apart)."""

    index: int
    controller: str
    seed: int | None
    scene: int | None  # the simulator's episode index of the scene
    success: bool
    end_reason: str  # success | timeout | controller_finished | graph_failed
    duration_s: float  # controller start -> episode end
    time_to_success_s: float | None
    in_bin: dict[str, bool]
    sim_time_s: float | None
    jerk: dict[str, float | int | None]  # rad/s^3 over the arm joints: rms, p99, max
    command_period_ms: float | None
    latency_ms: dict[str, list[float]]  # stage -> samples
    command_jitter_ms: list[float]  # |interval - period| of the controller's command stream
    diagnostics: dict[str, dict[str, str]]  # status name -> values, last seen in the episode
    faults: list[str]  # ERROR diagnostics of the episode: per status, its first message and count
    # Control periods the policy node missed between its first and last report of the episode
    # {"count", "span_s"}; None without two reports.
    policy_missed_periods: dict[str, float] | None = None
    instruction: str | None = None  # an instructed (VLA) episode's instruction
    target: str | None = None  # the cube it names; success is that cube alone in the bin

    def to_json(self, with_samples: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_samples:
            data["latency_ms"] = {k: describe(v) for k, v in self.latency_ms.items()}
            data["command_jitter_ms"] = describe(self.command_jitter_ms)
        return data


@dataclass
class Traces:
    """Time series of one episode for plots. t in s from the episode start."""

    command_t: np.ndarray  # (N,)
    command_q: np.ndarray  # (N, 7) arm joints + gripper, commanded
    state_t: np.ndarray  # (M,)
    state_q: np.ndarray  # (M, 7) measured
    ee_target_t: np.ndarray  # (K,)
    ee_target: np.ndarray  # (K, 3) commanded ee position (ee_command), base_link
    jerk_t: np.ndarray  # (J,)
    jerk: np.ndarray  # (J,) rad/s^3

    def save(self, path: str) -> None:
        np.savez_compressed(path, **asdict(self))


def _select(names: list[str], positions: list[float]) -> list[float] | None:
    """The (7,) arm + gripper positions in JOINT_NAMES order, None if one is missing."""
    index = {n: i for i, n in enumerate(names)}
    if not all(n in index for n in JOINT_NAMES) or len(positions) < len(names):
        return None
    return [float(positions[index[n]]) for n in JOINT_NAMES]


@dataclass
class _Streams:
    arrivals: StampedArrivals = field(default_factory=StampedArrivals)
    driver: list[tuple[float, float]] = field(default_factory=list)
    command_t: list[float] = field(default_factory=list)  # controller's command publish times
    joint_t: list[float] = field(default_factory=list)
    joint_q: list[list[float]] = field(default_factory=list)
    state_t: list[float] = field(default_factory=list)
    state_q: list[list[float]] = field(default_factory=list)
    target_t: list[float] = field(default_factory=list)
    target: list[list[float]] = field(default_factory=list)
    # status -> (stamp s, values) of its last and of its first report in the episode
    diagnostics: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)
    diagnostics_first: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)
    faults: dict[str, tuple[str, int]] = field(default_factory=dict)  # status -> (first message, count)


class EpisodeLog:
    """Collects the streams of one episode between `open` and `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s: _Streams | None = None
        self.started = 0.0
        self.controller_topic = COMMAND  # where the controller's commands appear

    def open(self, started: float, controller_topic: str) -> None:
        with self._lock:
            self._s, self.started, self.controller_topic = _Streams(), started, controller_topic

    def close(self) -> _Streams | None:
        with self._lock:
            streams, self._s = self._s, None
        return streams

    def stamped(self, stage: str, stamp_ns: int, published: float) -> None:
        with self._lock:
            if self._s is None:
                return
            self._s.arrivals.note(stage, stamp_ns, published)
            if stage == self.controller_topic:
                self._s.command_t.append(published)

    def ee_target(self, published: float, xyz: tuple[float, float, float]) -> None:
        with self._lock:
            if self._s is not None:
                self._s.target_t.append(published)
                self._s.target.append(list(xyz))

    def joint_command(self, published: float, names: list[str], positions: list[float]) -> None:
        q = _select(names, positions)
        with self._lock:
            if self._s is not None and q is not None:
                self._s.joint_t.append(published)
                self._s.joint_q.append(q)

    def joint_state(self, stamp: float, names: list[str], positions: list[float]) -> None:
        with self._lock:
            if self._s is None or (self._s.state_t and stamp - self._s.state_t[-1] < STATE_TRACE_PERIOD):
                return
            q = _select(names, positions)
            if q is not None:
                self._s.state_t.append(stamp)
                self._s.state_q.append(q)

    def driver_latency(self, published: float, latency: float) -> None:
        with self._lock:
            if self._s is not None:
                self._s.driver.append((published, latency))

    def diagnostic(self, name: str, stamp: float, level_error: bool, message: str,
                   values: dict[str, str]) -> None:
        with self._lock:
            if self._s is None:
                return
            self._s.diagnostics[name] = (stamp, values)
            self._s.diagnostics_first.setdefault(name, (stamp, values))
            if level_error:
                first, count = self._s.faults.get(name, (message, 0))
                self._s.faults[name] = (first, count + 1)


def _array(rows: list, width: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def counter_increase(streams: _Streams, status: str, key: str) -> dict[str, float] | None:
    """How much a running count that `status` reports under `key` grew between its first and
    last report of the episode, and over how long: {"count", "span_s"}; None without two
    reports that carry it as a number."""
    first, last = streams.diagnostics_first.get(status), streams.diagnostics.get(status)
    if first is None or last is None or last[0] <= first[0]:
        return None
    try:
        count = float(last[1][key]) - float(first[1][key])
    except (KeyError, ValueError):
        return None
    # A node that restarted mid-episode counts from 0 again: its later count is all new.
    return {"count": count if count >= 0 else float(last[1][key]), "span_s": last[0] - first[0]}


def summarize(streams: _Streams, started: float, controller_input: str = OBJECTS) -> tuple[dict[str, Any], Traces]:
    """The measured fields of an EpisodeResult and the traces, from an episode's streams
    (`controller_input`: see StampedArrivals.latencies_ms)."""
    joint_t, joint_q = np.asarray(streams.joint_t), _array(streams.joint_q, len(JOINT_NAMES))
    order = np.argsort(joint_t, kind="stable")
    joint_t, joint_q = joint_t[order], joint_q[order]
    jerk, jerk_t, period = command_jerk(joint_t, joint_q[:, : len(ARM_JOINTS)])
    rms = float(np.sqrt(np.mean(jerk**2))) if jerk.size else None
    stats = describe(jerk.tolist())
    measured = {
        "jerk": {"rms": rms, "p99": stats["p99"], "max": stats["max"], "count": stats["count"]},
        "command_period_ms": None if period is None else period * 1e3,
        "latency_ms": streams.arrivals.latencies_ms(streams.driver, controller_input),
        "command_jitter_ms": interval_jitter_ms(np.sort(np.asarray(streams.command_t))),
        "diagnostics": {name: values for name, (_, values) in streams.diagnostics.items()},
        "policy_missed_periods": counter_increase(streams, *MISSED_PERIODS),
        "faults": [f"{name}: {message}" + (f" ({count} reports)" if count > 1 else "")
                   for name, (message, count) in streams.faults.items()],
    }
    traces = Traces(
        command_t=joint_t - started, command_q=joint_q,
        state_t=np.asarray(streams.state_t) - started, state_q=_array(streams.state_q, len(JOINT_NAMES)),
        ee_target_t=np.asarray(streams.target_t) - started, ee_target=_array(streams.target, 3),
        jerk_t=jerk_t - started, jerk=jerk,
    )
    return measured, traces
