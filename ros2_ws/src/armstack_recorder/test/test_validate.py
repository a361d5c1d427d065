"""The validator passes a good dataset and names the problem in each corrupted copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from armstack_recorder import layout
from armstack_recorder.validate import validate_dataset
from armstack_recorder.video import StreamingEncoder, VideoConfig

TOOL = Path(__file__).resolve().parents[4] / "tools" / "dataset.py"
DATA1 = "data/chunk-000/file-001.parquet"
TOP = "observation.images.top"


def _edit_table(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(edit(pq.read_table(path)), path)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _set_column(name: str, values: pa.Array) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.set_column(t.schema.get_field_index(name), name, values)


def _shift_timestamp(t: pa.Table) -> pa.Table:
    ts = t.column("timestamp").to_numpy().copy()
    ts[5] += 0.01
    return _set_column("timestamp", pa.array(ts, pa.float32()))(t)


def _gap_in_frame_index(t: pa.Table) -> pa.Table:
    fi = t.column("frame_index").to_numpy().copy()
    fi[10:] += 1
    return _set_column("frame_index", pa.array(fi))(t)


def _state_as_float64(t: pa.Table) -> pa.Table:
    column = t.column("observation.state").to_numpy(zero_copy_only=False)
    values = np.stack(column).astype(np.float64)
    return _set_column("observation.state",
                       pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 4))(t)


def _encode(path: Path, frames: int, fps: int, synthetic) -> None:
    enc = StreamingEncoder(path, width=128, height=96, fps=fps, config=VideoConfig(codec="libx264"),
                           queue_size=8)
    for k in range(frames):
        enc.put(synthetic.image(k, 1, 0))
    enc.finish()


def _bump_stat(feature: str, stat: str) -> Callable[[dict], None]:
    def edit(stats: dict) -> None:
        stats[feature][stat] = (np.array(stats[feature][stat]) + 0.5).tolist()
    return edit


def _shift_episode_range(t: pa.Table) -> pa.Table:
    t = _set_column("dataset_from_index", pa.array([81]))(t)
    return _set_column("dataset_to_index", pa.array([121]))(t)


CORRUPTIONS = {
    "timestamp": (lambda r, s: _edit_table(r / DATA1, _shift_timestamp),
                  "episode 1: timestamp of frame 5"),
    "frame_index": (lambda r, s: _edit_table(r / DATA1, _gap_in_frame_index),
                    "episode 1: frame_index is not 0..39"),
    "dtype": (lambda r, s: _edit_table(r / DATA1, _state_as_float64),
              "column 'observation.state' has type fixed_size_list<element: double>[4]"),
    "missing column": (lambda r, s: _edit_table(r / DATA1, lambda t: t.drop_columns(["action"])),
                       "missing ['action']"),
    "total_frames": (lambda r, s: _edit_json(r / layout.INFO_PATH,
                                             lambda i: i.update(total_frames=121)),
                     "episodes cover 120 frames, info.json says total_frames=121"),
    "feature shape": (lambda r, s: _edit_json(
        r / layout.INFO_PATH, lambda i: i["features"]["action"].update(shape=[4])),
        "feature 'action': 3 names for shape [4]"),
    "episode range": (lambda r, s: _edit_table(r / "meta/episodes/chunk-000/file-002.parquet",
                                               _shift_episode_range),
                      "episode 2: dataset_from_index 81, expected 80"),
    "missing video": (lambda r, s: (r / f"videos/{TOP}/chunk-000/file-002.mp4").unlink(),
                      f"episode 2: video file videos/{TOP}/chunk-000/file-002.mp4 is missing"),
    "short video": (lambda r, s: _encode(r / f"videos/{TOP}/chunk-000/file-001.mp4", 20, 30, s),
                    "has 20 frame(s) in [0.0000, 1.3333) s, expected 40"),
    "video at 25 fps": (lambda r, s: _encode(r / f"videos/{TOP}/chunk-000/file-001.mp4", 40, 25, s),
                        "stream frame rate 25.0, dataset fps 30"),
    "dataset stats": (lambda r, s: _edit_json(r / layout.STATS_PATH,
                                              _bump_stat("observation.state", "mean")),
                      "stats.json['observation.state'] vs the aggregate of the episodes' stats: "
                      "mean differs"),
    "episode stats": (lambda r, s: _edit_table(
        r / "meta/episodes/chunk-000/file-001.parquet",
        _set_column("stats/action/max", pa.array([[9.0, 9.0, 9.0]]))),
        "episode 1 stats['action'] vs its data: max differs"),
    "stats shape": (lambda r, s: _edit_json(r / layout.STATS_PATH,
                                            lambda st: st[TOP].update(mean=[0.5, 0.5, 0.5])),
                    f"stats.json['{TOP}']: mean has shape (3,), expected (3, 1, 1)"),
    "version": (lambda r, s: _edit_json(r / layout.INFO_PATH,
                                        lambda i: i.update(codebase_version="v2.1")),
                "codebase_version 'v2.1'"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruption_is_reported(case: str, written_dataset: Path, tmp_path: Path,
                                synthetic) -> None:
    root = tmp_path / "copy"
    shutil.copytree(written_dataset, root)
    corrupt, message = CORRUPTIONS[case]
    corrupt(root, synthetic)
    report = validate_dataset(root)
    assert not report.ok
    assert any(message in e for e in report.errors), report.format()


def test_leftover_files_are_warnings(written_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(written_dataset, root)
    shutil.copy(root / DATA1, root / "data/chunk-000/file-007.parquet")
    report = validate_dataset(root)
    assert report.ok, report.format()
    assert any("file-007.parquet is not referenced" in w for w in report.warnings)


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_cli_validate_and_summary(written_dataset: Path, tmp_path: Path) -> None:
    good = _run_tool("validate", str(written_dataset))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK (0 error(s), 0 warning(s))" in good.stdout
    summary = _run_tool("summary", str(written_dataset))
    assert summary.returncode == 0, summary.stderr
    for text in ("episodes  3", "frames    120 at 30 fps = 4.0 s", "'put the cube in the bin': 3",
                 "observation.state: float32 [4] waist, shoulder, elbow, left_finger",
                 f"{TOP}: video [96, 128, 3] h264 yuv420p"):
        assert text in summary.stdout
    root = tmp_path / "copy"
    shutil.copytree(written_dataset, root)
    _edit_table(root / DATA1, _shift_timestamp)
    bad = _run_tool("validate", str(root))
    assert bad.returncode == 1
    assert "INVALID" in bad.stdout and "timestamp of frame 5" in bad.stdout


@pytest.mark.parametrize(("stored_std", "ok"), [(2.1e-4, True), (1e-2, False)])
def test_std_tolerates_float32_cancellation_only(stored_std: float, ok: bool, written_dataset: Path,
                                                 tmp_path: Path) -> None:
    """LeRobot's float32 E[x^2] - mean^2 gives a constant 0.3 column a std of ~2e-4, not 0."""
    root = tmp_path / "copy"
    shutil.copytree(written_dataset, root)
    column = "stats/observation.environment_state/std"
    path = root / "meta/episodes/chunk-000/file-001.parquet"
    std = pq.read_table(path).column(column).to_pylist()[0]
    assert std[0] == 0.0  # obj_x is constant within an episode
    _edit_table(path, _set_column(column, pa.array([[stored_std, std[1]]])))
    report = validate_dataset(root)
    assert report.ok == ok, report.format()
    if not ok:
        assert any("environment_state'] vs its data: std differs" in e for e in report.errors)
