"""Training samples from a LeRobot v3.0 dataset: observation history + action chunk windows.

Sample at global frame t of episode e (frames e.start .. e.end-1):
    observation.*   (n_obs, D)  frames t-n_obs+1 .. t; before the episode start the first frame is
                                repeated (the robot was there before recording began)
    action          (k, D_a)    actions t .. t+k-1; action 0 is the command recorded with the
                                observation of frame t (the time convention of ChunkBuffer)
    action_is_pad   (k,) bool   True past the episode end, where the last action is repeated;
                                ACT leaves those steps out of its loss
Images are decoded from the episode's video at the frames' timestamps, float in [0, 1],
(n_obs, 3, H, W).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
from armstack_recorder.stats import vector_stats
from torch.utils.data import Dataset

from armstack_learning.features import (
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    FeatureLayout,
    canonicalize_quaternions,
)
from armstack_learning.normalize import (
    Affine,
    FeatureNormalizer,
    NormalizationConfig,
    affine_from_stats,
    image_affine,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowConfig:
    """Temporal extent of one sample; validated on construction."""

    n_obs_steps: int = 1
    chunk_size: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.n_obs_steps, int) or self.n_obs_steps < 1:
            raise ValueError(f"WindowConfig.n_obs_steps must be an int >= 1, got {self.n_obs_steps!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"WindowConfig.chunk_size must be an int >= 1, got {self.chunk_size!r}")


class ChunkDataset(Dataset):
    """(observation history, action chunk) windows at every frame of every episode."""

    def __init__(self, root: Path | str, layout: FeatureLayout, window: WindowConfig) -> None:
        self.reader = LeRobotDatasetReader(root)
        self.layout = layout
        self.window = window
        layout.check_dataset(self.reader.features)
        if self.reader.num_frames == 0:
            raise ValueError(f"{root}: the dataset has no frames")
        cols = self.reader.columns
        self._state = np.asarray(cols[STATE_KEY], np.float32)  # (N, D_s)
        self._env = np.asarray(cols[ENV_STATE_KEY], np.float32) if layout.objects else None
        actions = np.asarray(cols[ACTION_KEY], np.float32)  # (N, D_a)
        quat = layout.action.quaternion_index
        self._action = canonicalize_quaternions(actions, quat) if quat else actions
        self._episode = np.asarray(cols["episode_index"], np.int64)
        self._timestamp = np.asarray(cols["timestamp"], np.float64)
        starts = np.array([ep.from_index for ep in self.reader.meta.episodes], np.int64)
        ends = np.array([ep.to_index for ep in self.reader.meta.episodes], np.int64)
        self._start = starts[self._episode]  # (N,) first frame of each frame's episode
        self._end = ends[self._episode]  # (N,) one past its last frame

    @property
    def fps(self) -> int:
        return self.reader.fps

    @property
    def root(self) -> Path:
        return self.reader.root

    def __len__(self) -> int:
        return self.reader.num_frames

    def obs_indices(self, t: int) -> np.ndarray:
        """(n_obs,) global frame indices of the observation history of frame t."""
        idx = np.arange(t - self.window.n_obs_steps + 1, t + 1)
        return np.maximum(idx, self._start[t])

    def action_indices(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(k,) global frame indices of the action chunk of frame t and (k,) padding mask."""
        idx = np.arange(t, t + self.window.chunk_size)
        pad = idx >= self._end[t]
        return np.minimum(idx, self._end[t] - 1), pad

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        if not 0 <= t < len(self):
            raise IndexError(f"sample {t} out of range [0, {len(self)})")
        obs = self.obs_indices(t)
        act, pad = self.action_indices(t)
        item = {STATE_KEY: torch.from_numpy(self._state[obs]),
                ACTION_KEY: torch.from_numpy(self._action[act]),
                ACTION_PAD_KEY: torch.from_numpy(pad)}
        if self._env is not None:
            item[ENV_STATE_KEY] = torch.from_numpy(self._env[obs])
        if self.layout.cameras:
            episode = int(self._episode[t])
            times = self._timestamp[obs]  # episode-relative, as the format stores them
            for key in self.layout.image_keys:
                frames = self.reader.decode_video(episode, key, times)  # (n_obs, H, W, 3) uint8
                item[key] = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        return item

    def normalizer(self, config: NormalizationConfig,
                   action_mode: str | None = None) -> FeatureNormalizer:
        """Affine maps from the dataset's meta/stats.json (actions of an 'ee' layout from the
        canonicalized quaternions this dataset serves). action_mode overrides config.action."""
        stats = self.reader.stats or {}
        affines: dict[str, Affine] = {
            STATE_KEY: Affine(*affine_from_stats(self._stats(STATE_KEY, self._state, stats),
                                                 config.state, config.min_scale)),
            ACTION_KEY: Affine(*affine_from_stats(self._action_stats(stats),
                                                  action_mode or config.action, config.min_scale)),
        }
        if self._env is not None:
            affines[ENV_STATE_KEY] = Affine(*affine_from_stats(
                self._stats(ENV_STATE_KEY, self._env, stats), config.env_state, config.min_scale))
        for key in self.layout.image_keys:
            affines[key] = image_affine(stats.get(key))
        return FeatureNormalizer(affines)

    @staticmethod
    def _stats(key: str, values: np.ndarray, stats: dict) -> dict[str, np.ndarray]:
        if key in stats:
            return stats[key]
        logger.warning("meta/stats.json has no %s; computing it from the data", key)
        return vector_stats(values)

    def _action_stats(self, stats: dict) -> dict[str, np.ndarray]:
        if self.layout.action.quaternion_index:
            return vector_stats(self._action)
        return self._stats(ACTION_KEY, self._action, stats)


def dataset_fingerprint(root: Path | str) -> str:
    """sha256 over the dataset's metadata and data files (path + content); videos count by path
    and size only, so hashing stays fast on hours of footage."""
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in files:
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix == ".mp4":
            digest.update(str(path.stat().st_size).encode())
        else:
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
