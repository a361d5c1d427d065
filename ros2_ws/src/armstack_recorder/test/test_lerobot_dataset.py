"""Writer -> files -> readers: armstack's reader and, independently, pyarrow + PyAV."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.metadata import DatasetFormatError
from armstack_recorder.validate import validate_dataset

EPISODES, FRAMES, FPS = 3, 40, 30
KEYS = ("observation.images.top", "observation.images.wrist")


def test_reader_returns_what_was_written(written_dataset: Path, synthetic) -> None:
    reader = LeRobotDatasetReader(written_dataset)
    assert (reader.num_episodes, reader.num_frames) == (EPISODES, EPISODES * FRAMES)
    assert reader.fps == FPS
    assert reader.tasks == ["put the cube in the bin"]
    for e in range(EPISODES):
        assert reader.episode_range(e) == range(e * FRAMES, (e + 1) * FRAMES)
    for index in (0, 1, 39, 40, 77, 119):
        e, k = divmod(index, FRAMES)
        item = reader.frame(index)
        assert (item["episode_index"], item["frame_index"], item["index"]) == (e, k, index)
        assert item["timestamp"] == pytest.approx(k / FPS, abs=1e-6)
        np.testing.assert_array_equal(item["observation.state"], synthetic.state(e, k))
        np.testing.assert_array_equal(item["action"], synthetic.action(e, k))
        np.testing.assert_array_equal(item["observation.environment_state"],
                                      synthetic.env_state(e, k))
        assert item["task"] == "put the cube in the bin"
        for cam_id, key in enumerate(KEYS):
            assert item[key].shape == (96, 128, 3)
            assert synthetic.read(item[key]) == (k, e, cam_id)


def test_decode_many_timestamps_at_once(written_dataset: Path, synthetic) -> None:
    reader = LeRobotDatasetReader(written_dataset)
    ks = [39, 0, 17, 18, 5, 5]  # unsorted, repeated
    frames = reader.decode_video(2, KEYS[1], [k / FPS for k in ks])
    assert [synthetic.read(f) for f in frames] == [(k, 2, 1) for k in ks]
    with pytest.raises(ValueError, match="no frame within"):
        reader.decode_video(2, KEYS[1], [0.5 / FPS])  # between two frames


def test_files_read_independently_with_pyarrow_and_pyav(written_dataset: Path, synthetic) -> None:
    info = json.loads((written_dataset / layout.INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 120, 1)
    assert info["features"][KEYS[0]]["info"]["video.codec"] == "h264"
    episodes = pq.read_table(written_dataset / "meta/episodes").to_pylist()
    assert sorted(r["episode_index"] for r in episodes) == [0, 1, 2]
    for row in episodes:
        e = row["episode_index"]
        data = pq.read_table(written_dataset / info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]))
        assert data.schema.field("observation.state").type.list_size == 4
        assert data.column("index").to_pylist() == list(range(row["dataset_from_index"],
                                                              row["dataset_to_index"]))
        state = np.stack(data.column("observation.state").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(state[7], synthetic.state(e, 7))
        for cam_id, key in enumerate(KEYS):
            path = written_dataset / info["video_path"].format(
                video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"])
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                assert stream.average_rate == FPS
                decoded = [(f.pts * f.time_base, f.to_ndarray(format="rgb24"))
                           for f in container.decode(stream)]
            assert len(decoded) == row["length"] == FRAMES
            t0 = row[f"videos/{key}/from_timestamp"]
            for k, (t, img) in enumerate(decoded):
                assert abs(float(t) - (t0 + k / FPS)) < 1e-4  # LeRobot's tolerance_s
                assert t == Fraction(k, FPS)  # exact, not just within tolerance
                assert synthetic.read(img) == (k, e, cam_id)
    tasks = pq.read_table(written_dataset / layout.TASKS_PATH)
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_stats_match_the_data(written_dataset: Path, synthetic) -> None:
    stats = json.loads((written_dataset / layout.STATS_PATH).read_text())
    state = np.stack([synthetic.state(e, k) for e in range(EPISODES) for k in range(FRAMES)])
    s = stats["observation.state"]
    np.testing.assert_allclose(s["mean"], state.astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s["std"], state.astype(np.float64).std(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s["min"], state.min(0))
    np.testing.assert_allclose(s["max"], state.max(0))
    assert s["count"] == [EPISODES * FRAMES]
    # per-episode median from a 5000-bin histogram lies between the 20th and 21st of 40 sorted
    # samples (give or take a bin); the dataset q50 is the count-weighted mean over episodes
    rows = pq.read_table(written_dataset / "meta/episodes").to_pylist()
    per_episode = []
    for row in rows:
        e = row["episode_index"]
        ep = np.sort(state[e * FRAMES:(e + 1) * FRAMES].astype(np.float64), axis=0)
        q50 = np.array(row["stats/observation.state/q50"])
        bin_width = (ep[-1] - ep[0]) / 5000 + 1e-9
        assert np.all(q50 >= ep[19] - bin_width) and np.all(q50 <= ep[20] + bin_width)
        per_episode.append(q50)
    np.testing.assert_allclose(s["q50"], np.mean(per_episode, axis=0), rtol=1e-9)
    assert stats["index"]["max"] == [EPISODES * FRAMES - 1]
    cam = stats[KEYS[0]]
    assert np.shape(cam["mean"]) == (3, 1, 1)
    # red is 235 on about half the stripes, 20 elsewhere; blue is 128 everywhere
    assert cam["min"][0][0][0] == pytest.approx(20 / 255, abs=1e-9)
    assert cam["max"][0][0][0] == pytest.approx(235 / 255, abs=1e-9)
    assert cam["mean"][2][0][0] == pytest.approx(128 / 255) and cam["std"][2][0][0] == 0.0


def test_written_dataset_validates(written_dataset: Path) -> None:
    report = validate_dataset(written_dataset)
    assert report.ok, report.format()
    assert not report.warnings, report.format()


def test_resume_appends_with_new_task(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "ds"
    cfg = synthetic.write(root, episodes=2, frames=12)
    with LeRobotDatasetWriter(cfg) as writer:
        assert (writer.num_episodes, writer.num_frames) == (2, 24)
        synthetic.record(writer, 2, 9, task="stack the blocks")
        report = writer.save_episode()
    assert (report.episode_index, report.task_index, report.length) == (2, 1, 9)
    assert report.data_path == root / "data/chunk-000/file-002.parquet"
    assert report.max_timing_error_s == pytest.approx(0.0, abs=1e-9)
    reader = LeRobotDatasetReader(root)
    assert reader.tasks == ["put the cube in the bin", "stack the blocks"]
    item = reader.frame(24 + 8)
    assert (item["episode_index"], item["frame_index"], item["task"]) == (2, 8, "stack the blocks")
    assert synthetic.read(item[KEYS[1]]) == (8, 2, 1)
    assert validate_dataset(root).ok


def test_resume_refuses_a_different_schema(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "ds"
    cfg = synthetic.write(root, episodes=1, frames=5)
    other = WriterConfig(root=root, fps=15, robot_type=cfg.robot_type, features=cfg.features)
    with pytest.raises(DatasetFormatError, match="fps"):
        LeRobotDatasetWriter(other)
    spec = FeatureSpec(state_names=["a"], action_names=cfg.features.action_names,
                       env_state_names=cfg.features.env_state_names, cameras=cfg.features.cameras)
    with pytest.raises(DatasetFormatError, match="observation.state"):
        LeRobotDatasetWriter(WriterConfig(root=root, fps=FPS, robot_type=cfg.robot_type,
                                          features=spec, video=cfg.video))
    with pytest.raises(DatasetFormatError, match="codec"):
        LeRobotDatasetWriter(synthetic.config(root, codec="libsvtav1"))


def test_discard_and_close_leave_no_trace(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "ds"
    cfg = synthetic.config(root)
    writer = LeRobotDatasetWriter(cfg)
    synthetic.record(writer, 0, 6)
    writer.discard_episode()
    synthetic.record(writer, 0, 4)
    writer.save_episode()
    synthetic.record(writer, 1, 3)
    writer.close()  # unsaved episode discarded
    reader = LeRobotDatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (1, 4)
    assert not (root / layout.TMP_DIR).exists()
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == ["file-000.parquet"]


def test_single_writer_per_dataset(tmp_path: Path, synthetic) -> None:
    cfg = synthetic.config(tmp_path / "ds")
    with LeRobotDatasetWriter(cfg):
        with pytest.raises(RuntimeError, match="another writer"):
            LeRobotDatasetWriter(cfg)
    LeRobotDatasetWriter(cfg).close()  # released on close


def test_add_frame_rejects_bad_input(tmp_path: Path, synthetic) -> None:
    with LeRobotDatasetWriter(synthetic.config(tmp_path / "ds", cameras=("top",))) as writer:
        with pytest.raises(RuntimeError, match="start_episode"):
            writer.add_frame(synthetic.state(0, 0), synthetic.action(0, 0))
        writer.start_episode("t")
        good = dict(state=synthetic.state(0, 0), action=synthetic.action(0, 0),
                    env_state=synthetic.env_state(0, 0), images={"top": synthetic.image(0, 0, 0)})
        cases = [({"state": np.zeros(3)}, "state has 3 values"),
                 ({"action": [np.nan, 0, 0]}, "non-finite"),
                 ({"env_state": None}, "env_state is required"),
                 ({"images": {}}, "exactly the cameras"),
                 ({"images": {"top": np.zeros((96, 128, 3), np.float32)}}, "uint8")]
        for change, message in cases:
            with pytest.raises(ValueError, match=message):
                writer.add_frame(**{**good, **change})
        writer.add_frame(**good, timestamp=10.0)
        with pytest.raises(ValueError, match="increase"):
            writer.add_frame(**good, timestamp=9.0)
        with pytest.raises(ValueError, match="every frame"):
            writer.add_frame(**good)
        report = writer.save_episode()
        assert report.length == 1
    assert validate_dataset(tmp_path / "ds").ok


def test_timing_error_is_reported(tmp_path: Path, synthetic) -> None:
    with LeRobotDatasetWriter(synthetic.config(tmp_path / "ds", cameras=())) as writer:
        writer.start_episode("t")
        for k, jitter in enumerate([0.0, 0.002, -0.004, 0.001]):
            writer.add_frame(synthetic.state(0, k), synthetic.action(0, k),
                             synthetic.env_state(0, k), timestamp=3.0 + k / FPS + jitter)
        report = writer.save_episode()
    assert report.max_timing_error_s == pytest.approx(0.004, abs=1e-9)
    assert report.video_paths == {}
    reader = LeRobotDatasetReader(tmp_path / "ds")
    np.testing.assert_allclose(reader.columns["timestamp"], np.arange(4) / FPS, atol=1e-7)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    spec = FeatureSpec(state_names=["a"], action_names=["b"])
    with pytest.raises(ValueError, match="WriterConfig.fps"):
        WriterConfig(root=tmp_path, fps=0, robot_type="r", features=spec)
    with pytest.raises(ValueError, match="FeatureSpec.state_names"):
        FeatureSpec(state_names=["a", "a"], action_names=["b"])
    with pytest.raises(ValueError, match="CameraSpec.width"):
        CameraSpec("cam", 480, 641)
    with pytest.raises(ValueError, match="CameraSpec.name"):
        CameraSpec("cam/1", 480, 640)


def test_refuses_a_non_dataset_directory(tmp_path: Path, synthetic) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("x")
    with pytest.raises(DatasetFormatError, match="not empty"):
        LeRobotDatasetWriter(synthetic.config(tmp_path / "ds"))


def test_av1_default_codec_roundtrip(tmp_path: Path, synthetic) -> None:
    root = tmp_path / "av1"
    cfg = synthetic.write(root, episodes=2, frames=20, codec="libsvtav1", cameras=("top",))
    assert cfg.video.codec == "libsvtav1"
    info = json.loads((root / layout.INFO_PATH).read_text())
    assert info["features"][KEYS[0]]["info"]["video.codec"] == "av1"
    reader = LeRobotDatasetReader(root)
    frames = reader.decode_video(1, KEYS[0], np.arange(20) / FPS)
    assert [synthetic.read(f) for f in frames] == [(k, 1, 0) for k in range(20)]
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()


def test_caller_buffers_are_copied(tmp_path: Path, synthetic) -> None:
    """A recorder reuses one state array and one camera buffer for every frame."""
    state, image = synthetic.state(0, 0), synthetic.image(0, 0, 0)
    with LeRobotDatasetWriter(synthetic.config(tmp_path / "ds", cameras=("top",))) as writer:
        writer.start_episode("t")
        for k in range(3):
            state[:] = synthetic.state(0, k)
            image[:] = synthetic.image(k, 0, 0)
            writer.add_frame(state, synthetic.action(0, k), synthetic.env_state(0, k),
                             {"top": image})
            state[:] = -7.0
            image[:] = 0
        writer.save_episode()
    reader = LeRobotDatasetReader(tmp_path / "ds")
    for k in range(3):
        item = reader.frame(k)
        np.testing.assert_array_equal(item["observation.state"], synthetic.state(0, k))
        assert synthetic.read(item[KEYS[0]]) == (k, 0, 0)
