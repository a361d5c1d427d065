"""Episodes on the dataset clock: start, save, discard, per-episode timing report (no ROS).

`RecorderSession` turns the sampler's decided samples into dataset frames and hands them to a
`FrameSink` (the background writer), so its tick never waits on disk or encoders.

Timing policy (LeRobot stores frame k at timestamp k/fps, contiguous):
- Samples before the first complete one are skipped: the episode starts at its first complete
  sample (`startup_skipped`, with reasons), so streams that need a moment to arrive do not
  open a gap.
- A later incomplete sample (a stream missing or stale, the loop overrun, the writer backlog
  full) is dropped, never filled from an older message. The frames after it are then stored
  1/fps earlier than they were sampled; `max_timing_error_s` is the largest such shift
  (dropped samples between frames / fps). Drops after the last frame shift nothing.
- At save, an episode whose max_timing_error_s exceeds the limit is discarded
  (on_timing_error="discard", the default) or kept and flagged `degraded`
  (on_timing_error="keep"). Either way the report says so.
- An episode with no complete sample is not written ("empty").

Every episode ends with an `EpisodeReport` (to the `on_report` callback and to the future
returned by `save`): outcome, frames, effective rate, drops by reason, timing error.
An episode is saved by the sink before the next one starts in it, so each finished episode
is durable before the next begins (a start arriving while the last one is still being
sampled up to its end is queued).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from armstack_recorder.sampler import NS, PollResult, Sample, Sampler

logger = logging.getLogger(__name__)

STATE_STREAM = "state"
ACTION_STREAM = "action"
OBJECTS_STREAM = "objects"
IMAGE_STREAM_PREFIX = "image."
TIMING_POLICIES = ("discard", "keep")
OVERRUN = "recorder:overrun"
BACKLOG = "writer:backlog"


def image_stream(camera: str) -> str:
    return IMAGE_STREAM_PREFIX + camera


@dataclass(frozen=True)
class Frame:
    state: np.ndarray  # (D_s,)
    action: np.ndarray  # (D_a,)
    env_state: np.ndarray | None  # (D_e,)
    images: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8
    time_s: float  # sample time t_k


@dataclass(frozen=True)
class SavedEpisode:
    """What the sink reports after a durable save."""

    episode_index: int
    frames: int
    save_s: float
    encode_wait_s: float
    encoder_blocked_s: float


SaveCallback = Callable[[SavedEpisode | None, BaseException | None], None]


class FrameSink(Protocol):
    """Where frames go (the background writer); no method may wait on disk or encoders."""

    def start(self, task: str) -> None: ...
    def frame(self, frame: Frame) -> bool: ...  # False: backlog full, frame not taken
    def save(self, on_done: SaveCallback) -> None: ...  # on_done once durable (or failed)
    def discard(self) -> None: ...


@dataclass(frozen=True)
class SessionConfig:
    fps: int
    cameras: tuple[str, ...] = ()
    has_objects: bool = True
    max_timing_error_s: float = 0.1
    on_timing_error: str = "discard"

    def __post_init__(self) -> None:
        if not isinstance(self.fps, int) or self.fps < 1:
            raise ValueError(f"SessionConfig.fps must be an int >= 1, got {self.fps!r}")
        if not self.max_timing_error_s >= 0.0:
            raise ValueError("SessionConfig.max_timing_error_s must be >= 0, "
                             f"got {self.max_timing_error_s}")
        if self.on_timing_error not in TIMING_POLICIES:
            raise ValueError(f"SessionConfig.on_timing_error must be one of {TIMING_POLICIES}, "
                             f"got {self.on_timing_error!r}")


@dataclass
class EpisodeReport:
    """The honest account of one episode; `to_dict` is the JSON on recorder/episode_report."""

    owner: str  # who started it: "service" or "teleop take N"
    task: str
    fps: int
    start_s: float  # grid origin t0
    end_s: float | None = None  # last sample time asked for
    outcome: str = ""  # saved | discarded | empty | failed
    reason: str = ""
    episode_index: int | None = None  # in the dataset, when saved
    samples: int = 0  # dataset clock ticks decided
    frames: int = 0
    startup_skipped: int = 0
    startup_reasons: Counter = field(default_factory=Counter)
    dropped: int = 0
    dropped_by_reason: Counter = field(default_factory=Counter)
    max_timing_error_s: float = 0.0
    degraded: bool = False
    max_age_s: dict[str, float] = field(default_factory=dict)  # oldest input used, per stream
    max_lag_s: float = 0.0  # worst lateness of the sampling loop
    # messages that arrived after a sample they should have served was decided (that sample
    # used an older one): raise the sample delay if this is not zero
    late: dict[str, int] = field(default_factory=dict)
    save_s: float | None = None
    encode_wait_s: float | None = None
    encoder_blocked_s: float | None = None
    first_frame_s: float | None = None

    @property
    def effective_rate_hz(self) -> float:
        return self.frames * self.fps / self.samples if self.samples else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {"outcome": self.outcome, "reason": self.reason,
               "episode_index": self.episode_index, "task": self.task, "owner": self.owner,
               "fps": self.fps, "start_s": self.start_s, "end_s": self.end_s,
               "first_frame_s": self.first_frame_s,
               "duration_s": self.frames / self.fps, "frames": self.frames,
               "samples": self.samples, "effective_rate_hz": round(self.effective_rate_hz, 3),
               "startup_skipped": self.startup_skipped,
               "startup_reasons": dict(self.startup_reasons), "dropped": self.dropped,
               "dropped_by_reason": dict(self.dropped_by_reason),
               "max_timing_error_s": round(self.max_timing_error_s, 6),
               "degraded": self.degraded,
               "max_age_s": {k: round(v, 6) for k, v in self.max_age_s.items()},
               "max_loop_lag_s": round(self.max_lag_s, 6), "late_messages": dict(self.late)}
        for key in ("save_s", "encode_wait_s", "encoder_blocked_s"):
            value = getattr(self, key)
            out[key] = None if value is None else round(value, 4)
        return out

    def summary(self) -> str:
        head = f"episode {self.episode_index}" if self.episode_index is not None else "episode"
        text = (f"{head} {self.outcome}: {self.frames} frames ({self.frames / self.fps:.2f} s) "
                f"at {self.effective_rate_hz:.2f} Hz effective, {self.dropped} dropped")
        if self.dropped_by_reason:
            text += f" ({format_counts(self.dropped_by_reason)})"
        text += f", max timing error {self.max_timing_error_s * 1e3:.1f} ms"
        if self.startup_skipped:
            text += f", {self.startup_skipped} skipped at the start"
            if self.startup_reasons:
                text += f" ({format_counts(self.startup_reasons)})"
        if self.late:
            text += f", late messages {format_counts(self.late)}"
        return text + (f"; {self.reason}" if self.reason else "")


def format_counts(counter: dict[str, int]) -> str:
    """{"camera:missing": 3, "state:stale": 1} -> "camera:missing 3, state:stale 1"."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


