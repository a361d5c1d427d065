"""Training samples from a LeRobot v3.0 dataset: observation history + action chunk windows.

Sample at global frame t of episode e (frames e.start .. e.end-1):
    observation.*   (n_obs, D)  frames t-n_obs+1 .. t; before the episode start the first frame is
                                repeated (the robot was there before recording began)
    action          (k, D_a)    actions t .. t+k-1; action 0 is the command recorded with the
                                observation of frame t (the time convention of ChunkBuffer);
                                with action_stride s the actions of t, t+s, .., t+(k-1)s
    action_is_pad   (k,) bool   True past the episode end, where the last action is repeated;
                                ACT leaves those steps out of its loss
Images are decoded from the episode's video at the frames' timestamps, float in [0, 1],
(n_obs, 3, H, W); resized with INTER_AREA when the policy takes another size than the dataset
stores (armstack_policy.observation.image_feature resizes camera frames the same way at run
time). `preload_images` decodes every frame once into memory (uint8 at the policy's size): a
small image policy then trains without decoding video at every sample.
With a tokenizer, a sample also holds observation.language.tokens (L,) int64, the ids of its
episode's task string. `targets` names vector features served at frame t only, (D,), for
training losses that are not inputs (the VLA's object localization).
`episodes` trains on some episodes of a dataset: sample i is then the i-th frame of those
episodes, and the normalization statistics are computed from their frames, since the dataset's
meta/stats.json describes all of them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
from armstack_recorder.stats import vector_stats
from torch.utils.data import Dataset

from armstack_learning.augment import (
    BASE_JOINT,
    BaseRotationConfig,
    RelocationConfig,
    carrying_frames,
    relocate_slots,
    rotate_about_base,
    rotation_safe,
    table_region,
    untouched_slots,
    waiting_slots,
)
from armstack_learning.features import (
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    GRIPPER_JOINT,
    LANGUAGE_KEY,
    STATE_KEY,
    FeatureLayout,
    canonicalize_quaternions,
    hold_last_seen,
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
    action_stride: int = 1  # frames between the chunk's actions (VLA waypoints)

    def __post_init__(self) -> None:
        if not isinstance(self.n_obs_steps, int) or self.n_obs_steps < 1:
            raise ValueError(f"WindowConfig.n_obs_steps must be an int >= 1, got {self.n_obs_steps!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"WindowConfig.chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if not isinstance(self.action_stride, int) or self.action_stride < 1:
            raise ValueError("WindowConfig.action_stride must be an int >= 1, got "
                             f"{self.action_stride!r}")


class ChunkDataset(Dataset):
    """(observation history, action chunk) windows at every frame of every episode."""

    def __init__(self, root: Path | str, layout: FeatureLayout, window: WindowConfig,
                 image_size: tuple[int, int] | None = None, preload_images: bool = False,
                 tokenize: Callable[[str], np.ndarray] | None = None,
                 targets: tuple[str, ...] = (),
                 relocation: RelocationConfig | None = None,
                 rotation: BaseRotationConfig | None = None,
                 episodes: Sequence[int] | None = None) -> None:
        """image_size (H, W): the size samples carry (default: the dataset's); tokenize: task
        string -> (L,) ids, to add observation.language.tokens to every sample; relocation:
        move the cubes a sample's actions ignore (armstack_learning.augment), drawing from
        torch's RNG, which checkpoints save and restore; rotation: turn reaches about the arm's
        base (armstack_learning.augment; end-effector actions only), from the same RNG;
        episodes: the episode indices to sample from (default: all)."""
        self.reader = LeRobotDatasetReader(root)
        self.layout = layout
        self.window = window
        layout.check_dataset(self.reader.features)
        self.image_size = tuple(image_size or layout.image_size or ())
        if self.reader.num_frames == 0:
            raise ValueError(f"{root}: the dataset has no frames")
        cols = self.reader.columns
        self._state = np.asarray(cols[STATE_KEY], np.float32)  # (N, D_s)
        self._env = None  # (N, C*F), with the layout's object hold applied
        if layout.objects:
            self._env = hold_last_seen(np.asarray(cols[ENV_STATE_KEY], np.float32),
                                       np.asarray(cols["episode_index"]),
                                       np.asarray(cols["timestamp"], np.float64), layout.objects)
        actions = np.asarray(cols[ACTION_KEY], np.float32)  # (N, D_a)
        quat = layout.action.quaternion_index
        self._action = canonicalize_quaternions(actions, quat) if quat else actions
        self._episode = np.asarray(cols["episode_index"], np.int64)
        self._timestamp = np.asarray(cols["timestamp"], np.float64)
        starts = np.array([ep.from_index for ep in self.reader.meta.episodes], np.int64)
        ends = np.array([ep.to_index for ep in self.reader.meta.episodes], np.int64)
        self._start = starts[self._episode]  # (N,) first frame of each frame's episode
        self._end = ends[self._episode]  # (N,) one past its last frame
        self.episodes = select_episodes(episodes, self.reader.num_episodes, root)
        self._frames_used = np.flatnonzero(np.isin(self._episode, self.episodes))  # sample -> frame
        missing = [k for k in targets if k not in cols]
        if missing:
            raise ValueError(f"dataset has no feature {missing} to serve as a training target")
        self._targets = {k: np.array(cols[k], np.float32) for k in targets}  # key -> (N, D)
        self._task_index = np.asarray(cols["task_index"], np.int64)  # (N,)
        self._task_tokens = None  # (n_tasks, L) ids of each task string
        if tokenize is not None:
            self._task_tokens = np.stack([tokenize(t) for t in self.reader.tasks])
        # image key -> (len(self), H, W, 3) uint8: the selected episodes' frames, in
        # `_frames_used` order (row i is frame _frames_used[i])
        self._frames: dict[str, np.ndarray] = {}
        self._relocation = relocation if relocation and relocation.enabled else None
        if self._relocation:
            self._prepare_relocation(self._relocation)
        self._rotation = rotation if rotation and rotation.enabled else None
        if self._rotation:
            self._prepare_rotation(self._rotation)
        if preload_images:
            self._preload()

    @property
    def fps(self) -> int:
        return self.reader.fps

    @property
    def root(self) -> Path:
        return self.reader.root

    @property
    def all_episodes(self) -> bool:
        return len(self.episodes) == self.reader.num_episodes

    def __len__(self) -> int:
        return len(self._frames_used)

    def obs_indices(self, t: int) -> np.ndarray:
        """(n_obs,) global frame indices of the observation history of frame t."""
        idx = np.arange(t - self.window.n_obs_steps + 1, t + 1)
        return np.maximum(idx, self._start[t])

    def action_indices(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(k,) global frame indices of the action chunk of frame t and (k,) padding mask."""
        idx = t + np.arange(self.window.chunk_size) * self.window.action_stride
        pad = idx >= self._end[t]
        return np.minimum(idx, self._end[t] - 1), pad

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range [0, {len(self)})")
        t = int(self._frames_used[i])
        obs = self.obs_indices(t)
        act, pad = self.action_indices(t)
        state, actions = self._state[obs], self._action[act]
        env = self._sample_env(t, obs) if self._env is not None else None
        if self._rotation is not None and self._rotation_safe[t] and (
                float(torch.rand(())) < self._rotation.probability):
            angle = math.radians(self._rotation.max_angle_deg) * (2.0 * float(torch.rand(())) - 1.0)
            state, env, actions = rotate_about_base(
                angle, state, env, actions, slots=np.flatnonzero(self._untouched[t]),
                **self._rotation_columns)
        item = {STATE_KEY: torch.from_numpy(state),
                ACTION_KEY: torch.from_numpy(actions),
                ACTION_PAD_KEY: torch.from_numpy(pad)}
        if env is not None:
            item[ENV_STATE_KEY] = torch.from_numpy(env)
        for key in self.layout.image_keys:
            if key in self._frames:
                rows = np.searchsorted(self._frames_used, obs)
                frames = self._frames[key][rows]  # (n_obs, H, W, 3) uint8
            else:
                times = self._timestamp[obs]  # episode-relative, as the format stores them
                frames = resize_frames(self.reader.decode_video(int(self._episode[t]), key, times),
                                       self.image_size)
            item[key] = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        if self._task_tokens is not None:
            item[LANGUAGE_KEY] = torch.from_numpy(self._task_tokens[self._task_index[t]])
        for key, values in self._targets.items():
            item.setdefault(key, torch.from_numpy(values[t]))
        return item

    def _gripper_action(self, purpose: str) -> np.ndarray:
        """(N,) the commanded gripper, which tells the picks apart."""
        gripper = [n for n in self.layout.action.names if n in (GRIPPER_JOINT, "gripper")]
        if not gripper:
            raise ValueError(f"{purpose} needs a gripper action to tell the picks apart; "
                             f"the actions are {self.layout.action.names}")
        return self._action[:, self.layout.action.names.index(gripper[0])]

    def _prepare_relocation(self, config: RelocationConfig) -> None:
        if self._env is None:
            raise ValueError("moving objects needs an environment state: the layout has no "
                             "object slots")
        fields = self.layout.objects.fields
        self._waiting = waiting_slots(  # (N, C)
            self._env, self._gripper_action("moving objects"),
            self._episode, fields, self.window.chunk_size * self.window.action_stride,
            config.settle_frames)
        used = self._frames_used
        self._region = table_region(self._env[used], self._episode[used], fields)

    def _prepare_rotation(self, config: BaseRotationConfig) -> None:
        names = self.layout.action.names
        quaternion = self.layout.action.quaternion_index
        if quaternion is None or not {"x", "y"} <= set(names):
            raise ValueError(f"turning reaches about the base needs end-effector actions (x, y "
                             f"and a quaternion in base_link); the actions are {names}")
        if BASE_JOINT not in self.layout.state_names:
            raise ValueError(f"turning reaches about the base needs the {BASE_JOINT!r} joint in "
                             f"the state; the state is {self.layout.state_names}")
        position = (names.index("x"), names.index("y"))
        carrying = carrying_frames(self._action[:, list(position)],
                                   self._gripper_action("turning reaches about the base"),
                                   self._episode, config.carry_tolerance)
        self._rotation_safe = rotation_safe(  # (N,)
            carrying, self._episode, self.window.chunk_size * self.window.action_stride)
        fields = self.layout.objects.fields if self.layout.objects else ()
        self._untouched = (untouched_slots(self._env, self._episode, fields)  # (N, C)
                           if self._env is not None else np.zeros((len(self._action), 0), bool))
        self._rotation_columns = dict(base_joint=self.layout.state_names.index(BASE_JOINT),
                                      fields=fields, position=position, quaternion=quaternion)
        used = self._frames_used
        logger.info("turning reaches about the base: %.0f%% of the samples may turn",
                    100.0 * self._rotation_safe[used].mean())

    def _sample_env(self, t: int, obs: np.ndarray) -> np.ndarray:
        """The environment states of frame t's observation history, its waiting cubes moved
        with the relocation's probability."""
        env = self._env[obs]
        config = self._relocation
        if config is None or float(torch.rand(())) >= config.probability:
            return env
        slots = np.flatnonzero(self._waiting[t])
        if not slots.size:
            return env
        # 16 candidates a cube: free spots are most of the table, so a cube rarely stays put
        uniform = torch.rand(16 * len(slots), 2, dtype=torch.float64).numpy()
        return relocate_slots(env, slots, self.layout.objects.fields, self._region,
                              config.min_separation, uniform)

    def task(self, i: int) -> str:
        """The task string of sample i's episode."""
        return self.reader.tasks[int(self._task_index[self._frames_used[i]])]

    def _preload(self) -> None:
        t0 = time.perf_counter()
        h, w = self.image_size
        for key in self.layout.image_keys:
            frames = np.empty((len(self), h, w, 3), np.uint8)
            for e in self.episodes:
                span = self.reader.episode_range(int(e))
                row = int(np.searchsorted(self._frames_used, span.start))  # episodes are whole
                times = self._timestamp[span.start:span.stop]
                frames[row:row + len(span)] = resize_frames(
                    self.reader.decode_video(int(e), key, times), self.image_size)
            self._frames[key] = frames
        logger.info("preloaded %d frames of %d camera(s) at %dx%d in %.1f s (%.0f MB)",
                    len(self),
                    len(self._frames), w, h, time.perf_counter() - t0,
                    sum(f.nbytes for f in self._frames.values()) / 1e6)

    def normalizer(self, config: NormalizationConfig,
                   action_mode: str | None = None) -> FeatureNormalizer:
        """Affine maps from the dataset's meta/stats.json (actions of an 'ee' layout from the
        canonicalized quaternions this dataset serves; all vectors from the frames used when
        the samples are some episodes only). action_mode overrides config.action."""
        stats = self.reader.stats or {}
        affines: dict[str, Affine] = {
            STATE_KEY: Affine(*affine_from_stats(self._stats(STATE_KEY, self._state, stats),
                                                 config.state, config.min_scale)),
            ACTION_KEY: Affine(*affine_from_stats(
                self._stats(ACTION_KEY, self._action, stats,
                            recorded=not self.layout.action.quaternion_index),
                action_mode or config.action, config.min_scale)),
        }
        if self._env is not None:
            # The recorded statistics describe the unheld values.
            affines[ENV_STATE_KEY] = Affine(*affine_from_stats(
                self._stats(ENV_STATE_KEY, self._env, stats,
                            recorded=self.layout.objects.hold <= 0),
                config.env_state, config.min_scale))
        for key in self.layout.image_keys:
            affines[key] = image_affine(stats.get(key))
        return FeatureNormalizer(affines)

    def _stats(self, key: str, values: np.ndarray, stats: dict,
               recorded: bool = True) -> dict[str, np.ndarray]:
        """meta/stats.json's entry for key when `recorded` and every episode is used, else the
        statistics of `values` (N, D) over the frames used."""
        if recorded and self.all_episodes:
            if key in stats:
                return stats[key]
            logger.warning("meta/stats.json has no %s; computing it from the data", key)
        return vector_stats(values[self._frames_used])


def parse_episode_ranges(text: str) -> tuple[int, ...]:
    """'0-29,50-69' or '3,7' -> episode indices in the order given (ranges inclusive, as
    LeRobot's and our tools print them); a malformed item is an error that names it."""
    episodes: list[int] = []
    for item in text.split(","):
        first, sep, last = item.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ValueError(f"episode selection {text!r}: {item.strip()!r} is not an index "
                             "or a range A-B") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"episode selection {text!r}: {item.strip()!r} is not an index "
                             ">= 0 or a range A-B with A <= B")
        episodes.extend(range(lo, hi + 1))
    return tuple(episodes)


