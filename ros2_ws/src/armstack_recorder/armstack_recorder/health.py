"""Diagnostics of the recorder (no ROS): the episode being recorded and the input streams.

"recorder: episode" says what is being recorded and whether it is healthy: drops so far
(WARN), a timing error past the limit (ERROR: the episode will be discarded or flagged), the
writer backlog filling up (WARN: encoding or disk cannot keep up), a start that has not seen
one complete sample for a second (WARN, with the reasons).
"recorder: inputs" gives each stream's rate (of its stamps), stamp-to-arrival latency and
buffer size, and WARNs when, in the last period, messages could not be converted (invalid),
came too late for their samples, were stamped ahead of this clock (future), were evicted from
a full buffer, or (while recording) did not come at all.
"""

from __future__ import annotations

from armstack_common.diagnostics import DiagnosticReport, Level

from armstack_recorder.sampler import StreamCounters
from armstack_recorder.session import SessionConfig, SessionStatus, format_counts

_EVENTS = ("invalid", "late", "future", "evicted")


class RecorderHealth:
    def __init__(self, name: str, config: SessionConfig, max_pending_frames: int) -> None:
        self._name = name
        self._config = config
        self._max_pending = max_pending_frames
        self._previous: dict[str, dict[str, int]] = {}

    def episode_report(self, status: SessionStatus, pending_frames: int,
                       dataset_episodes: int) -> DiagnosticReport:
        report = DiagnosticReport(f"{self._name}: episode")
        report.add("state", status.state)
        report.add("dataset_episodes", dataset_episodes)
        report.add("saved_this_run", status.saved)
        report.check_max("writer_pending_frames", pending_frames, warn=self._max_pending / 2,
                         error=self._max_pending - 1)
        ep = status.current
        if ep is not None:
            report.add("owner", ep.owner)
            report.add("task", ep.task)
            report.add("frames", ep.frames)
            report.add("dropped", ep.dropped)
            report.add("startup_skipped", ep.startup_skipped)
            report.add("max_loop_lag_s", ep.max_lag_s)
            limit = self._config.max_timing_error_s
            report.check_max("max_timing_error_s", ep.max_timing_error_s, warn=limit,
                             error=limit, units=" s")
            if ep.dropped:
                report.raise_to(Level.WARN, f"dropped {ep.dropped} samples "
                                f"({format_counts(ep.dropped_by_reason)})")
            if ep.frames == 0 and ep.startup_skipped >= self._config.fps:
                report.raise_to(Level.WARN, f"no complete sample for "
                                f"{ep.startup_skipped / self._config.fps:.1f} s "
                                f"({format_counts(ep.startup_reasons)})")
        if status.last is not None:
            report.add("last_episode", status.last.summary())
            if status.last.outcome == "failed":
                report.raise_to(Level.ERROR, f"last save failed: {status.last.reason}")
        return report

    def inputs_report(self, counters: dict[str, StreamCounters], buffered: dict[str, int],
                      recording: bool) -> DiagnosticReport:
        report = DiagnosticReport(f"{self._name}: inputs")
        for name, c in counters.items():
            report.add(f"{name}.buffered", buffered.get(name, 0))
            before = self._previous.get(name, {"received": 0, **{e: 0 for e in _EVENTS}})
            now = {"received": c.received, **{e: getattr(c, e) for e in _EVENTS}}
            self._previous[name] = now
            latency = c.latency_s.summary()
            report.add(f"{name}.rate_hz", c.rate.rate_hz())
            report.add(f"{name}.latency_ms_median", latency["median"] * 1e3)
            report.add(f"{name}.latency_ms_max", latency["max"] * 1e3)
            for event in _EVENTS:
                report.add(f"{name}.{event}", now[event])
                new = now[event] - before[event]
                if new:
                    report.raise_to(Level.WARN, f"{name}: {new} {event} message(s)")
            if recording and now["received"] == before["received"]:
                report.raise_to(Level.WARN, f"{name}: no message since the last report")
        return report
