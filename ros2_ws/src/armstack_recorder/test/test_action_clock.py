"""Commands stamped before they are sent: the receive clock records the command that was in
force at each frame, the stamp clock a later one (what made policies run ahead of themselves)."""

from __future__ import annotations

import bisect
import json

import numpy as np
import pytest
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader

FPS = 30
# Node timing tests: on a loaded 2-core machine a starved recorder or probe can drop a few
# samples; one rerun, so a real fault still fails twice.
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)
LAG_NS = 100_000_000  # 0.1 s: three frames at 30 Hz, five commands at 50 Hz


def record(probe, launch_recorder, root, clock: str) -> tuple[dict, np.ndarray]:
    node = launch_recorder(root, action_clock=clock, fps=FPS)
    probe.wait_ready(node)
    before = len(probe.reports)
    assert probe.call("recorder/start", node).success
    probe.spin_for(2.0)
    saved = probe.call("recorder/save", node)
    assert saved.success, saved.message
    probe.spin_until(lambda: len(probe.reports) > before, 10.0, "the report", node)
    node.stop()
    report = json.loads(probe.reports[-1])
    actions = np.stack(LeRobotDatasetReader(root).episode_data(0)["action"])
    return report, -actions[:, 0]  # the probe sends -seq as the first value


@pytest.mark.parametrize("clock", ["receive", "stamp"])
def test_which_command_each_frame_records(probe, launch_recorder, tmp_path, clock):
    probe.action_stamp_lag_ns = LAG_NS
    try:
        report, seqs = record(probe, launch_recorder, tmp_path / clock, clock)
    finally:
        probe.action_stamp_lag_ns = 0
    sent = probe.sent.action  # send time of command seq i
    in_force = []  # the newest command sent by each frame's time
    for k in range(len(seqs)):
        t = round(report["start_s"] * 1e9) + k * 10**9 // FPS
        in_force.append(bisect.bisect_right(sent, t) - 1)
    offset = np.median(seqs - np.array(in_force))
    if clock == "receive":
        assert abs(offset) <= 1  # the command in force (or the one before, in transit)
    else:
        assert offset == pytest.approx(LAG_NS / 20e6, abs=1)  # five commands ahead
