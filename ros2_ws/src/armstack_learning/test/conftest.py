"""Fixtures: a small synthetic pick demonstration dataset (LeRobot v3.0, written by the
recorder's writer) and tiny policy configs that train in seconds on a CPU.

Synthetic task: three cubes at random positions per episode (blue absent in episode 1: present
flag 0, position zeros); the joints move smoothly towards a target that depends on the red
cube's position, and the gripper closes halfway through. Actions are the next joint targets, so
the chunk is a deterministic function of the observation and a policy can fit it.

torch is imported inside the fixtures that need it, so the torch-free tests (features) run
without the training dependencies. pytest runs with --import-mode=importlib, so helpers are
fixtures rather than importable modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from armstack_common.robot_names import EE_ACTION_NAMES
from armstack_learning.features import (
    JOINT_NAMES,
    FeatureLayout,
    ObjectSlotsConfig,
    layout_for_dataset,
)
from armstack_recorder.lerobot_dataset import FeatureSpec, LeRobotDatasetWriter, WriterConfig
from armstack_recorder.metadata import read_info

FPS = 50
EPISODES = 3
FRAMES = 40
OBJECTS = ObjectSlotsConfig()


def synthetic_episode(seed: int, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state (T, 7), env (T, 12), action (T, 7)) of one synthetic episode."""
    rng = np.random.default_rng(seed)
    cubes = np.zeros((3, 4), np.float32)
    cubes[:, 0] = rng.uniform(0.15, 0.35, 3)
    cubes[:, 1] = rng.uniform(-0.2, 0.2, 3)
    cubes[:, 2] = 0.015
    cubes[:, 3] = 1.0
    if seed == 1:
        cubes[2] = 0.0  # blue not seen in this episode
    target = np.array([np.arctan2(cubes[0, 1], cubes[0, 0]), 0.3 + cubes[0, 0], -0.4, 0.0,
                       0.8, 0.1, 0.0], np.float32)
    q = np.array([0.0, -0.5, 0.5, 0.0, 0.3, 0.0, 0.035], np.float32)
    states, actions = [], []
    for k in range(frames):
        goal = target.copy()
        goal[6] = 0.035 if k < frames // 2 else 0.012
        a = q + 0.15 * (goal - q)
        states.append(q.copy())
        actions.append(a.astype(np.float32))
        q = a
    env = np.repeat(cubes.reshape(1, -1), frames, axis=0)
    return np.stack(states), env, np.stack(actions)


def write_dataset(root: Path, episodes: int = EPISODES, frames: int = FRAMES) -> Path:
    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(JOINT_NAMES),
                       env_state_names=OBJECTS.names)
    cfg = WriterConfig(root=root, fps=FPS, robot_type="armstack_wx250s", features=spec)
    with LeRobotDatasetWriter(cfg) as writer:
        for e in range(episodes):
            writer.start_episode("put the cubes in the bin")
            for s, env, a in zip(*synthetic_episode(e, frames), strict=True):
                writer.add_frame(s, a, env)
            writer.save_episode()
    return root


VLA_IMAGE = (32, 32)  # (H, W) stored and seen by the tiny VLA
VLA_TASKS = ("put the red cube in the bin", "put the blue cube in the bin")


