"""RecorderSession: episodes on the dataset clock, drops, timing policy, ownership; and the
teleop episode contract (TeleopFollower)."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_recorder.sampler import NS, Sampler, SamplerConfig, StreamConfig
from armstack_recorder.session import (
    ACTION_STREAM,
    STATE_STREAM,
    Frame,
    RecorderSession,
    SavedEpisode,
    SessionConfig,
)
from armstack_recorder.teleop_follow import TeleopFollower, TeleopStatus

MS = 1_000_000
T0 = 1_700_000_000 * NS
FPS = 30


class FakeSink:
    """Records what the session asks of the writer; saves at once; optional capacity."""

    def __init__(self, capacity: int = 10**9) -> None:
        self.events: list[tuple] = []
        self.frames: list[Frame] = []
        self.capacity = capacity
        self._episode = -1

    def start(self, task: str) -> None:
        self.events.append(("start", task))

    def frame(self, frame: Frame) -> bool:
        if len(self.frames) >= self.capacity:
            return False
        self.frames.append(frame)
        return True

    def save(self, on_done) -> None:
        self._episode += 1
        self.events.append(("save", len(self.frames)))
        on_done(SavedEpisode(self._episode, len(self.frames), 0.01, 0.0, 0.0), None)

    def discard(self) -> None:
        self.events.append(("discard",))


class Rig:
    """A session over a real sampler (state + action) with a fake sink; time in ms from T0."""

    def __init__(self, max_timing_error_s: float = 0.1, on_timing_error: str = "discard",
                 capacity: int = 10**9, max_lag_s: float = 0.5, warmup_ms: int = 100) -> None:
        streams = (StreamConfig(STATE_STREAM, 0.05), StreamConfig(ACTION_STREAM, 0.05))
        self.sampler = Sampler(SamplerConfig(fps=FPS, streams=streams, delay_s=0.05,
                                             max_lag_s=max_lag_s))
        self.sink = FakeSink(capacity)
        self.reports = []
        self.session = RecorderSession(
            SessionConfig(fps=FPS, has_objects=False, max_timing_error_s=max_timing_error_s,
                          on_timing_error=on_timing_error),
            self.sampler, self.sink, self.reports.append)
        self.now_ms = 0
        self.run(warmup_ms)

    def run(self, until_ms: int, action_gaps: tuple[tuple[int, int], ...] = (),
            tick_ms: int = 10) -> None:
        """Publish state and action at 100 Hz (value = stamp in ms), none of the action inside
        the gaps, tick the session every tick_ms, up to until_ms."""
        while self.now_ms < until_ms:
            self.now_ms += 1
            t = self.now_ms
            if t % 10 == 0:
                stamp = T0 + t * MS
                self.sampler.add(STATE_STREAM, stamp, np.array([t], np.float32), stamp + MS)
                if not any(a <= t < b for a, b in action_gaps):
                    self.sampler.add(ACTION_STREAM, stamp, np.array([-t], np.float32), stamp + MS)
            if t % tick_ms == 0:
                self.session.tick(self.ns())

    def ns(self, ms: int | None = None) -> int:
        return T0 + (self.now_ms if ms is None else ms) * MS


def ticks(start_ms: int, end_ms: float) -> list[float]:
    """Dataset clock ticks (ms from T0) of a grid started at start_ms, up to end_ms."""
    out, k = [], 0
    while (t := start_ms + (k * NS // FPS) / MS) <= end_ms:
        out.append(t)
        k += 1
    return out


def test_an_episode_starts_at_its_first_complete_sample_and_saves_with_its_report():
    rig = Rig(warmup_ms=0)
    rig.run(100, action_gaps=((0, 200),))  # state only until 200 ms
    ok, _ = rig.session.start(rig.ns(100), "stack", rig.ns(), "service")
    assert ok
    rig.run(1100, action_gaps=((0, 200),))
    ok, _, future = rig.session.save(rig.ns(1100))
    assert ok and not future.done()
    rig.run(1200)
    report = future.result(timeout=0)
    assert report is rig.reports[0] and report.outcome == "saved" and report.episode_index == 0
    # ticks at 100 + k * 33.3 ms up to 1100 ms: 31; those before 200 ms lack the action
    assert report.samples == 31 and report.startup_skipped == 3
    assert dict(report.startup_reasons) == {"action:missing": 3}
    assert "3 skipped at the start (action:missing 3)" in report.summary()
    assert report.frames == 28 and report.dropped == 0 and report.max_timing_error_s < 1e-9
    assert report.effective_rate_hz == pytest.approx(28 * FPS / 31)
    assert rig.sink.events == [("start", "stack"), ("save", 28)]
    first = rig.sink.frames[0]
    assert first.time_s == pytest.approx((T0 + 200 * MS) / NS)
    # each frame holds the latest values stamped at or before its tick
    for frame in rig.sink.frames:
        tick_ms = round(frame.time_s * 1e3 - T0 / MS)
        assert frame.state[0] == tick_ms // 10 * 10 and frame.action[0] == -frame.state[0]
    assert report.max_age_s[STATE_STREAM] <= 0.01 + 1e-9
    assert report.to_dict()["frames"] == 28


def test_samples_dropped_mid_episode_shift_the_frames_and_say_by_how_much():
    rig = Rig(max_timing_error_s=0.5)
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(2000, action_gaps=((500, 700),))  # the last action before 700 ms is at 490 ms
    _, _, future = rig.session.save(rig.ns())
    rig.run(2100)
    report = future.result(timeout=0)
    grid = ticks(100, 2000)
    stale = [t for t in grid if 540 < t < 700]  # older than the 50 ms max age
    assert report.samples == len(grid) and report.dropped == len(stale) == 4
    assert dict(report.dropped_by_reason) == {"action:stale": 4}
    assert report.frames == len(grid) - 4 and report.outcome == "saved" and not report.degraded
    assert report.max_timing_error_s == pytest.approx(4 / FPS, abs=1e-6)
    summary = report.summary()
    assert "4 dropped (action:stale 4)" in summary and "133.3 ms" in summary


@pytest.mark.parametrize("policy", ["discard", "keep"])
def test_an_episode_past_the_timing_error_limit_is_discarded_or_kept_flagged(policy):
    rig = Rig(max_timing_error_s=0.1, on_timing_error=policy)
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(1500, action_gaps=((500, 700),))  # 4 drops: 133 ms > 100 ms
    _, _, future = rig.session.save(rig.ns())
    rig.run(1600)
    report = future.result(timeout=0)
    assert report.degraded and "133.3 ms > 100.0 ms" in report.reason
    if policy == "discard":
        assert report.outcome == "discarded" and rig.sink.events[-1] == ("discard",)
    else:
        assert report.outcome == "saved" and rig.sink.events[-1][0] == "save"


def test_an_episode_without_a_complete_sample_writes_nothing():
    rig = Rig(warmup_ms=0)
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(500, action_gaps=((0, 10_000),))
    _, _, future = rig.session.save(rig.ns())
    rig.run(600, action_gaps=((0, 10_000),))
    report = future.result(timeout=0)
    assert report.outcome == "empty" and report.frames == 0
    assert report.startup_skipped == len(ticks(0, 500)) == 16
    assert rig.sink.events == []


def test_requests_are_refused_with_reasons_and_owners_are_respected():
    rig = Rig()
    rig.run(100)
    s = rig.session
    assert s.save(rig.ns())[1] == "no episode is recording"
    assert s.start(rig.ns(), " ", rig.ns(), "service") == (False, "no task: set the task first")
    ok, text = s.start(rig.ns(-600), "stack", rig.ns(), "service")
    assert not ok and "beyond what the buffers hold" in text
    assert s.start(rig.ns(), "stack", rig.ns(), "teleop take 1")[0]
    assert s.start(rig.ns(), "stack", rig.ns(), "service") == \
        (False, "already recording (teleop take 1)")
    ok, text = s.discard("no", owner="teleop take 2")
    assert not ok and "started by teleop take 1" in text
    assert s.status().state == "recording"
    ok, _ = s.discard("operator", owner=None)  # the services may end any episode
    assert ok and rig.reports[-1].outcome == "discarded" and rig.reports[-1].reason == "operator"
    assert s.status().state == "idle" and s.status().last is rig.reports[-1]


def test_a_start_while_the_last_episode_is_saved_is_queued_behind_its_save():
    rig = Rig()
    rig.session.start(rig.ns(), "first", rig.ns(), "teleop take 1")
    rig.run(500)
    assert rig.session.save(rig.ns(), owner="teleop take 1")[0]
    ok, text = rig.session.start(rig.ns(), "second", rig.ns(), "teleop take 2")
    assert ok and text.startswith("queued")
    assert rig.session.discard("x", owner="teleop take 1")[1] == \
        "this episode is already being saved"
    rig.run(1000)
    first = len(ticks(100, 500))
    assert [e[0] for e in rig.sink.events] == ["start", "save", "start"]
    assert rig.sink.events[1] == ("save", first) and rig.reports[0].task == "first"
    second = rig.sink.frames[first]
    assert second.time_s == pytest.approx((T0 + 500 * MS) / NS)
    assert rig.session.status().state == "recording"
    assert rig.session.status().current.owner == "teleop take 2"


def test_a_queued_take_can_be_saved_or_dropped_before_it_begins():
    rig = Rig()
    s = rig.session
    s.start(rig.ns(), "stack", rig.ns(), "teleop take 1")
    rig.run(500)
    s.save(rig.ns(), owner="teleop take 1")
    assert s.start(rig.ns(), "stack", rig.ns(), "teleop take 2")[0]
    rig.run(530)  # take 1 is decided at 550 ms: take 2 has not begun when it ends
    assert s.save(rig.ns(), owner="teleop take 2")[1] == "saving (teleop take 2) once it has begun"
    rig.run(700)
    assert [(r.owner, r.outcome, r.frames) for r in rig.reports] == \
        [("teleop take 1", "saved", len(ticks(100, 500))), ("teleop take 2", "saved", 1)]
    s.start(rig.ns(), "stack", rig.ns(), "teleop take 3")
    rig.run(900)
    s.save(rig.ns(), owner="teleop take 3")
    s.start(rig.ns(), "stack", rig.ns(), "teleop take 4")
    ok, text = s.discard("teleop: take discarded", owner="teleop take 4")
    assert ok and text.startswith("dropped the queued start")
    rig.run(1200)
    assert [r.owner for r in rig.reports] == ["teleop take 1", "teleop take 2", "teleop take 3"]
    assert s.status().state == "idle"


def test_a_full_writer_backlog_drops_samples_and_counts_them():
    rig = Rig(max_timing_error_s=10.0, capacity=10)
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(1000)
    status = rig.session.status().current
    decided = len(ticks(100, 950))
    assert status.frames == 10 and status.dropped == decided - 10
    assert dict(status.dropped_by_reason) == {"writer:backlog": decided - 10}


def test_a_stalled_loop_drops_overrun_samples_and_reports_its_lag():
    rig = Rig(max_timing_error_s=10.0, max_lag_s=0.2)
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(400)
    rig.run(1400, tick_ms=1000)  # one tick at 1000 ms after 600 ms without any
    report = rig.session.status().current
    # decided by 400 ms: ticks up to 350 ms; at 1000 ms those before 750 ms are too old
    overrun = [t for t in ticks(100, 1000) if 350 < t < 750]
    assert report.dropped_by_reason["recorder:overrun"] == len(overrun) == 12
    assert report.frames == len(ticks(100, 950)) - 12
    assert report.max_lag_s == pytest.approx(0.2, abs=1 / FPS)


def test_shutdown_saves_an_ending_episode_and_discards_a_recording_one():
    rig = Rig()
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(300)
    rig.session.save(rig.ns())
    rig.session.shutdown(rig.ns())  # before the delay passed: decided with what arrived
    assert rig.reports[-1].outcome == "saved"
    assert rig.reports[-1].frames == len(ticks(100, 300)) == 7
    rig.session.start(rig.ns(), "stack", rig.ns(), "service")
    rig.run(600)
    rig.session.shutdown(rig.ns())
    assert rig.reports[-1].outcome == "discarded"
    assert "shut down" in rig.reports[-1].reason and rig.sink.events[-1] == ("discard",)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="on_timing_error"):
        SessionConfig(fps=30, on_timing_error="ignore")
    with pytest.raises(ValueError, match="max_timing_error_s"):
        SessionConfig(fps=30, max_timing_error_s=-1.0)


# ---------------------------------------------------------------------- the teleop contract


def status(state: str, take: int, outcome: str = "", start: int = 0, end: int = 0,
           task: str = "stack the cubes") -> TeleopStatus:
    return TeleopStatus(state=state, task=task, take=take, outcome=outcome,
                        take_start_ns=start or take * 100 * NS, take_end_ns=end)


def kinds(commands) -> list[tuple]:
    return [(c.kind, c.owner, c.time_ns) for c in commands]


def test_follower_saves_and_discards_takes_as_teleop_says():
    f = TeleopFollower()
    assert f.update(status("idle", 0)) == []
    starts = f.update(status("recording", 1))
    assert kinds(starts) == [("start", "teleop take 1", 100 * NS)]
    assert starts[0].task == "stack the cubes"
    assert f.update(status("recording", 1)) == []  # the same state again (a re-delivery)
    assert kinds(f.update(status("idle", 1, "saved", end=150 * NS))) == \
        [("save", "teleop take 1", 150 * NS)]
    f.update(status("recording", 2))
    discard = f.update(status("idle", 2, "discarded", end=230 * NS))
    assert [(c.kind, c.reason) for c in discard] == [("discard", "teleop: take discarded")]
    f.update(status("recording", 3))
    # end_session during a take: finished, the take counted as discarded
    assert [c.kind for c in f.update(status("finished", 3, "discarded"))] == ["discard"]
    assert f.update(status("finished", 3, "discarded")) == []


def test_follower_discards_a_take_whose_end_it_missed():
    f = TeleopFollower()
    f.update(status("recording", 1))
    commands = f.update(status("recording", 3))  # take 1's end and take 2 never arrived
    assert [(c.kind, c.owner) for c in commands] == [("discard", "teleop take 1"),
                                                     ("start", "teleop take 3")]
    assert "missed the end of take 1" in commands[0].reason
    assert [c.owner for c in f.update(status("idle", 4, "saved"))] == ["teleop take 3"]


def test_follower_tells_takes_apart_by_their_start_across_teleop_sessions():
    f = TeleopFollower()
    f.update(status("recording", 1, start=100 * NS))
    f.update(status("idle", 1, "saved", start=100 * NS, end=110 * NS))
    # a new teleop session numbers its takes from 1 again
    assert kinds(f.update(status("recording", 1, start=500 * NS))) == \
        [("start", "teleop take 1", 500 * NS)]
