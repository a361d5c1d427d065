"""Whole graph: one scripted-expert episode through sim + motion (+ perception when its
detector model exists) with the episode runner, then the report.

The expert drives the same topics a policy does (ee_command -> IK -> joint_command -> driver
over the simulator's pty), so this exercises the runner's whole path: launch, readiness, the
episode, per-stage latency from the stamps, and every report file. Success of the episode is
printed, not asserted: on a loaded machine the arm may miss a grasp; the report must be
complete either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graph import REPO, unique_domain_id

pytest.importorskip("rclpy")

DETECTOR = REPO / "models" / "detector" / "detector.onnx"
STAGES = ("detection", "localization", "controller", "ik", "bus_write", "total")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    tmp = tmp_path_factory.mktemp("eval_tmp")  # where the run makes its temporary files
    args = [sys.executable, "-m", "armstack_eval.evaluate", "--controller", "expert", "--episodes", "1",
            "--objects", "red", "--timeout", "30", "--video-episodes", "1", "--ready-timeout", "45",
            "--out", str(out)]
    if not DETECTOR.is_file():
        args.append("--no-perception")
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id()), TMPDIR=str(tmp))
    run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=88)
    print(run.stdout[-4000:], run.stderr[-2000:])
    assert run.returncode == 0, f"evaluate exited with {run.returncode}"
    assert not list(tmp.glob("armstack_eval_*")), "the servo bus link's folder was left behind"
    return out, run.stdout


def test_report_files_exist(report):
    out, stdout = report
    for name in ("summary.json", "summary.md", "latency.png", "episodes.png", "traces_000.png",
                 "traces/000.npz", "graph.launch.yaml", "graph.log", "camera.mp4"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert f"report: {out}" in stdout


def test_summary_has_the_fields(report):
    out, stdout = report
    document = json.loads((out / "summary.json").read_text())
    summary = document["summary"]
    assert summary["episodes"] == 1 and 0.0 <= summary["success_rate"] <= 1.0
    assert set(summary["latency_ms"]) == set(STAGES)
    for key in ("time_to_completion_s", "jerk_rms_rad_s3", "command_jitter_ms", "diagnostics", "faults"):
        assert key in summary
    episode = document["episodes"][0]
    assert episode["controller"] == "expert" and episode["seed"] == 1
    assert episode["end_reason"] in ("success", "controller_finished", "timeout")
    # Commands went through IK and the driver wrote them: stamps were followed to the bus.
    assert summary["latency_ms"]["ik"]["count"] > 10
    assert summary["latency_ms"]["total"]["count"] > 10
    assert summary["latency_ms"]["total"]["median"] > 0.0
    assert episode["jerk"]["count"] > 10
    # The runner's second node (state streams, on the nodes' executor) heard the simulator's
    # task status and the nodes' diagnostics.
    assert "red_cube" in episode["in_bin"]
    assert any(name.startswith("driver") for name in episode["diagnostics"]), episode["diagnostics"]
    assert document["meta"]["video_frames"] > 0
    assert "success rate: " in stdout and "camera -> bus write" in stdout
