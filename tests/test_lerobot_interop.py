"""Datasets move between armstack and LeRobot in both directions, checked with LeRobot's own code.

LeRobot (`lerobot-dataset`, import name `ledataset`) needs another torch than the project, so it
runs in its own venv (.venv-lerobot, pinned by requirements-lerobot.txt, made by
`./armstack test`) through tools/lerobot_interop.py; this module (project venv) writes and reads
with armstack's writer, reader and validator and compares.

- LeRobot reads armstack: LeRobotDataset loads an armstack-written dataset (AV1 and H.264); at
  chosen indices every parquet value equals what armstack wrote and its reader returns, the
  action chunks LeRobot's training loader builds follow the episode bounds, and the video frames
  LeRobot decodes match armstack's decode of the same timestamps and show the right frame.
- armstack reads LeRobot: a dataset written by LeRobotDataset.create/add_frame/save_episode
  (episodes packed into shared files) passes validate_dataset, and armstack's reader returns
  every value that was written and the same frames LeRobot decodes.
- ARMSTACK_INTEROP_DATASET=PATH: the first check on a recorded dataset, at indices spread over it.

ARMSTACK_LEROBOT=0 skips the module (and `./armstack test` then does not build the venv); a
missing or stale venv otherwise fails it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.validate import validate_dataset
from armstack_recorder.video import VideoConfig

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "lerobot_interop.py"
REQUIREMENTS = REPO / "requirements-lerobot.txt"
FPS = 30
LENGTHS = (20, 31, 17)  # frames per episode; uneven, so episode bounds are not multiples
HORIZON = 6  # action chunk length asked of LeRobot's loader
MAX_MEAN_ABS_DIFF = 2.0  # uint8 levels between two decodes of the same frame
MAX_CODING_ERROR = 10.0  # uint8 levels, mean, between a written image and its AV1 decode
# The project's environment is not LeRobot's: its PYTHONPATH (the colcon workspace) and library
# path must not reach the other venv.
FOREIGN_ENV = ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "VIRTUAL_ENV")


def _load_tool():
    """tools/lerobot_interop.py: its synthetic content is numpy only (LeRobot is imported
    inside its commands), so both sides compute the same values from one definition."""
    spec = importlib.util.spec_from_file_location("lerobot_interop", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


syn = _load_tool()


@dataclass
class LeRobotVenv:
    """Runs tools/lerobot_interop.py with the LeRobot venv's interpreter."""

    python: Path
    hf_home: Path  # Hugging Face caches (datasets' arrow cache) of this test run

    def run(self, *args: str, timeout: float = 180.0) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        env.update(HF_HOME=str(self.hf_home), PYTHONNOUSERSITE="1")
        cmd = [str(self.python), "-I", str(TOOL), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def read(self, root: Path, indices: list[int], out: Path,
             horizon: int = 0) -> dict[str, np.ndarray]:
        """LeRobotDataset's items at `indices`: arrays by feature key, 'task', 'report'."""
        args = ["read", str(root), "--out", str(out), "--indices", *map(str, indices)]
        if horizon:
            args += ["--action-horizon", str(horizon)]
        self.run(*args)
        with np.load(out) as z:
            items = {k: z[k] for k in z.files}
        items["report"] = json.loads(str(items["report"]))
        return items


@pytest.fixture(scope="module")
def lerobot(tmp_path_factory: pytest.TempPathFactory) -> LeRobotVenv:
    if os.environ.get("ARMSTACK_LEROBOT", "1") == "0":
        pytest.skip("ARMSTACK_LEROBOT=0: the LeRobot venv is not set up, so interop with "
                    "LeRobot's own reader and writer is not checked")
    venv = Path(os.environ.get("ARMSTACK_LEROBOT_VENV", REPO / ".venv-lerobot"))
    hint = ("`./armstack test` builds it from requirements-lerobot.txt (ARMSTACK_LEROBOT=0 "
            "skips this check)")
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.fail(f"LeRobot venv {venv} is missing: {hint}")
    stamp = venv / ".armstack-requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    have = stamp.read_text().strip() if stamp.is_file() else "none (install unfinished?)"
    if have != want:
        pytest.fail(f"LeRobot venv {venv} was not installed from the current "
                    f"requirements-lerobot.txt (stamp {have}, file {want}; pip's log: "
                    f"{venv / 'install.log'}): {hint}")
    return LeRobotVenv(python, tmp_path_factory.mktemp("hf_home"))


# ---------------------------------------------------------------------- helpers


def write_armstack(root: Path, codec: str) -> None:
    """The synthetic episodes, written by armstack's writer."""
    spec = FeatureSpec(state_names=syn.STATE_NAMES, action_names=syn.ACTION_NAMES,
                       env_state_names=syn.ENV_STATE_NAMES,
                       cameras=[CameraSpec(c, syn.HEIGHT, syn.WIDTH) for c in syn.CAMERAS])
    cfg = WriterConfig(root=root, fps=FPS, robot_type=syn.ROBOT_TYPE, features=spec,
                       video=VideoConfig(codec=codec))
    with LeRobotDatasetWriter(cfg) as writer:
        for e, length in enumerate(LENGTHS):
            writer.start_episode(syn.task(e))
            for k in range(length):
                images = {c: syn.image(e, k, i) for i, c in enumerate(syn.CAMERAS)}
                writer.add_frame(syn.state(e, k), syn.action(e, k), syn.env_state(e, k), images)
            writer.save_episode()


def locate(index: int) -> tuple[int, int]:
    """(episode, frame) of a global index of the synthetic dataset."""
    starts = np.cumsum((0,) + LENGTHS)
    e = int(np.searchsorted(starts, index, side="right") - 1)
    return e, index - int(starts[e])


def boundary_indices(reader: LeRobotDatasetReader) -> list[int]:
    """Each episode's first two, middle and last two frames."""
    out: set[int] = set()
    for e in range(reader.num_episodes):
        r = reader.episode_range(e)
        out.update({r.start, r.start + 1, (r.start + r.stop) // 2, r.stop - 2, r.stop - 1})
    return sorted(out)


def expected_chunk(e: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """LeRobot's action chunk at frame f: (HORIZON, D) actions clamped to the episode's last
    frame, and the padding mask of the clamped steps."""
    last = LENGTHS[e] - 1
    rows = np.stack([syn.action(e, min(f + k, last)) for k in range(HORIZON)])
    return rows, np.array([f + k > last for k in range(HORIZON)])


def assert_same_frame(a: np.ndarray, b: np.ndarray, where: str) -> float:
    """Two decodes of one video frame, (H, W, 3) uint8; returns their mean abs difference."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, \
        f"{where}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    diff = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    assert diff < MAX_MEAN_ABS_DIFF, f"{where}: mean abs difference {diff:.2f} levels"
    return diff


def compare_with_armstack(items: dict, reader: LeRobotDatasetReader) -> float:
    """LeRobot's items against armstack's reader at the same indices: every parquet column
    equal (the action's first step when LeRobot returned chunks), the task, and each camera's
    frame decoded at the same timestamp. Returns the largest mean abs video difference."""
    tabular = layout.tabular_keys(reader.features)
    worst = 0.0
    for j, index in enumerate(items["indices"].tolist()):
        row = reader.frame(index)
        for key in tabular:
            got = items[key][j]
            if key == layout.ACTION_KEY and got.ndim == 2:
                got = got[0]  # (HORIZON, D) chunk; step 0 is this frame's action
            np.testing.assert_array_equal(got, np.asarray(row[key]),
                                          err_msg=f"{key} at index {index}")
            assert got.dtype == np.asarray(row[key]).dtype, f"{key} at index {index}"
        assert items["task"][j] == row["task"], f"task at index {index}"
        for key in reader.video_keys:
            worst = max(worst, assert_same_frame(items[key][j], row[key], f"{key}[{index}]"))
    return worst


# ---------------------------------------------------------------------- armstack -> LeRobot


@pytest.mark.parametrize("codec", ["libsvtav1", "libx264"])
def test_lerobot_reads_armstack_dataset(lerobot: LeRobotVenv, tmp_path: Path, codec: str) -> None:
    root = tmp_path / "armstack"
    write_armstack(root, codec)
    reader = LeRobotDatasetReader(root)
    indices = boundary_indices(reader)
    items = lerobot.read(root, indices, tmp_path / "items.npz", horizon=HORIZON)

    report = items["report"]
    assert report["num_frames"] == sum(LENGTHS) and report["fps"] == FPS
    assert report["episode_lengths"] == list(LENGTHS)
    assert report["tasks"] == reader.tasks == [syn.task(0), syn.task(1)]
    assert report["video_keys"] == reader.video_keys
    assert set(report["stats_keys"]) == set(reader.features)
    # LeRobot hands out uint8 / 255 as float32: the conversion back must be exact
    assert report["max_video_quantization_error"] < 1e-3

    assert compare_with_armstack(items, reader) < MAX_MEAN_ABS_DIFF
    for j, index in enumerate(indices):
        e, f = locate(index)
        np.testing.assert_array_equal(items["observation.state"][j], syn.state(e, f))
        np.testing.assert_array_equal(items["observation.environment_state"][j],
                                      syn.env_state(e, f))
        actions, pad = expected_chunk(e, f)
        np.testing.assert_array_equal(items["action"][j], actions, err_msg=f"chunk at {index}")
        np.testing.assert_array_equal(items["action_is_pad"][j], pad, err_msg=f"pad at {index}")
        assert items["timestamp"][j] == np.float32(f / FPS)
        assert (items["episode_index"][j], items["frame_index"][j]) == (e, f)
        assert items["task"][j] == syn.task(e)
        for cam_id, cam in enumerate(syn.CAMERAS):
            assert syn.read_image(items[syn.IMAGE_PREFIX + cam][j]) == (f, e, cam_id), \
                f"{cam} frame at index {index} (episode {e}, frame {f})"


# ---------------------------------------------------------------------- LeRobot -> armstack


def test_armstack_reads_lerobot_dataset(lerobot: LeRobotVenv, tmp_path: Path) -> None:
    root = tmp_path / "lerobot"
    written = lerobot.run("write", str(root), "--frames", *map(str, LENGTHS))
    assert written["episode_lengths"] == list(LENGTHS)

    report = validate_dataset(root)
    assert report.ok, report.format()
    reader = LeRobotDatasetReader(root)
    assert reader.fps == FPS and reader.num_frames == sum(LENGTHS)
    assert [reader.episode(e).length for e in range(reader.num_episodes)] == list(LENGTHS)
    assert reader.tasks == [syn.task(0), syn.task(1)]
    assert reader.video_keys == [syn.IMAGE_PREFIX + c for c in syn.CAMERAS]
    # LeRobot packs the episodes into one file per camera: the reader must shift by the
    # episode's from_timestamp, which these frames would get wrong otherwise
    second = reader.episode(1).videos[reader.video_keys[0]]
    assert second.from_timestamp == pytest.approx(LENGTHS[0] / FPS)
    assert second.path == reader.episode(0).videos[reader.video_keys[0]].path

    cols = reader.columns
    for e in range(reader.num_episodes):
        r = reader.episode_range(e)
        frames = range(LENGTHS[e])
        for key, make in (("observation.state", syn.state), ("action", syn.action),
                          ("observation.environment_state", syn.env_state)):
            np.testing.assert_array_equal(cols[key][r.start:r.stop],
                                          np.stack([make(e, k) for k in frames]),
                                          err_msg=f"{key} of episode {e}")
        np.testing.assert_array_equal(cols["timestamp"][r.start:r.stop],
                                      (np.arange(LENGTHS[e]) / FPS).astype(np.float32))
        np.testing.assert_array_equal(cols["frame_index"][r.start:r.stop], np.arange(LENGTHS[e]))
        assert set(cols["episode_index"][r.start:r.stop].tolist()) == {e}
        assert [reader.tasks[int(t)] for t in cols["task_index"][r.start:r.stop]] == \
            [syn.task(e)] * LENGTHS[e]

    indices = boundary_indices(reader)
    items = lerobot.read(root, indices, tmp_path / "items.npz")
    compare_with_armstack(items, reader)
    for index in indices:
        e, f = locate(index)
        row = reader.frame(index)
        for cam_id, cam in enumerate(syn.CAMERAS):
            img = row[syn.IMAGE_PREFIX + cam]
            assert syn.read_image(img) == (f, e, cam_id), f"{cam} at index {index}"
            error = np.abs(img.astype(np.int16) - syn.image(e, f, cam_id)).mean()
            assert error < MAX_CODING_ERROR, f"{cam} at index {index}: {error:.1f} levels off"


# ---------------------------------------------------------------------- a recorded dataset


def spread_indices(reader: LeRobotDatasetReader, episodes: int = 8, extra: int = 12) -> list[int]:
    """First, middle and last frame of `episodes` episodes spread over the dataset, plus
    `extra` seeded random frames."""
    picked = np.unique(np.linspace(0, reader.num_episodes - 1, episodes).round().astype(int))
    out: set[int] = set()
    for e in picked.tolist():
        r = reader.episode_range(e)
        out.update({r.start, (r.start + r.stop) // 2, r.stop - 1})
    rng = np.random.default_rng(0)
    out.update(rng.integers(0, reader.num_frames, extra).tolist())
    return sorted(out)


def test_lerobot_reads_recorded_dataset(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = os.environ.get("ARMSTACK_INTEROP_DATASET")
    if not path:
        pytest.skip("ARMSTACK_INTEROP_DATASET is not set (a recorded dataset to read with "
                    "LeRobot, e.g. ARMSTACK_INTEROP_DATASET=/tmp/expert50)")
    lerobot = request.getfixturevalue("lerobot")
    root = Path(path)
    assert (root / layout.INFO_PATH).is_file(), f"{root}: no {layout.INFO_PATH}"
    reader = LeRobotDatasetReader(root)
    indices = spread_indices(reader)
    items = lerobot.read(root, indices, tmp_path / "items.npz", horizon=HORIZON)
    report = items["report"]
    assert report["num_frames"] == reader.num_frames
    assert report["episode_lengths"] == [reader.episode(e).length
                                         for e in range(reader.num_episodes)]
    assert report["tasks"] == reader.tasks
    assert report["max_video_quantization_error"] < 1e-3
    compare_with_armstack(items, reader)
    cols = reader.columns
    for j, index in enumerate(indices):
        r = reader.episode_range(int(cols["episode_index"][index]))
        steps = np.minimum(index + np.arange(HORIZON), r.stop - 1)
        np.testing.assert_array_equal(items["action"][j], cols["action"][steps],
                                      err_msg=f"action chunk at {index}")
        np.testing.assert_array_equal(items["action_is_pad"][j],
                                      index + np.arange(HORIZON) > r.stop - 1)
