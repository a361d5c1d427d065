"""Per-episode measurements from the graph's message streams. Plain module: no rclpy.

Latency follows one camera frame through the stack by its header stamp, which every stage
carries forward (design.md, "Time and latency"): the detector's `detections` and
localization's `objects` keep the frame's stamp, the controller's command and the IK node's
`joint_command` keep the stamp of the observation they came from, and the driver reports, per
command, the seconds from that stamp to its write on the bus (`driver/latency`). The time a
stage finished with a frame is the publish (source) time of its first message with that stamp,
as DDS records it at the writer, so a busy observer does not inflate the numbers.

Smoothness is the jerk of the joint_command stream: third finite differences at the command
period (the median interval), within runs of commands without gaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Pipeline order of the stamped topics an episode runner watches.
CAMERA, DETECTIONS, OBJECTS, COMMAND = "camera", "detections", "objects", "command"
JOINT_COMMAND = "joint_command"
# Per-stage latency names, in pipeline order; `total` is camera frame -> bus write.
STAGES = ("detection", "localization", "controller", "ik", "bus_write", "total")
STAGE_SPANS = {
    "detection": (CAMERA, DETECTIONS),
    "localization": (DETECTIONS, OBJECTS),
    "controller": (OBJECTS, COMMAND),
    "ik": (COMMAND, JOINT_COMMAND),
}
# A driver latency sample (a bare Float64) is matched to the joint_command stamp it implies:
# its publish time - latency, which is the stamp plus the delay from the bus write to that
# publish (>= 0). The newest stamp at or before it (up to clock noise) within the tolerance
# matches; a later publish than that is left out rather than matched to the wrong frame
# (frames are >= 16 ms apart).
DRIVER_MATCH_TOLERANCE_S = 0.004
_CLOCK_NOISE_NS = 1_000_000
# Commands further apart than this many periods start a new run (e.g. a hold, a reset).
GAP_PERIODS = 3.0


def describe(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, median, p99, max and mean of the finite values; None where there are none."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {"count": 0, "median": None, "p99": None, "max": None, "mean": None}
    return {
        "count": int(data.size),
        "median": float(np.median(data)),
        "p99": float(np.percentile(data, 99)),
        "max": float(data.max()),
        "mean": float(data.mean()),
    }


@dataclass
class StampedArrivals:
    """First publish time (s) of each stage's message, per camera stamp (int ns)."""

    first: dict[str, dict[int, float]] = field(default_factory=dict)

    def note(self, stage: str, stamp_ns: int, published: float) -> None:
        if stamp_ns <= 0:
            return  # unstamped message: nothing to follow
        times = self.first.setdefault(stage, {})
        if stamp_ns not in times or published < times[stamp_ns]:
            times[stamp_ns] = published

    def latencies_ms(self, driver: Sequence[tuple[float, float]],
                     controller_input: str = OBJECTS) -> dict[str, list[float]]:
        """Samples (ms) of every stage in STAGES from the arrivals and the driver's
        (publish time s, latency s) pairs. `controller_input` is OBJECTS for a controller fed
        by perception, "camera" for one fed by the simulator's ground truth (the expert), whose
        messages carry the camera frames' stamps."""
        if controller_input not in (OBJECTS, CAMERA):
            raise ValueError(f"controller_input must be {OBJECTS!r} or {CAMERA!r}, got {controller_input!r}")
        result: dict[str, list[float]] = {name: [] for name in STAGES}
        spans = dict(STAGE_SPANS)
        spans["controller"] = (controller_input, COMMAND)
        if not self.first.get(COMMAND):
            # A joint-space controller publishes joint_command itself: no IK stage.
            spans["controller"] = (spans["controller"][0], JOINT_COMMAND)
            del spans["ik"]
        for name, (start, end) in spans.items():
            ends = self.first.get(end, {})
            starts = self.first.get(start, {}) if start != CAMERA else None
            for stamp_ns, t_end in ends.items():
                t_start = stamp_ns * 1e-9 if starts is None else starts.get(stamp_ns)
                if t_start is not None:
                    result[name].append((t_end - t_start) * 1e3)
        result["bus_write"] = self._bus_write_ms(driver)
        result["total"] = [latency * 1e3 for _, latency in driver]
        return result

    def _bus_write_ms(self, driver: Sequence[tuple[float, float]]) -> list[float]:
        """joint_command publish -> bus write, for the driver samples whose stamp is known."""
        commands = self.first.get(JOINT_COMMAND, {})
        if not commands or not driver:
            return []
        stamps = np.array(sorted(commands), dtype=np.int64)  # (S,) ns
        samples = []
        for published, latency in driver:
            implied = published - latency  # the command's stamp + the publish delay
            k = int(np.searchsorted(stamps, int(round(implied * 1e9)) + _CLOCK_NOISE_NS, side="right")) - 1
            if k >= 0 and implied - stamps[k] * 1e-9 <= DRIVER_MATCH_TOLERANCE_S:
                written = stamps[k] * 1e-9 + latency
                samples.append((written - commands[int(stamps[k])]) * 1e3)
        return samples


def nominal_period(times: np.ndarray) -> float | None:
    """Median interval of a stream's times (s); None with fewer than two."""
    if times.size < 2:
        return None
    intervals = np.diff(times)
    intervals = intervals[intervals > 0]
    return float(np.median(intervals)) if intervals.size else None


def _runs(times: np.ndarray, period: float) -> list[slice]:
    """Index ranges of the stream without gaps longer than GAP_PERIODS periods."""
    breaks = np.flatnonzero(np.diff(times) > GAP_PERIODS * period) + 1
    edges = [0, *breaks.tolist(), times.size]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def command_jerk(times: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Jerk magnitude (units/s^3) per step of a command stream, its times, and the period used.

    times (N,) s, positions (N, J). Third differences at the nominal period, within each run
    without gaps; the norm is over the J joints. Returns (M,) jerk and (M,) times (of the
    newest command in each difference), M <= N - 3.
    """
    times = np.asarray(times, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 1:
        positions = positions[:, None]  # one joint
    period = nominal_period(times)
    if period is None:
        return np.zeros(0), np.zeros(0), None
    jerks, at = [], []
    for run in _runs(times, period):
        q = positions[run]  # (n, J)
        if q.shape[0] >= 4:
            third = q[3:] - 3.0 * q[2:-1] + 3.0 * q[1:-2] - q[:-3]  # (n - 3, J)
            jerks.append(np.linalg.norm(third, axis=1) / period**3)
            at.append(times[run][3:])
    if not jerks:
        return np.zeros(0), np.zeros(0), period
    return np.concatenate(jerks), np.concatenate(at), period


def interval_jitter_ms(times: np.ndarray) -> list[float]:
    """|interval - nominal period| (ms) of a periodic stream, within runs without gaps."""
    times = np.asarray(times, dtype=np.float64)
    period = nominal_period(times)
    if period is None:
        return []
    jitter: list[float] = []
    for run in _runs(times, period):
        jitter += (np.abs(np.diff(times[run]) - period) * 1e3).tolist()
    return jitter


def diagnostic_number(values: Mapping[str, str], key: str) -> float | None:
    """A diagnostics value as a float; None when missing or not a finite number."""
    try:
        number = float(values[key])
    except (KeyError, ValueError):
        return None
    return number if math.isfinite(number) else None
