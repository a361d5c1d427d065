"""A recorder process killed with SIGKILL leaves every finished episode intact and loadable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader, LeRobotDatasetWriter
from armstack_recorder.stats import aggregate_stats, stats_from_json
from armstack_recorder.validate import validate_dataset

FRAMES = 30

RECORDER = """
import os, signal, sys, time
from pathlib import Path

import conftest
from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import LeRobotDatasetWriter

root, mode = Path(sys.argv[1]), sys.argv[2]
syn = conftest.Synthetic()
writer = LeRobotDatasetWriter(syn.config(root))
for e in range(2):
    syn.record(writer, e, {frames})
    writer.save_episode()
if mode == "in-save":
    # die inside save_episode after everything but the commit record (info.json) is written
    real = layout.write_json_durably
    def write_or_die(obj, dst, tmp):
        if dst.name == "info.json":
            os.kill(os.getpid(), signal.SIGKILL)
        real(obj, dst, tmp)
    layout.write_json_durably = write_or_die
    syn.record(writer, 2, {frames})
    writer.save_episode()
else:
    writer.start_episode("put the cube in the bin")
    for k in range(100000):
        images = {{"top": syn.image(k % 256, 2, 0), "wrist": syn.image(k % 256, 2, 1)}}
        writer.add_frame(syn.state(2, k), syn.action(2, k), syn.env_state(2, k), images)
        if k == 20:
            print("RECORDING", flush=True)
        time.sleep(0.005)
print("NOT KILLED", flush=True)
"""


def _run_recorder(root: Path, mode: str, tmp_path: Path) -> None:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER.format(frames=FRAMES))
    test_dir = str(Path(__file__).resolve().parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([test_dir, *sys.path]))
    proc = subprocess.Popen([sys.executable, str(script), str(root), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if mode == "mid-episode":
            line = proc.stdout.readline()
            assert line.strip() == "RECORDING", line + proc.stderr.read()
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read() + proc.stderr.read()


def _check_two_episodes(root: Path, synthetic) -> None:
    reader = LeRobotDatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (2, 2 * FRAMES)
    item = reader.frame(FRAMES + 29)
    assert synthetic.read(item["observation.images.wrist"]) == (29, 1, 1)
    np.testing.assert_array_equal(item["observation.state"], synthetic.state(1, 29))


def _append_and_check(root: Path, synthetic) -> None:
    with LeRobotDatasetWriter(synthetic.config(root)) as writer:
        assert writer.num_episodes == 2
        synthetic.record(writer, 2, 11)
        writer.save_episode()
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()
    reader = LeRobotDatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (3, 2 * FRAMES + 11)
    assert synthetic.read(reader.frame(2 * FRAMES + 10)["observation.images.top"]) == (10, 2, 0)


def test_killed_while_recording(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "ds"
    _run_recorder(root, "mid-episode", tmp_path)
    _check_two_episodes(root, synthetic)
    report = validate_dataset(root)
    assert report.ok, report.format()
    assert [w for w in report.warnings if layout.TMP_DIR not in w] == []
    _append_and_check(root, synthetic)


def test_killed_just_before_the_commit_record(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "ds"
    _run_recorder(root, "in-save", tmp_path)
    # the episode's files and stats.json were written, info.json was not: readers still see
    # the two committed episodes, the validator names the leftovers and the stale stats
    _check_two_episodes(root, synthetic)
    report = validate_dataset(root)
    assert any("past total_episodes" in w for w in report.warnings), report.format()
    assert any("file-002.parquet is not referenced" in w for w in report.warnings)
    assert any("stats.json" in e for e in report.errors), report.format()
    # reopening rolls the interrupted save back
    LeRobotDatasetWriter(synthetic.config(root)).close()
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()
    meta_stats = stats_from_json(json.loads((root / layout.STATS_PATH).read_text()))
    reader = LeRobotDatasetReader(root)
    expected = aggregate_stats([ep.stats for ep in reader.meta.episodes])
    np.testing.assert_allclose(meta_stats["action"]["mean"], expected["action"]["mean"])
    assert meta_stats["index"]["count"][0] == 2 * FRAMES
    _append_and_check(root, synthetic)


@pytest.mark.parametrize("leftover", ["data/chunk-000/file-005.parquet",
                                      "videos/observation.images.top/chunk-000/file-003.mp4"])
def test_reopen_removes_orphan_files(leftover: str, written_dataset: Path, tmp_path: Path,
                                     synthetic) -> None:
    root = tmp_path / "copy"
    shutil.copytree(written_dataset, root)
    source = root / ("data/chunk-000/file-000.parquet" if leftover.endswith("parquet")
                     else "videos/observation.images.top/chunk-000/file-000.mp4")
    shutil.copy(source, root / leftover)
    LeRobotDatasetWriter(synthetic.config(root)).close()
    assert not (root / leftover).exists()
    assert (root / "data/chunk-000/file-002.parquet").exists()
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()