def vla_episode(seed: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str,
                                                 np.ndarray]:
    """(state (T, 7), action (T, 8), images (T, H, W, 3) uint8, task, env (8,)) of one
    synthetic language-conditioned episode: a red and a blue square on a grey image; the
    instruction names one; the ee moves to where that square is (x, y from its pixel
    position), descends and closes the gripper. The chunk is a function of image, instruction
    and time. env: the squares as object slots red_cube, blue_cube (x, y, z, present)."""
    rng = np.random.default_rng(seed)
    task = VLA_TASKS[seed % 2]
    h, w = VLA_IMAGE
    image = np.full((h, w, 3), 128, np.uint8)
    corners = rng.choice(np.arange(0, h - 6, 2), size=(2, 2), replace=False)  # (2, 2) rows, cols
    image[corners[0, 0]:corners[0, 0] + 6, corners[0, 1]:corners[0, 1] + 6] = (220, 30, 30)
    image[corners[1, 0]:corners[1, 0] + 6, corners[1, 1]:corners[1, 1] + 6] = (30, 30, 220)
    goal = corners[seed % 2] / h  # the named square, in [0, 1)
    states, actions = [], []
    for k in range(frames):
        s = min(1.0, k / (frames / 2))  # reach, then descend and close
        z = 0.2 - 0.15 * max(0.0, (k - frames / 2) / (frames / 2))
        gripper = 0.034 if k < 3 * frames // 4 else 0.0
        states.append(np.array([s, goal[0] * s, goal[1] * s, 0.0, z, 0.0, gripper], np.float32))
        actions.append(np.array([0.15 + 0.2 * goal[0] * s, -0.1 + 0.2 * goal[1] * s, z,
                                 0.0, 0.7071, 0.0, 0.7071, gripper], np.float32))
    env = np.array([[0.15 + 0.2 * corners[i, 0] / h, -0.1 + 0.2 * corners[i, 1] / h, 0.015, 1.0]
                    for i in range(2)], np.float32).reshape(-1)
    return (np.stack(states), np.stack(actions), np.repeat(image[None], frames, axis=0), task,
            env)


def write_vla_dataset(root: Path, episodes: int = 4, frames: int = 12) -> Path:
    from armstack_recorder.lerobot_dataset import CameraSpec
    from armstack_recorder.video import VideoConfig

    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(EE_ACTION_NAMES),
                       env_state_names=ObjectSlotsConfig(("red_cube", "blue_cube")).names,
                       cameras=[CameraSpec("color", *VLA_IMAGE)])
    cfg = WriterConfig(root=root, fps=10, robot_type="armstack_wx250s", features=spec,
                       video=VideoConfig(codec="libx264", crf=0))
    with LeRobotDatasetWriter(cfg) as writer:
        for e in range(episodes):
            states, actions, images, task, env = vla_episode(e, frames)
            writer.start_episode(task)
            for s, a, img in zip(states, actions, images, strict=True):
                writer.add_frame(s, a, env, images={"color": img})
            writer.save_episode()
    return root


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "torchrun: launches a multi-process torchrun job (~30 s)")
    try:
        import torch
    except ImportError:
        return
    # The test models are tiny: intra-op threads cost more than they give, and on a shared
    # 2-core machine spinning worker threads made a training step ~10x slower.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic() -> SimpleNamespace:
    """The generators above: episode(seed) -> (state, env, action); write(root, episodes, frames)."""
    return SimpleNamespace(episode=synthetic_episode, write=write_dataset, frames=FRAMES,
                           episodes=EPISODES, fps=FPS, objects=OBJECTS, state_names=JOINT_NAMES)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes x 40 frames; shared read-only by all tests."""
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "pick")


@pytest.fixture(scope="session")
def layout(dataset_root: Path) -> FeatureLayout:
    return layout_for_dataset(read_info(dataset_root)["features"], OBJECTS, "joint")


@pytest.fixture(scope="session")
def tiny_act_config() -> Callable:
    """ACTConfig(**overrides) of a model with ~40k parameters."""
    from armstack_learning.act import ACTConfig

    def make(**overrides: object) -> ACTConfig:
        values = {"chunk_size": 10, "n_action_steps": 10, "dim_model": 32, "n_heads": 2,
                  "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
                  "latent_dim": 4, "n_vae_encoder_layers": 1, "dropout": 0.0,
                  "optimizer_lr": 1e-3, "resnet_width": 8}
        values.update(overrides)
        return ACTConfig(**values)
    return make


@pytest.fixture(scope="session")
def tiny_diffusion_config() -> Callable:
    """DiffusionConfig(**overrides) of a two-level U-Net with ~50k parameters."""
    from armstack_learning.diffusion import DiffusionConfig
    from armstack_policy.ddim import NoiseSchedule

    def make(**overrides: object) -> DiffusionConfig:
        values = {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "down_dims": (16, 32),
                  "kernel_size": 3, "n_groups": 4, "timestep_embed_dim": 16,
                  "image_feature_dim": 8, "resnet_width": 8,
                  "schedule": NoiseSchedule(num_train_timesteps=100), "num_inference_steps": 5,
                  "optimizer_lr": 1e-3}
        values.update(overrides)
        return DiffusionConfig(**values)
    return make


@pytest.fixture(scope="session")
def make_dataset(dataset_root: Path, layout: FeatureLayout) -> Callable:
    """(n_obs, chunk[, episodes]) -> ChunkDataset over the shared synthetic dataset."""
    from armstack_learning.data import ChunkDataset, WindowConfig

    def make(n_obs: int, chunk: int, episodes=None):  # noqa: ANN202, ANN001 - lazy import
        return ChunkDataset(dataset_root, layout, WindowConfig(n_obs_steps=n_obs, chunk_size=chunk),
                            episodes=episodes)
    return make


@pytest.fixture(scope="session")
def make_batch() -> Callable:
    """(dataset, indices) -> collated batch {feature: (B, ...)}."""
    import torch

    def make(ds, indices: list[int]) -> dict:  # noqa: ANN001
        items = [ds[i] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return make


@pytest.fixture(scope="session")
def make_policy(make_dataset: Callable) -> Callable:
    """(kind, config) -> policy with the normalization training would use (min/max actions for
    diffusion), built over the synthetic dataset with a fixed seed."""
    import torch
    from armstack_learning.factory import build_policy, window_config
    from armstack_learning.normalize import NormalizationConfig

    def make(kind: str, cfg, seed: int = 0):  # noqa: ANN001, ANN202
        window = window_config(cfg)
        ds = make_dataset(window.n_obs_steps, window.chunk_size)
        norm = ds.normalizer(NormalizationConfig(),
                             action_mode="min_max" if kind == "diffusion" else None)
        torch.manual_seed(seed)
        return build_policy(kind, cfg, ds.layout, norm), ds
    return make


@pytest.fixture(scope="session")
def vla_dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes x 12 frames of 32x32 images, two instructions; shared read-only."""
    return write_vla_dataset(tmp_path_factory.mktemp("vla") / "pick")


