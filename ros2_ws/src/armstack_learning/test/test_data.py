"""Sample windows, padding, normalization, dataset fingerprint."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.data import (  # noqa: E402
    WindowConfig,
    dataset_fingerprint,
    format_episode_ranges,
    parse_episode_ranges,
)
from armstack_learning.normalize import Affine, NormalizationConfig, affine_from_stats  # noqa: E402


def test_window_inside_episode(make_dataset, synthetic):
    ds = make_dataset(n_obs=2, chunk=5)
    state, env, action = synthetic.episode(1)
    t = synthetic.frames + 10  # frame 10 of episode 1
    item = ds[t]
    assert item["observation.state"].shape == (2, 7)
    assert item["observation.environment_state"].shape == (2, 12)
    assert item["action"].shape == (5, 7)
    np.testing.assert_allclose(item["observation.state"].numpy(), state[9:11], atol=1e-7)
    np.testing.assert_allclose(item["observation.environment_state"].numpy(), env[9:11])
    np.testing.assert_allclose(item["action"].numpy(), action[10:15], atol=1e-7)
    assert not item["action_is_pad"].any()


def test_padding_at_episode_end_and_history_at_start(make_dataset, synthetic):
    ds = make_dataset(n_obs=3, chunk=6)
    _, _, action = synthetic.episode(0)
    last = synthetic.frames - 2  # two frames before episode 0 ends
    item = ds[last]
    assert item["action_is_pad"].tolist() == [False, False, True, True, True, True]
    np.testing.assert_allclose(item["action"][2:].numpy(), np.repeat(action[-1:], 4, axis=0))
    first = ds[synthetic.frames]  # episode 1's first frame: history repeats it, not episode 0
    s1, _, _ = synthetic.episode(1)
    np.testing.assert_allclose(first["observation.state"].numpy(), np.repeat(s1[:1], 3, axis=0))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_normalizer_uses_dataset_stats_and_round_trips(make_dataset, synthetic):
    ds = make_dataset(n_obs=1, chunk=4)
    norm = ds.normalizer(NormalizationConfig())
    stats = ds.reader.stats["action"]
    aff = norm["action"]
    np.testing.assert_allclose(aff.offset.numpy(), stats["mean"], rtol=1e-6)
    x = torch.from_numpy(np.stack([synthetic.episode(e)[2] for e in range(3)]).reshape(-1, 7))
    z = norm.normalize("action", x)
    assert z.mean(0).abs().max() < 1e-4  # this is the data the stats came from
    torch.testing.assert_close(norm.unnormalize("action", z), x, atol=1e-6, rtol=1e-6)
    mm = ds.normalizer(NormalizationConfig(), action_mode="min_max")
    zm = mm.normalize("action", x)
    moving = x.std(0) > 1e-3  # joints that never move are only centred
    assert zm[:, moving].min() == pytest.approx(-1.0, abs=1e-5)
    assert zm[:, moving].max() == pytest.approx(1.0, abs=1e-5)


def test_episode_selection_samples_only_those_episodes(make_dataset, synthetic):
    ds = make_dataset(n_obs=2, chunk=4, episodes=(2, 0))
    assert ds.episodes.tolist() == [0, 2] and not ds.all_episodes
    assert len(ds) == 2 * synthetic.frames
    s0, _, a0 = synthetic.episode(0)
    s2, _, a2 = synthetic.episode(2)
    np.testing.assert_allclose(ds[3]["action"].numpy(), a0[3:7], atol=1e-7)
    # sample `frames` is episode 2's first frame: episode 1 is skipped, windows stay inside
    item = ds[synthetic.frames]
    np.testing.assert_allclose(item["observation.state"].numpy(), np.repeat(s2[:1], 2, axis=0),
                               atol=1e-7)
    np.testing.assert_allclose(item["action"].numpy(), a2[:4], atol=1e-7)
    last = ds[len(ds) - 1]
    assert last["action_is_pad"].tolist() == [False, True, True, True]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_episode_selection_normalizes_with_its_own_frames(make_dataset, synthetic):
    chosen = np.concatenate([synthetic.episode(e)[2] for e in (0, 2)])
    aff = make_dataset(n_obs=1, chunk=4, episodes=[0, 2]).normalizer(NormalizationConfig())["action"]
    np.testing.assert_allclose(aff.offset.numpy(), chosen.mean(0), rtol=1e-5, atol=1e-6)
    everything = make_dataset(n_obs=1, chunk=4).normalizer(NormalizationConfig())["action"]
    assert np.abs(everything.offset.numpy() - chosen.mean(0)).max() > 1e-3  # the test can tell
    same = make_dataset(n_obs=1, chunk=4, episodes=[0, 1, 2]).normalizer(NormalizationConfig())
    np.testing.assert_allclose(same["action"].offset.numpy(), everything.offset.numpy())


@pytest.mark.parametrize("episodes, message", [
    ((0, 3), r"episode\(s\) \[3\] selected, but the dataset has episodes 0-2"),
    ((1, 1), "repeats an episode"),
    ((), "selection is empty"),
])
def test_episode_selection_errors_name_the_problem(make_dataset, episodes, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(n_obs=1, chunk=4, episodes=episodes)


def test_episode_ranges_parse_and_format():
    assert parse_episode_ranges("0-2, 7,9-10") == (0, 1, 2, 7, 9, 10)
    assert format_episode_ranges([10, 0, 1, 2, 7, 9]) == "0-2,7,9-10"
    assert parse_episode_ranges(format_episode_ranges(range(5, 40, 3))) == tuple(range(5, 40, 3))
    for bad, item in (("0-", "'0-'"), ("a", "'a'"), ("5-2", "'5-2'"), ("-1", "'-1'")):
        with pytest.raises(ValueError, match=item):
            parse_episode_ranges(bad)


def test_constant_features_are_centred_not_stretched():
    stats = {"mean": np.array([1.0, 0.5]), "std": np.array([0.0, 2e-4]),
             "min": np.array([1.0, 0.4]), "max": np.array([1.0, 0.6])}
    offset, scale = affine_from_stats(stats, "mean_std", 1e-3)
    assert scale.tolist() == [1.0, 1.0] and offset.tolist() == pytest.approx([1.0, 0.5])
    offset, scale = affine_from_stats(stats, "min_max", 1e-3)
    assert scale.tolist() == pytest.approx([1.0, 0.1]) and offset.tolist() == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="mode"):
        affine_from_stats(stats, "quantile", 1e-3)
    with pytest.raises(ValueError, match="scales"):
        Affine(np.zeros(2), np.zeros(2))


@pytest.mark.parametrize("kwargs, field", [
    ({"state": "robust"}, "NormalizationConfig.state"),
    ({"min_scale": 0.0}, "NormalizationConfig.min_scale"),
])
def test_normalization_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        NormalizationConfig(**kwargs)


def test_window_config_validation():
    with pytest.raises(ValueError, match="WindowConfig.chunk_size"):
        WindowConfig(chunk_size=0)


def test_fingerprint_follows_content(tmp_path, dataset_root, synthetic):
    a = synthetic.write(tmp_path / "a", episodes=1, frames=5)
    b = synthetic.write(tmp_path / "b", episodes=1, frames=5)
    assert dataset_fingerprint(a) == dataset_fingerprint(b)  # same content, other place
    c = synthetic.write(tmp_path / "c", episodes=1, frames=6)
    assert dataset_fingerprint(c) != dataset_fingerprint(a)
    assert len(dataset_fingerprint(dataset_root)) == 64


def test_camera_frames_are_decoded_per_observation_step(tmp_path, synthetic):
    """A dataset with a camera: each observation step gets its own decoded frame."""
    from armstack_learning.data import ChunkDataset
    from armstack_learning.features import layout_for_dataset
    from armstack_recorder.lerobot_dataset import (
        CameraSpec,
        FeatureSpec,
        LeRobotDatasetWriter,
        WriterConfig,
    )
    from armstack_recorder.metadata import read_info
    from armstack_recorder.video import VideoConfig

    state, env, action = synthetic.episode(0, frames=12)
    spec = FeatureSpec(state_names=list(synthetic.state_names), action_names=list(synthetic.state_names),
                       env_state_names=synthetic.objects.names, cameras=[CameraSpec("top", 64, 64)])
    cfg = WriterConfig(root=tmp_path / "cam", fps=synthetic.fps, robot_type="armstack_wx250s",
                       features=spec, video=VideoConfig(codec="libx264"))
    brightness = np.linspace(20, 235, 12).astype(np.uint8)  # frame k is uniformly bright
    with LeRobotDatasetWriter(cfg) as writer:
        writer.start_episode("pick")
        for k in range(12):
            image = np.full((64, 64, 3), brightness[k], np.uint8)
            writer.add_frame(state[k], action[k], env[k], {"top": image})
        writer.save_episode()
    layout = layout_for_dataset(read_info(cfg.root)["features"], synthetic.objects, "joint", ("top",))
    assert layout.image_size == (64, 64)
    ds = ChunkDataset(cfg.root, layout, WindowConfig(n_obs_steps=2, chunk_size=4))
    item = ds[5]
    frames = item["observation.images.top"]
    assert frames.shape == (2, 3, 64, 64) and frames.dtype == torch.float32
    np.testing.assert_allclose(frames.mean(dim=(1, 2, 3)).numpy(), brightness[[4, 5]] / 255.0,
                               atol=0.02)
    assert "observation.images.top" in ds.normalizer(NormalizationConfig())


def test_preloaded_frames_of_an_episode_selection_are_that_episodes(tmp_path, synthetic):
    """preload_images with some episodes (kept in memory: only their frames): every sample gets
    the frames of its own episode and step, the same as decoding them on demand."""
    from armstack_learning.data import ChunkDataset
    from armstack_learning.features import layout_for_dataset
    from armstack_recorder.lerobot_dataset import (
        CameraSpec,
        FeatureSpec,
        LeRobotDatasetWriter,
        WriterConfig,
    )
    from armstack_recorder.metadata import read_info
    from armstack_recorder.video import VideoConfig

    spec = FeatureSpec(state_names=list(synthetic.state_names), action_names=list(synthetic.state_names),
                       env_state_names=synthetic.objects.names, cameras=[CameraSpec("top", 64, 64)])
    cfg = WriterConfig(root=tmp_path / "cam", fps=synthetic.fps, robot_type="armstack_wx250s",
                       features=spec, video=VideoConfig(codec="libx264"))
    frames = 8
    brightness = 30 + 70 * np.arange(3)[:, None] + 6 * np.arange(frames)  # (episode, step)
    with LeRobotDatasetWriter(cfg) as writer:
        for e in range(3):
            state, env, action = synthetic.episode(e, frames=frames)
            writer.start_episode("pick")
            for k in range(frames):
                image = np.full((64, 64, 3), brightness[e, k], np.uint8)
                writer.add_frame(state[k], action[k], env[k], {"top": image})
            writer.save_episode()
    layout = layout_for_dataset(read_info(cfg.root)["features"], synthetic.objects, "joint", ("top",))
    window = WindowConfig(n_obs_steps=2, chunk_size=4)
    preloaded = ChunkDataset(cfg.root, layout, window, episodes=(0, 2), preload_images=True)
    on_demand = ChunkDataset(cfg.root, layout, window, episodes=(0, 2))
    assert len(preloaded) == 2 * frames
    for i in range(len(preloaded)):
        e, k = (0, i) if i < frames else (2, i - frames)
        steps = [max(k - 1, 0), k]
        got = preloaded[i]["observation.images.top"]
        np.testing.assert_allclose(got.mean(dim=(1, 2, 3)).numpy(), brightness[e, steps] / 255.0,
                                   atol=0.02)
        np.testing.assert_array_equal(got.numpy(), on_demand[i]["observation.images.top"].numpy())