@dataclass
class _Episode:
    report: EpisodeReport
    t0_ns: int
    end_ns: int | None = None
    first_ns: int | None = None
    sink_started: bool = False
    gap: int = 0  # dropped samples since the last frame
    late_before: dict[str, int] = field(default_factory=dict)  # sampler late counts at start
    future: Future = field(default_factory=Future)


@dataclass
class _Queued:
    """A start that came while the last episode was still being sampled to its end."""

    t0_ns: int
    task: str
    owner: str
    end_ns: int | None = None  # a save that came before it could begin


@dataclass
class SessionStatus:
    state: str  # idle | recording | ending
    saved: int = 0  # episodes saved by this session
    current: EpisodeReport | None = None  # the episode being recorded (live, do not modify)
    last: EpisodeReport | None = None  # the last finished one


class RecorderSession:
    """The episode state machine around a Sampler and a FrameSink (see the module doc)."""

    def __init__(self, config: SessionConfig, sampler: Sampler, sink: FrameSink,
                 on_report: Callable[[EpisodeReport], None]) -> None:
        self.config = config
        self._sampler = sampler
        self._sink = sink
        self._on_report = on_report
        self._lock = threading.RLock()
        self._ep: _Episode | None = None
        self._queued: _Queued | None = None
        self._saved = 0
        self._last: EpisodeReport | None = None

    # ------------------------------------------------------------------ requests

    def start(self, t0_ns: int, task: str, now_ns: int, owner: str) -> tuple[bool, str]:
        """Begin an episode whose dataset clock starts at t0_ns."""
        with self._lock:
            if not task.strip():
                return False, "no task: set the task first"
            ep = self._ep
            if ep is not None and ep.end_ns is None:
                return False, f"already recording ({ep.report.owner})"
            if ep is not None:
                if t0_ns < ep.end_ns or self._queued is not None:
                    return False, f"the last episode ({ep.report.owner}) is still being saved"
                self._queued = _Queued(t0_ns, task, owner)
                return True, "queued: starts once the last episode is sampled to its end"
            earliest = self._sampler.earliest_start_ns(now_ns)
            if t0_ns < earliest:
                return False, (f"the start lies {(now_ns - t0_ns) / NS:.2f} s back, beyond what "
                               f"the buffers hold; not recording this one")
            self._begin(t0_ns, task, owner, now_ns)
            return True, f"recording ({owner}) from t = {t0_ns / NS:.3f}"

    def save(self, t_end_ns: int, owner: str | None = None) -> tuple[bool, str, Future | None]:
        """End the episode at t_end_ns and save it once sampled that far. The future resolves
        to its EpisodeReport. owner=None acts on any episode."""
        with self._lock:
            queued = self._queued
            if queued is not None and owner == queued.owner and queued.end_ns is None:
                queued.end_ns = t_end_ns  # its grid has not begun yet: it ends on arrival
                return True, f"saving ({owner}) once it has begun", None
            problem = self._check_owner(owner)
            if problem:
                return False, problem, None
            ep = self._ep
            if ep.end_ns is not None:
                return False, "this episode is already being saved", None
            ep.end_ns = max(t_end_ns, ep.t0_ns)
            ep.report.end_s = ep.end_ns / NS
            return True, f"saving ({ep.report.owner}) up to t = {ep.end_ns / NS:.3f}", ep.future

    def discard(self, reason: str, owner: str | None = None) -> tuple[bool, str]:
        with self._lock:
            queued = self._queued
            if queued is not None and owner == queued.owner:
                self._queued = None  # never begun: nothing to write or report
                return True, f"dropped the queued start ({owner}): {reason}"
            problem = self._check_owner(owner)
            if problem:
                return False, problem
            ep = self._ep
            if ep.end_ns is not None:
                return False, "this episode is already being saved"
            self._sampler.stop()
            self._count_late(ep)
            if ep.sink_started:
                self._sink.discard()
            self._finish(ep, "discarded", reason)
            return True, f"discarded ({ep.report.owner}): {reason}"

    def tick(self, now_ns: int, force: bool = False) -> None:
        """Decide due samples, hand frames to the sink, finish an ending episode."""
        with self._lock:
            ep = self._ep
            if ep is None:
                return
            self._account(ep, self._sampler.poll(now_ns, ep.end_ns, force=force))
            if ep.end_ns is not None and self._sampler.next_time_ns() > ep.end_ns:
                self._finalize(ep, now_ns)

    def shutdown(self, now_ns: int) -> None:
        """At exit: an episode being saved is sampled to its end with what has arrived and
        saved; one still recording is discarded (nobody asked to keep it)."""
        with self._lock:
            if self._ep is not None and self._ep.end_ns is not None:
                self._queued = None
                self.tick(now_ns, force=True)
            if self._ep is not None:
                self.discard("recorder shut down before the episode was saved")

    def status(self) -> SessionStatus:
        with self._lock:
            ep = self._ep
            if ep is None:
                return SessionStatus("idle", self._saved, None, self._last)
            return SessionStatus("ending" if ep.end_ns is not None else "recording", self._saved,
                                 ep.report, self._last)

    # ------------------------------------------------------------------ internals

    def _check_owner(self, owner: str | None) -> str:
        if self._ep is None:
            return "no episode is recording"
        if owner is not None and owner != self._ep.report.owner:
            return f"the episode recording was started by {self._ep.report.owner}, not {owner}"
        return ""

    def _begin(self, t0_ns: int, task: str, owner: str, now_ns: int) -> None:
        t0_ns = max(t0_ns, self._sampler.earliest_start_ns(now_ns))
        self._sampler.begin(t0_ns, now_ns)
        self._ep = _Episode(EpisodeReport(owner=owner, task=task, fps=self.config.fps,
                                          start_s=t0_ns / NS), t0_ns,
                            late_before=self._sampler.late_counts())

    def _account(self, ep: _Episode, result: PollResult) -> None:
        for _ in range(result.overrun):
            ep.report.samples += 1
            self._drop(ep, [OVERRUN])
        for sample in result.samples:
            ep.report.samples += 1
            ep.report.max_lag_s = max(ep.report.max_lag_s, sample.lag_s)
            if not sample.complete:
                self._drop(ep, [f"{k}:{v}" for k, v in sorted(sample.problems.items())])
                continue
            if not ep.sink_started:
                self._sink.start(ep.report.task)
                ep.sink_started = True
            if not self._sink.frame(self._frame(sample)):
                self._drop(ep, [BACKLOG])
                continue
            self._accept(ep, sample)

    def _drop(self, ep: _Episode, reasons: list[str]) -> None:
        r = ep.report
        if ep.first_ns is None:
            r.startup_skipped += 1
            r.startup_reasons.update(reasons)
            return
        r.dropped += 1
        r.dropped_by_reason.update(reasons)
        ep.gap += 1

    def _accept(self, ep: _Episode, sample: Sample) -> None:
        r = ep.report
        if ep.first_ns is None:
            ep.first_ns = sample.time_ns
            r.first_frame_s = sample.time_ns / NS
        # the frame is stored at r.frames / fps after the first one; it was sampled at:
        offset = (sample.time_ns - ep.first_ns) / NS
        r.max_timing_error_s = max(r.max_timing_error_s, abs(offset - r.frames / self.config.fps))
        for name, age in sample.ages_s.items():
            r.max_age_s[name] = max(r.max_age_s.get(name, 0.0), age)
        r.frames += 1
        ep.gap = 0

    def _frame(self, sample: Sample) -> Frame:
        v = sample.values
        return Frame(state=v[STATE_STREAM], action=v[ACTION_STREAM],
                     env_state=v[OBJECTS_STREAM] if self.config.has_objects else None,
                     images={c: v[image_stream(c)] for c in self.config.cameras},
                     time_s=sample.time_ns / NS)

    def _finalize(self, ep: _Episode, now_ns: int) -> None:
        """The episode is sampled to its end: save it (or say why not), then go on."""
        self._sampler.stop()
        r = ep.report
        self._count_late(ep)
        if r.frames == 0:
            if ep.sink_started:
                self._sink.discard()
            self._finish(ep, "empty", "no complete sample: nothing written")
        elif r.max_timing_error_s > self.config.max_timing_error_s:
            r.degraded = True
            reason = (f"max timing error {r.max_timing_error_s * 1e3:.1f} ms > "
                      f"{self.config.max_timing_error_s * 1e3:.1f} ms")
            if self.config.on_timing_error == "discard":
                self._sink.discard()
                self._finish(ep, "discarded", reason)
            else:
                self._save(ep, reason + " (kept: on_timing_error=keep)")
        else:
            self._save(ep, "")
        if self._ep is None and self._queued is not None:
            queued, self._queued = self._queued, None
            self._begin(queued.t0_ns, queued.task, queued.owner, now_ns)
            if queued.end_ns is not None:
                self.save(queued.end_ns, queued.owner)

    def _count_late(self, ep: _Episode) -> None:
        before = ep.late_before
        ep.report.late = {k: v - before.get(k, 0) for k, v in self._sampler.late_counts().items()
                          if v > before.get(k, 0)}

    def _save(self, ep: _Episode, reason: str) -> None:
        r = ep.report

        def done(saved: SavedEpisode | None, error: BaseException | None) -> None:
            # runs on the sink's thread once the episode is durable (or failed)
            if error is not None:
                r.outcome, r.reason = "failed", f"save failed: {error}"
            else:
                r.outcome, r.reason = "saved", reason
                r.episode_index, r.save_s = saved.episode_index, saved.save_s
                r.encode_wait_s, r.encoder_blocked_s = saved.encode_wait_s, saved.encoder_blocked_s
                with self._lock:
                    self._saved += 1
            self._publish(ep)

        self._ep = None
        self._sink.save(done)

    def _finish(self, ep: _Episode, outcome: str, reason: str) -> None:
        ep.report.outcome, ep.report.reason = outcome, reason
        self._ep = None
        self._publish(ep)

    def _publish(self, ep: _Episode) -> None:
        with self._lock:
            self._last = ep.report
        try:
            self._on_report(ep.report)
        finally:
            ep.future.set_result(ep.report)