@pytest.fixture(scope="session")
def vla_layout(vla_dataset_root: Path) -> FeatureLayout:
    return layout_for_dataset(read_info(vla_dataset_root)["features"], None, "ee", ["color"])


@pytest.fixture(scope="session")
def tiny_vla_config(vla_dataset_root: Path) -> Callable:
    """VLAConfig(**overrides) of a ~30k-parameter model, vocabulary from the dataset."""
    from armstack_learning.factory import prepare_config
    from armstack_learning.vla import VLAConfig

    def make(**overrides: object) -> VLAConfig:
        values = {"image_size": VLA_IMAGE, "stem_channels": (8, 8), "patch_size": 2,
                  "dim_model": 32, "n_heads": 2, "n_layers": 1, "dim_feedforward": 64,
                  "dropout": 0.0, "chunk_size": 2, "action_stride": 2, "n_action_steps": 1,
                  "max_instruction_tokens": 8, "random_shift": 0, "state_dropout": 0.0,
                  "object_loss_weight": 0.0, "optimizer_lr": 3e-3}
        values.update(overrides)
        return prepare_config("vla", VLAConfig(**values), vla_dataset_root)
    return make


@pytest.fixture(scope="session")
def make_vla() -> Callable:
    """(config, root, layout, seed) -> (VLA policy with min/max action bins, its dataset)."""
    import torch
    from armstack_learning.factory import build_policy, make_dataset
    from armstack_learning.normalize import NormalizationConfig

    def make(cfg, root: Path, layout: FeatureLayout, seed: int = 0):  # noqa: ANN001, ANN202
        ds = make_dataset(cfg, root, layout)
        norm = ds.normalizer(NormalizationConfig(), action_mode="min_max")
        torch.manual_seed(seed)
        return build_policy("vla", cfg, layout, norm), ds
    return make
