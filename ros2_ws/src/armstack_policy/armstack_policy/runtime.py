"""The policy node's logic without ROS: inference worker steps, control ticks, diagnostics.

Two threads share a `PolicyRuntime`:
- the control timer calls `tick` once per period: the ChunkBuffer's action for now, and the
  stamp of the observation behind it; a hold (no chunk covers now) publishes nothing new, so
  downstream keeps its last target;
- the inference worker calls `work`: wait for an observation newer than the last one used,
  assemble it (refused when stale), predict a chunk, add it to the buffer under the
  observation's stamp. A policy that cannot predict yet (a VLA without an instruction) says so
  by raising `PolicyNotReady`: the arm holds and the reason is reported, as for a refused
  observation. It never holds anything the timer waits on except the ChunkBuffer's
  short lock.
start/stop/reset come from service calls. A chunk predicted from before a reset or stop is
dropped (an epoch counter), so an episode never starts with the previous one's plan.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from armstack_common.diagnostics import DiagnosticReport, Level
from armstack_common.stats import RollingStats

from armstack_policy.chunk_buffer import ChunkBuffer, ChunkVerdict, StepStatus
from armstack_policy.observation import Assembly, ObservationAssembler, Status

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportLimits:
    """Diagnostics thresholds (live parameters of the node; validated by its config)."""

    jitter_warn_ms: float = 5.0  # control-period jitter p99: a quarter of the 20 ms period
    jitter_error_ms: float = 10.0  # half of it
    inference_warn_ms: float = 100.0  # inference p99: chunks come late, their horizon shrinks


class PolicyNotReady(Exception):
    """predict_chunk cannot run yet, for a reason the message gives (not a fault)."""


# Key of PolicyRuntime.refusals for observations the policy was not ready for.
NOT_READY = "policy_not_ready"


class ChunkPolicy(Protocol):
    """The interface the runtime drives (armstack_policy.onnx_policy runners)."""

    def reset(self) -> None: ...

    def predict_chunk(self, observation: dict[str, np.ndarray]) -> np.ndarray: ...


class ControlTiming:
    """Jitter and missed periods of a periodic timer from its callback times (monotonic s).

    Jitter is |actual period - nominal|; a period of about n nominal periods (n >= 2) means
    n - 1 missed (rclpy's timers skip, not queue, the calls they are late for).
    """

    def __init__(self, period: float, window: int = 3000) -> None:
        if not period > 0:
            raise ValueError(f"ControlTiming.period must be > 0, got {period!r}")
        self.period = period
        self.jitter_ms = RollingStats(window)
        self.missed = 0
        self.ticks = 0
        self._last: float | None = None

    def tick(self, t: float) -> int:
        """Record a callback at t; returns the periods missed just before it."""
        self.ticks += 1
        missed = 0
        if self._last is not None:
            elapsed = t - self._last
            self.jitter_ms.add(abs(elapsed - self.period) * 1e3)
            missed = max(0, round(elapsed / self.period) - 1)
            self.missed += missed
        self._last = t
        return missed


@dataclass(frozen=True, slots=True)
class ControlStep:
    """One tick's outcome: `action` to publish (a copy) with its observation stamp, or None."""

    action: np.ndarray | None  # (D,)
    t_obs: float | None
    status: StepStatus | None  # None while stopped


@dataclass(frozen=True, slots=True)
class Inference:
    """One worker step: the observation used (or refused) and the chunk made from it."""

    assembly: Assembly
    chunk: np.ndarray | None = None  # (k, D) raw actions
    verdict: ChunkVerdict | None = None
    seconds: float = 0.0  # predict_chunk wall time
    problem: str = ""  # why the policy made no chunk from a ready observation (PolicyNotReady)


class PolicyRuntime:
    def __init__(self, policy: ChunkPolicy, assembler: ObservationAssembler, buffer: ChunkBuffer,
                 running: bool = False, limits: ReportLimits | None = None) -> None:
        self.policy = policy
        self.limits = limits or ReportLimits()  # replaced whole on a live parameter update
        self.assembler = assembler
        self.buffer = buffer
        self.timing = ControlTiming(buffer.config.dt)
        self.inference_ms = RollingStats(500)
        self.observation_age_ms = RollingStats(500)  # t_obs -> inference start
        self.refusals: Counter[str] = Counter()  # Status value -> observations refused
        self.verdicts: Counter[str] = Counter()  # ChunkVerdict value -> chunks
        self.holds: Counter[str] = Counter()  # StepStatus value -> ticks with nothing to publish
        # Ticks with nothing to publish while the newest observation is older than
        # max_observation_age: a stalled camera (no new frame means nothing is refused).
        self.stale_holds = 0
        self.published = 0
        self.errors = 0
        self.last_problem = ""
        self._lock = threading.Lock()  # epoch, running and the chunk hand-over
        self._epoch = 0
        self._running = threading.Event()
        self._last_stamp: float | None = None
        self._reported_missed = 0
        self._reported_problems = 0
        if running:
            self.start()

    # ------------------------------------------------------------------ commands

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def start(self) -> bool:
        """Run from a clean slate (no old chunks; policy and observations as at an episode
        start); False if it was running already (then nothing changes)."""
        with self._lock:
            if self._running.is_set():
                return False
            self._reset_locked()
            self._running.set()
            return True

    def stop(self) -> bool:
        """Stop publishing and drop every chunk; False if it was stopped already."""
        with self._lock:
            was_running = self._running.is_set()
            self._running.clear()
            self._reset_locked()
            return was_running

    def reset(self) -> None:
        """New episode; keeps running if it was."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        self._epoch += 1
        self.buffer.reset()
        self.policy.reset()
        self.assembler.clear()
        self._last_stamp = None

    # ------------------------------------------------------------------ control timer

    def tick(self, t_now: float, t_monotonic: float) -> ControlStep:
        """The control step at ROS time t_now; t_monotonic times the timer itself."""
        self.timing.tick(t_monotonic)
        if not self._running.is_set():
            return ControlStep(None, None, None)
        step = self.buffer.action_at(t_now)
        if step.status is StepStatus.OK:
            self.published += 1
            return ControlStep(step.action.copy(), step.t_obs, step.status)
        self.holds[step.status.value] += 1
        if self._observation_stale(t_now):
            self.stale_holds += 1
        return ControlStep(None, step.t_obs, step.status)

    def _observation_stale(self, now: float) -> bool:
        newest = self.assembler.newest_stamp()
        return newest is None or now - newest > self.assembler.config.max_observation_age

    # ------------------------------------------------------------------ inference worker

    def work(self, now: Callable[[], float], timeout: float) -> Inference | None:
        """One worker step: wait up to `timeout` s for a new observation while running, then
        infer; None when there was nothing to do."""
        if not self._running.wait(timeout):
            return None
        if not self.assembler.wait_for_newer(self._last_stamp, timeout):
            return None
        return self.infer(now())

    def infer(self, now: float) -> Inference:
        with self._lock:
            epoch = self._epoch
        assembly = self.assembler.assemble(now)
        if assembly.stamp is not None:
            self._last_stamp = assembly.stamp  # each camera frame is tried once
        if not assembly.ready:
            self.refusals[assembly.status.value] += 1
            self.last_problem = assembly.reason
            logger.debug("observation refused: %s", assembly.reason)
            return Inference(assembly)
        self.observation_age_ms.add((now - assembly.stamp) * 1e3)
        t0 = time.perf_counter()
        try:
            chunk = self.policy.predict_chunk(assembly.features)  # (k, D)
        except PolicyNotReady as exc:
            self.refusals[NOT_READY] += 1
            self.last_problem = str(exc)
            return Inference(assembly, problem=str(exc))
        seconds = time.perf_counter() - t0
        self.inference_ms.add(seconds * 1e3)
        if not np.isfinite(chunk).all():
            self.errors += 1
            self.last_problem = "the policy predicted NaN or inf; chunk dropped"
            return Inference(assembly, None, None, seconds)
        with self._lock:
            if epoch != self._epoch or not self._running.is_set():
                return Inference(assembly, None, None, seconds)  # predicted for a past episode
            verdict = self.buffer.add_chunk(chunk, assembly.stamp)
        self.verdicts[verdict.value] += 1
        return Inference(assembly, chunk, verdict, seconds)

    def record_error(self, message: str) -> None:
        """An exception in the worker (the node logs it; here it is counted and reported)."""
        self.errors += 1
        self.last_problem = message

    # ------------------------------------------------------------------ diagnostics

    def report(self, name: str, now: float) -> DiagnosticReport:
        """The status for `diagnostics`. WARN: observations refused, periods missed since the
        last report, or the newest observation too old while running; ERROR: worker errors
        or control jitter past half a period."""
        report = DiagnosticReport(name=name)
        report.add("running", self.running)
        self._report_timing(report)
        inference = self.inference_ms.summary()
        report.add("inference_ms_median", inference["median"])
        report.add("inference_ms_p99", inference["p99"])
        if len(self.inference_ms) and inference["p99"] > self.limits.inference_warn_ms:
            report.raise_to(Level.WARN, f"inference_ms_p99 {inference['p99']:.3g} ms > "
                                        f"{self.limits.inference_warn_ms:.3g} ms")
        report.add("observation_age_ms_median", self.observation_age_ms.summary()["median"])
        stats = self.buffer.stats()
        report.add("buffer_depth", stats.depth)
        report.add("buffer_steps_remaining", stats.steps_remaining)
        report.add("dry_steps", stats.dry_steps)
        report.add("time_jumps", stats.time_jumps_backward + stats.time_jumps_forward)
        report.add("commands_published", self.published)
        for status in (StepStatus.DRY, StepStatus.EMPTY, StepStatus.TIME_JUMP):
            report.add(f"hold_{status.value}", self.holds[status.value])
        for verdict in ChunkVerdict:
            report.add(f"chunks_{verdict.value}", self.verdicts[verdict.value])
        report.add("stale_observations", self.refusals[Status.STALE.value])
        report.add("hold_stale_observation", self.stale_holds)
        report.add("missing_observations", self.refusals[Status.MISSING.value])
        report.add(NOT_READY, self.refusals[NOT_READY])
        report.add("errors", self.errors)
        report.add("last_problem", self.last_problem or "-")
        problems = sum(self.refusals.values()) + self.errors
        if problems > self._reported_problems:
            level = Level.ERROR if self.errors else Level.WARN
            report.raise_to(level, f"{problems - self._reported_problems} observation(s) "
                                   f"refused or errors since the last report: {self.last_problem}")
        self._reported_problems = problems
        newest = self.assembler.newest_stamp()
        report.add("observation_age_ms", math.nan if newest is None else (now - newest) * 1e3)
        limit = self.assembler.config.max_observation_age
        if self.running and self._observation_stale(now):
            report.raise_to(Level.WARN, "holding: no observation newer than "
                                        f"max_observation_age {limit} s")
        if not self.running:
            report.raise_to(Level.OK, "stopped")
        return report

    def _report_timing(self, report: DiagnosticReport) -> None:
        jitter = self.timing.jitter_ms.summary()
        report.add("control_ticks", self.timing.ticks)
        report.add("control_jitter_ms_median", jitter["median"])
        report.add("control_jitter_ms_max", jitter["max"])
        if len(self.timing.jitter_ms):
            report.check_max("control_jitter_ms_p99", jitter["p99"], self.limits.jitter_warn_ms,
                             self.limits.jitter_error_ms, " ms")
        report.add("missed_periods", self.timing.missed)
        if self.timing.missed > self._reported_missed:
            report.raise_to(Level.WARN, f"{self.timing.missed - self._reported_missed} control "
                                        "period(s) missed since the last report")
        self._reported_missed = self.timing.missed
