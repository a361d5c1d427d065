"""The export contract end to end: policies trained and exported by armstack_learning (torch)
run by this runtime (ONNX Runtime, NumPy DDIM) give torch's chunks. Skipped without the
training dependencies (requirements-train.txt)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")
pytest.importorskip("armstack_learning")

from armstack_learning.act import ACTConfig  # noqa: E402
from armstack_learning.diffusion import DiffusionConfig  # noqa: E402
from armstack_learning.export import export_checkpoint  # noqa: E402
from armstack_learning.factory import policy_from_checkpoint  # noqa: E402
from armstack_learning.features import (JOINT_NAMES, ObjectSlotsConfig,  # noqa: E402
                                        layout_for_dataset)
from armstack_learning.train import TrainConfig, train  # noqa: E402
from armstack_policy.ddim import NoiseSchedule  # noqa: E402
from armstack_policy.onnx_policy import RunnerConfig, load_policy  # noqa: E402
from armstack_recorder.lerobot_dataset import (FeatureSpec, LeRobotDatasetWriter,  # noqa: E402
                                               WriterConfig)
from armstack_recorder.metadata import read_info  # noqa: E402

OBJECTS = ObjectSlotsConfig()
FPS = 50


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two short episodes of smooth random joint motion with three cube slots."""
    torch.set_num_threads(1)  # tiny models: threads cost more than they give on 2 cores
    root = tmp_path_factory.mktemp("data") / "pick"
    rng = np.random.default_rng(0)
    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(JOINT_NAMES),
                       env_state_names=OBJECTS.names)
    with LeRobotDatasetWriter(WriterConfig(root=root, fps=FPS, robot_type="armstack_wx250s",
                                           features=spec)) as writer:
        for _ in range(2):
            writer.start_episode("put the cubes in the bin")
            q = rng.uniform(-0.5, 0.5, 7).astype(np.float32)
            env = np.tile([0.3, 0.0, 0.015, 1.0], 3).astype(np.float32)
            for _ in range(30):
                action = (q + rng.normal(0, 0.02, 7)).astype(np.float32)
                writer.add_frame(q, action, env)
                q = action
            writer.save_episode()
    return root, layout_for_dataset(read_info(root)["features"], OBJECTS, "joint")


def export(dataset, tmp_path_factory, kind: str, cfg):
    root, layout = dataset
    out = tmp_path_factory.mktemp(kind)
    tc = TrainConfig(policy=kind, dataset=str(root), out=str(out / "run"), steps=2, batch_size=4,
                     save_every=2, log_every=1)
    checkpoint = train(tc, cfg, layout)
    result = export_checkpoint(checkpoint, out / "model")
    policy, _ = policy_from_checkpoint(checkpoint)
    return result.onnx_path, policy


def observation(n_obs: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    env = np.tile([0.25, 0.05, 0.015, 1.0], 3)
    return {"observation.state": rng.uniform(-0.5, 0.5, (n_obs, 7)).astype(np.float32),
            "observation.environment_state": np.tile(env, (n_obs, 1)).astype(np.float32)}


def test_exported_act_runs_as_trained(dataset, tmp_path_factory):
    cfg = ACTConfig(chunk_size=10, n_action_steps=10, dim_model=32, n_heads=2, dim_feedforward=64,
                    n_encoder_layers=1, n_decoder_layers=1, latent_dim=4, n_vae_encoder_layers=1,
                    dropout=0.0, resnet_width=8)
    path, policy = export(dataset, tmp_path_factory, "act", cfg)
    runner = load_policy(path, RunnerConfig())
    obs = observation(1)
    chunk = runner.predict_chunk(obs)
    with torch.no_grad():
        want = policy.predict_chunk({k: torch.from_numpy(v[None]) for k, v in obs.items()})
    assert chunk.shape == (10, 7)
    np.testing.assert_allclose(chunk, want.numpy()[0], atol=1e-4)


def test_exported_diffusion_samples_as_trained(dataset, tmp_path_factory):
    cfg = DiffusionConfig(n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=(16, 32),
                          kernel_size=3, n_groups=4, timestep_embed_dim=16, image_feature_dim=8,
                          resnet_width=8, schedule=NoiseSchedule(num_train_timesteps=100),
                          num_inference_steps=5)
    path, policy = export(dataset, tmp_path_factory, "diffusion", cfg)
    runner = load_policy(path, RunnerConfig(seed=11))
    assert runner.card.n_obs_steps == 2 and runner.num_steps == 5
    obs = observation(2)
    chunk = runner.predict_chunk(obs)
    noise = np.random.default_rng(11).standard_normal((1, 8, 7)).astype(np.float32)
    with torch.no_grad():
        want = policy.predict_chunk({k: torch.from_numpy(v[None]) for k, v in obs.items()},
                                    noise=torch.from_numpy(noise))
    np.testing.assert_allclose(chunk, want.numpy()[0], atol=1e-4)
