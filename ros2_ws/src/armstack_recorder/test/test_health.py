"""Recorder diagnostics: what raises WARN/ERROR and what is reported."""

from __future__ import annotations

from collections import Counter

from armstack_common.diagnostics import Level
from armstack_recorder.health import RecorderHealth
from armstack_recorder.sampler import StreamCounters
from armstack_recorder.session import EpisodeReport, SessionConfig, SessionStatus

CONFIG = SessionConfig(fps=30, max_timing_error_s=0.1)


def episode(**fields) -> EpisodeReport:
    return EpisodeReport(owner="service", task="stack", fps=30, start_s=0.0, **fields)


def test_a_clean_recording_is_ok_and_says_what_it_records():
    health = RecorderHealth("recorder", CONFIG, max_pending_frames=100)
    report = health.episode_report(SessionStatus("recording", 2, episode(frames=40)), 3, 7)
    assert report.level == Level.OK
    assert report.values["frames"] == "40" and report.values["dataset_episodes"] == "7"
    assert report.values["saved_this_run"] == "2" and report.values["owner"] == "service"


def test_drops_warn_and_a_timing_error_past_the_limit_is_an_error():
    health = RecorderHealth("recorder", CONFIG, max_pending_frames=100)
    ep = episode(frames=40, dropped=2, dropped_by_reason=Counter({"image.color:stale": 2}),
                 max_timing_error_s=0.067)
    report = health.episode_report(SessionStatus("recording", 0, ep), 0, 0)
    assert report.level == Level.WARN and "image.color:stale 2" in report.message
    ep.max_timing_error_s = 0.2
    assert health.episode_report(SessionStatus("recording", 0, ep), 0, 0).level == Level.ERROR


def test_a_start_without_a_complete_sample_and_a_filling_backlog_warn():
    health = RecorderHealth("recorder", CONFIG, max_pending_frames=100)
    ep = episode(startup_skipped=45, startup_reasons=Counter({"objects:missing": 45}))
    report = health.episode_report(SessionStatus("recording", 0, ep), 60, 0)
    assert report.level == Level.WARN
    assert "no complete sample for 1.5 s (objects:missing 45)" in report.message
    assert "writer_pending_frames" in report.message


def test_a_failed_save_is_an_error_until_the_next_episode_ends():
    health = RecorderHealth("recorder", CONFIG, max_pending_frames=100)
    failed = episode(outcome="failed", reason="save failed: disk full")
    report = health.episode_report(SessionStatus("idle", 0, None, failed), 0, 0)
    assert report.level == Level.ERROR and "disk full" in report.message


def test_input_events_warn_once_per_period_and_silence_warns_while_recording():
    health = RecorderHealth("recorder", CONFIG, max_pending_frames=100)
    counters = {"state": StreamCounters(received=100), "image.color": StreamCounters(received=60)}
    first = health.inputs_report(counters, {"state": 3, "image.color": 2}, recording=True)
    assert first.level == Level.OK and first.values["state.buffered"] == "3"
    counters["state"].received, counters["state"].late = 150, 2
    counters["image.color"].received = 60  # nothing new
    second = health.inputs_report(counters, {}, recording=True)
    assert second.level == Level.WARN
    assert "state: 2 late message(s)" in second.message
    assert "image.color: no message since the last report" in second.message
    counters["state"].received = counters["image.color"].received = 200
    assert health.inputs_report(counters, {}, recording=True).level == Level.OK
    assert health.inputs_report(counters, {}, recording=False).level == Level.OK
