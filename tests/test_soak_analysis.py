"""tools/soak_analysis.py: node processes from /proc, memory growth, missed control periods and
success over time (the soak run itself is tools/soak.py, run by hand: it takes 30 minutes)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time

import pytest

from graph import REPO

_spec = importlib.util.spec_from_file_location("soak_analysis", REPO / "tools" / "soak_analysis.py")
soak = importlib.util.module_from_spec(_spec)
sys.modules["soak_analysis"] = soak  # dataclasses resolve their module by name
_spec.loader.exec_module(soak)


@pytest.mark.parametrize("cmdline, name", [
    (["/work/.venv/bin/python", "/ws/install/armstack_sim/lib/armstack_sim/sim_node",
      "--ros-args"], "sim_node"),
    (["python3.11", "-m", "armstack_detector.detector_node", "--ros-args"], "detector_node"),
    (["/usr/bin/sleep", "30"], "sleep"),
    ([], "?"),
])
def test_process_name_skips_the_interpreter(cmdline, name):
    assert soak.process_name(cmdline) == name


def test_the_process_tree_is_found_and_measured():
    # A parent with two children: both found under it, named, with a resident set.
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, time; "
                               "ps = [subprocess.Popen(['sleep', '30']) for _ in range(2)]; "
                               "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10.0
        while len(soak.descendants(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        sample = soak.sample_tree(parent.pid, 1.0)
        assert set(sample.processes) == {"sleep", "sleep#2"}
        assert all(p.rss_mb > 0 and p.cpu_s >= 0 for p in sample.processes.values())
    finally:
        for pid in soak.descendants(parent.pid):
            subprocess.run(["kill", str(pid)], check=False)
        parent.kill()
        parent.wait()
    assert soak.read_process(parent.pid) is None  # gone: no sample, no error


def _samples(rss_by_t: list[tuple[float, dict[str, tuple[int, float, float]]]]):
    return [soak.Sample(t, {n: soak.ProcessSample(*v) for n, v in procs.items()})
            for t, procs in rss_by_t]


def test_memory_growth_is_fitted_after_the_warmup_on_the_last_process():
    # policy grows 10 MB/h; after a restart at 2 h its new process grows 2 MB/h. sim is flat
    # but for a warm-up jump in its first 10 minutes.
    hours = [i / 6 for i in range(25)]  # 0 .. 4 h every 10 min
    rows = []
    for h in hours:
        restarted = h >= 2.0
        policy = (2, 100 + 2 * (h - 2), 3600 * (h - 2) * 0.1) if restarted else (1, 100 + 10 * h,
                                                                              3600 * h * 0.1)
        sim = (3, 300.0 if h > 0.1 else 200.0, 3600 * h * 0.5)
        rows.append((h * 3600, {"policy_node": policy, "sim_node": sim}))
    trends = {m.name: m for m in soak.memory_trends(_samples(rows), warmup_s=1200)}
    assert trends["policy_node"].restarts == 1
    assert trends["policy_node"].growth_mb_per_h == pytest.approx(2.0)
    assert trends["policy_node"].rss_max_mb == pytest.approx(100 + 10 * 11 / 6)  # before 2 h
    assert trends["sim_node"].growth_mb_per_h == pytest.approx(0.0, abs=1e-9)
    assert trends["sim_node"].rss_start_mb == 300.0 and trends["sim_node"].rss_max_mb == 300.0
    assert trends["policy_node"].rss_start_mb == pytest.approx(100 + 10 * 2 / 6)  # at 20 min
    assert trends["sim_node"].cpu_percent == pytest.approx(50.0)
    assert soak.memory_trends([], 0.0) == []
    short = soak.memory_trends(_samples(rows[:2]), warmup_s=0.0)
    assert all(math.isnan(m.growth_mb_per_h) for m in short)  # two samples: no trend claimed


def test_missed_periods_per_episode_follow_counters_across_a_restart():
    diagnostics = [
        {"policy: policy": {"missed_periods": "3"}, "driver: loop": {"missed_cycles": "10"}},
        {"policy: policy": {"missed_periods": "5"}, "driver: loop": {"missed_cycles": "10"}},
        {"policy: policy": {"missed_periods": "1"}, "ik: ik": {"commands": "7"}},  # respawned
    ]
    assert soak.missed_per_episode(diagnostics) == [
        {"policy: policy/missed_periods": 3, "driver: loop/missed_cycles": 10},
        {"policy: policy/missed_periods": 2, "driver: loop/missed_cycles": 0},
        {"policy: policy/missed_periods": 1},
    ]


def test_windows_group_episodes_by_end_time_and_the_report_lists_everything():
    t0 = 1000.0
    rows = [soak.EpisodeRow(i, t0 + end, 20.0, ok, "success" if ok else "timeout",
                            {"policy: policy/missed_periods": m})
            for i, (end, ok, m) in enumerate([(30, True, 1), (200, False, 0), (250, True, 2),
                                              (700, True, 0)])]
    groups = soak.windows(rows, t0, minutes=5.0)
    assert [(w.start_min, w.episodes, w.successes) for w in groups] == [
        (0.0, 3, 2), (5.0, 0, 0), (10.0, 1, 1)]
    assert groups[0].missed == {"policy: policy/missed_periods": 3}
    assert math.isnan(groups[1].success_rate)
    trend = soak.MemoryTrend("policy_node", 100.0, 101.0, 102.0, 0.5, 0, 12.0)
    text = "\n".join(soak.report_lines([trend], rows, groups, duration_s=720.0))
    assert "4 episodes, 3 successful" in text
    assert "| policy_node | 100.0 | 101.0 | 102.0 | +0.50 | 0 | 12.0 |" in text
    assert "policy: policy/missed_periods: 3 in all (15.0 per hour)" in text
    assert "| 0 | 3 | 67% | 3 |" in text and "| 5 | 0 | - | 0 |" in text
    assert "Episode ends: success 3, timeout 1" in text
