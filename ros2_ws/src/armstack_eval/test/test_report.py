"""Aggregation of hand-made episodes and the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from armstack_eval.episode import EpisodeLog, EpisodeResult, Traces, summarize
from armstack_eval.metrics import STAGES
from armstack_eval.report import aggregate, summary_lines, write_report


def _episode(index: int, success: bool, time_to_success: float | None, total_ms: list[float],
             policy_jitter: tuple[str, str] | None = None, faults: list[str] | None = None) -> EpisodeResult:
    latency = {stage: [] for stage in STAGES}
    latency["total"] = total_ms
    latency["detection"] = [20.0 + index]
    diagnostics = {}
    if policy_jitter is not None:
        diagnostics["policy: policy"] = {"control_jitter_ms_median": policy_jitter[0],
                                         "control_jitter_ms_p99": policy_jitter[1], "inference_ms_median": "nan"}
    return EpisodeResult(
        index=index, controller="policy", seed=index + 1, scene=index + 1, success=success,
        end_reason="success" if success else "timeout", duration_s=time_to_success or 60.0,
        time_to_success_s=time_to_success, in_bin={"red_cube": success}, sim_time_s=10.0,
        jerk={"rms": 100.0 * (index + 1), "p99": 300.0, "max": 500.0 * (index + 1), "count": 10},
        command_period_ms=20.0, latency_ms=latency, command_jitter_ms=[0.1 * index, 0.2],
        diagnostics=diagnostics, faults=faults or [])


@pytest.fixture
def episodes() -> list[EpisodeResult]:
    return [
        _episode(0, True, 10.0, [40.0, 50.0], ("0.5", "2.0")),
        _episode(1, False, None, [60.0], ("0.7", "9.0"), faults=["driver: motion: stopped"]),
        _episode(2, True, 20.0, [45.0], ("0.6", "3.0")),
        _episode(3, True, 12.0, list(np.linspace(30.0, 130.0, 101))),
    ]


def test_success_rate_and_time_to_completion_count_successes_only(episodes):
    summary = aggregate(episodes)
    assert summary["episodes"] == 4 and summary["successes"] == 3
    assert summary["success_rate"] == pytest.approx(0.75)
    assert summary["end_reasons"] == {"success": 3, "timeout": 1}
    ttc = summary["time_to_completion_s"]
    assert ttc["count"] == 3 and ttc["median"] == 12.0 and ttc["max"] == 20.0


def test_latency_pools_the_samples_of_all_episodes(episodes):
    pooled = [40.0, 50.0, 60.0, 45.0, *np.linspace(30.0, 130.0, 101)]
    total = aggregate(episodes)["latency_ms"]["total"]
    assert total["count"] == 105
    assert total["median"] == pytest.approx(np.median(pooled))
    assert total["p99"] == pytest.approx(np.percentile(pooled, 99))
    assert aggregate(episodes)["latency_ms"]["ik"]["count"] == 0


def test_window_summaries_from_diagnostics_aggregate_conservatively(episodes):
    diag = aggregate(episodes)["diagnostics"]
    assert diag["policy_control_jitter_ms_median"] == pytest.approx(0.6)  # of 0.5, 0.7, 0.6
    assert diag["policy_control_jitter_ms_p99"] == 9.0  # the worst episode's p99
    assert diag["policy_inference_ms_median"] is None  # only NaN reported
    assert diag["driver_loop_jitter_ms_median"] is None


def test_missed_periods_are_the_policy_counts_growth_per_minute_of_its_reports():
    log = EpisodeLog()
    log.open(0.0, "joint_command")
    log.diagnostic("policy: policy", 100.0, False, "", {"missed_periods": "40"})  # before: not counted
    log.diagnostic("driver: loop", 100.5, False, "", {"missed_periods": "999"})  # not the policy's
    log.diagnostic("policy: policy", 130.0, False, "", {"missed_periods": "52"})
    measured, _ = summarize(log.close(), 0.0)
    assert measured["policy_missed_periods"] == {"count": 12.0, "span_s": 30.0}
    # a policy node that restarted mid-episode counts again from 0: its count is all new
    log.open(0.0, "joint_command")
    log.diagnostic("policy: policy", 0.0, False, "", {"missed_periods": "52"})
    log.diagnostic("policy: policy", 30.0, False, "", {"missed_periods": "3"})
    assert summarize(log.close(), 0.0)[0]["policy_missed_periods"] == {"count": 3.0, "span_s": 30.0}
    log.open(0.0, "joint_command")  # one report: nothing to count
    log.diagnostic("policy: policy", 0.0, False, "", {"missed_periods": "52"})
    assert summarize(log.close(), 0.0)[0]["policy_missed_periods"] is None

    episodes = [_episode(0, True, 10.0, [40.0]), _episode(1, True, 12.0, [41.0]),
                _episode(2, True, 11.0, [42.0])]
    episodes[0].policy_missed_periods = {"count": 12.0, "span_s": 30.0}
    episodes[1].policy_missed_periods = {"count": 3.0, "span_s": 60.0}
    missed = aggregate(episodes)["policy_missed_periods"]
    assert missed == {"count": 15.0, "minutes": 1.5, "per_minute": pytest.approx(10.0)}
    assert "policy missed control periods: 10.0 per minute (15 in 1.5 min)" in \
        "\n".join(summary_lines(aggregate(episodes)))
    assert aggregate(episodes[2:])["policy_missed_periods"]["per_minute"] is None


def test_jerk_and_faults(episodes):
    summary = aggregate(episodes)
    assert summary["jerk_rms_rad_s3"]["median"] == pytest.approx(250.0)
    assert summary["jerk_max_rad_s3"] == 2000.0
    assert summary["faults"] == ["episode 1: driver: motion: stopped"]


def test_summary_lines_name_every_stage(episodes):
    text = "\n".join(summary_lines(aggregate(episodes)))
    assert "success rate: 3/4 = 75 %" in text
    for stage in ("detection", "localization", "controller", "ik", "bus_write", "camera -> bus write"):
        assert stage in text
    assert "policy control-loop jitter" in text


def test_write_report_files(tmp_path, episodes):
    n = 50
    t = np.linspace(0.0, 1.0, n)
    traces = [Traces(command_t=t, command_q=np.zeros((n, 7)), state_t=t, state_q=np.ones((n, 7)),
                     ee_target_t=t, ee_target=np.zeros((n, 3)), jerk_t=t[3:], jerk=np.ones(n - 3))
              for _ in episodes]
    summary = write_report(tmp_path, episodes, traces, {"controller": "policy"})
    document = json.loads((tmp_path / "summary.json").read_text())
    assert document["summary"] == json.loads(json.dumps(summary))
    assert document["meta"] == {"controller": "policy"}
    assert [ep["index"] for ep in document["episodes"]] == [0, 1, 2, 3]
    assert document["episodes"][3]["latency_ms"]["total"]["count"] == 101
    for name in ("summary.md", "latency.png", "episodes.png", "traces_000.png", "traces/003.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | 2 | no | timeout |" in (tmp_path / "summary.md").read_text()
    assert np.load(tmp_path / "traces/000.npz")["state_q"].shape == (n, 7)