def format_episode_ranges(episodes: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5': the form parse_episode_ranges reads."""
    items: list[str] = []
    ordered = sorted(int(e) for e in episodes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        items.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(items)


def select_episodes(episodes: Sequence[int] | None, num_episodes: int,
                    root: Path | str) -> np.ndarray:
    """(E,) sorted episode indices to sample from: all when None; an index the dataset does not
    have, a repeat or an empty selection is an error that names it."""
    if episodes is None:
        return np.arange(num_episodes)
    chosen = np.asarray(list(episodes), np.int64)
    if not chosen.size:
        raise ValueError(f"{root}: the episode selection is empty")
    missing = sorted({int(e) for e in chosen if not 0 <= e < num_episodes})
    if missing:
        raise ValueError(f"{root}: episode(s) {missing} selected, but the dataset has episodes "
                         f"0-{num_episodes - 1}")
    if len(np.unique(chosen)) != chosen.size:
        raise ValueError(f"{root}: the episode selection repeats an episode: {chosen.tolist()}")
    return np.sort(chosen)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H0, W0, 3) uint8 -> (T, H, W, 3) uint8 at size (H, W) with INTER_AREA (averaging when
    shrinking, as armstack_policy.observation.image_feature does for the running policy)."""
    if frames.shape[1:3] == tuple(size):
        return frames
    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                     for f in frames])


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
