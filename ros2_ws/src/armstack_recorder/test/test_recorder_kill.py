"""Nothing finished is lost: a recorder SIGKILLed mid-episode leaves every saved episode intact
(the dataset loads and validates), a restart on the same path appends to it, and Ctrl-C
right after teleop says "saved" still saves that take before the node exits."""

from __future__ import annotations

import json
import re
import signal

import pytest
from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
from armstack_recorder.validate import validate_dataset

# Real processes timed on a 2-core machine: a starved recorder honestly drops a sample, which
# shifts a frame count by one more than the tolerance; one rerun tells that from a real fault.
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

FPS = 30


def record(probe, node, seconds: float) -> str:
    probe.trigger("recorder/start", node)
    probe.spin_for(seconds)
    return probe.trigger("recorder/save", node)


def saved_frames(reports: list[str], episode_index: int) -> int | None:
    """Frames in the newest "saved" report of that episode among these."""
    found = None
    for text in reports:
        report = json.loads(text)
        if report["outcome"] == "saved" and report["episode_index"] == episode_index:
            found = report["frames"]
    return found


def test_sigkill_keeps_finished_episodes_and_a_restart_appends(launch_recorder, probe,
                                                               tmp_path, synthetic):
    root = tmp_path / "ds"
    # The module's probe keeps every report it got; one that a first try's recorder sent as it
    # stopped reaches the probe only when a rerun spins it. Take those in first, then pick this
    # try's reports by what they say (a discarded take reports too).
    probe.spin_for(0.5)
    before = len(probe.reports)
    node = launch_recorder(root, fps=FPS, max_timing_error=0.5)
    probe.wait_ready(node)
    assert record(probe, node, 0.6).startswith("episode 0 saved")
    assert record(probe, node, 0.6).startswith("episode 1 saved")
    probe.trigger("recorder/start", node)
    probe.spin_for(0.7)  # frames of episode 2 are being encoded into the scratch dir
    assert (root / layout.TMP_DIR).is_dir()
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL

    reader = LeRobotDatasetReader(root)
    assert reader.num_episodes == 2
    lengths = [reader.episode(i).length for i in range(2)]
    probe.spin_until(lambda: saved_frames(probe.reports[before:], 1) is not None, 5.0,
                     "the reports", node)
    assert lengths == [saved_frames(probe.reports[before:], i) for i in range(2)]
    assert all(n >= 15 for n in lengths), lengths  # 0.6 s at 30 Hz, or more
    last = reader.frame(reader.num_frames - 1)  # decodes, and is one of the probe's images
    frame, episode_bits, camera_bits = synthetic.read(last["observation.images.color"])
    assert (episode_bits, camera_bits) == (0, 0)
    assert int(last["observation.state"][0]) < len(probe.sent.state)
    report = validate_dataset(root)
    assert report.ok, report.format()
    assert [w for w in report.warnings if layout.TMP_DIR not in w] == []

    # the same path again: resumed, the unsaved take's leftovers cleared, appended to
    node = launch_recorder(root, fps=FPS, sample_delay=2.0, max_timing_error=0.5)
    probe.wait_ready(node)
    assert "(2 episodes so far)" in node.log()
    assert record(probe, node, 0.6).startswith("episode 2 saved")

    # teleop saves a take and the recorder is interrupted at once: with a 2 s sample delay the
    # take is not sampled to its end yet; the shutdown finishes and saves it anyway
    start = probe.now_ns()
    probe.teleop("recording", take=1, take_start=start)
    probe.spin_for(0.8)
    end = probe.now_ns()
    probe.teleop("idle", take=1, take_start=start, take_end=end, outcome="saved")
    probe.spin_until(lambda: "teleop save (teleop take 1): saving" in node.log(), 10.0,
                     "the recorder to take the save", node)
    assert node.stop(signal.SIGINT) == 0, node.log()
    assert "episode 3 saved" in node.log()

    reader = LeRobotDatasetReader(root)
    assert reader.num_episodes == 4 and reader.tasks == ["stack the cubes", "teleop task"]
    take = reader.episode(3)
    # sampled to take_end although the shutdown came before the sample delay had passed: every
    # sample up to take_end was decided, kept or (messages still in flight at the interrupt,
    # on a loaded machine) dropped and counted
    saved = re.search(r"episode 3 saved: (\d+) frames .*?, (\d+) dropped(?:.*?(\d+) skipped at "
                      r"the start)?", node.log())
    frames, dropped, skipped = (int(g or 0) for g in saved.groups())
    assert frames == take.length > 0
    assert frames + dropped + skipped == pytest.approx((end - start) / 1e9 * FPS, abs=1)
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()
