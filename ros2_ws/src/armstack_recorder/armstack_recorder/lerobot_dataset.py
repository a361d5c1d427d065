"""LeRobot v3.0 dataset writer and reader for armstack demonstrations (no ROS).

Writer: one episode at a time, `start_episode(task)`, `add_frame(...)` per control step,
`save_episode()` or `discard_episode()`, `close()`. Opening an existing dataset resumes it
(the schema must match) and appends.

File packing: every saved episode gets its own data parquet, its own mp4 per camera and its own
meta/episodes parquet, at the next (chunk, file) after the last one in use. v3.0 allows that
(each episode row points at its files; a file holding one episode is a valid file), LeRobot
itself starts a new file when it resumes a dataset, and it buys the durability the recorder
needs cheaply:
- a finished episode's files are never opened for writing again, so no later crash or bug can
  damage them (packing would rewrite or re-mux earlier episodes on every save);
- saving costs O(episode), not O(file): no re-muxing of a 200 MB video per episode.
Files are written to a hidden scratch dir (.armstack_tmp), fsync'ed and moved into place with
os.replace; meta/info.json is replaced last and is the commit record. A process killed while an
episode is recorded leaves only scratch files; killed inside save_episode it can leave files
of the uncommitted episode, which readers ignore (info.json does not count them) and the
writer deletes on its next open. stats.json is replaced just before info.json, so only a kill
between those two renames leaves stats.json counting the uncommitted episode; the validator
reports that and the writer's next open rewrites it from the committed episodes. The size
limits of info.json are recorded for LeRobot's tools; an episode is never split, so a single
episode larger than a limit only warns.

Timestamps: the format needs frame k at timestamp k/fps exactly (videos are decoded at those
times), so that is what is stored. add_frame's optional `timestamp` is the sample's real time;
the writer measures how far the samples drift from the k/fps grid and reports it.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armstack_recorder import layout
from armstack_recorder.metadata import (
    DatasetFormatError,
    DatasetMeta,
    Episode,
    load_meta,
    read_data_columns,
)
from armstack_recorder.stats import (
    DatasetStats,
    aggregate_stats,
    flatten_stats,
    stats_to_json,
    vector_stats,
)
from armstack_recorder.video import (
    DEFAULT_TOLERANCE_S,
    StreamingEncoder,
    VideoConfig,
    canonical_codec_name,
    decode_frames,
    probe_video,
)

logger = logging.getLogger(__name__)

_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def _check_names(field_name: str, names: list[str], allow_empty: bool) -> None:
    if not isinstance(names, (list, tuple)) or (not names and not allow_empty):
        raise ValueError(f"FeatureSpec.{field_name} must be a non-empty list of names")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"FeatureSpec.{field_name} must hold non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"FeatureSpec.{field_name} has duplicate names: {names!r}")


@dataclass(frozen=True)
class CameraSpec:
    name: str  # feature key is observation.images.<name>
    height: int
    width: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _CAMERA_NAME.match(self.name):
            raise ValueError(f"CameraSpec.name must match {_CAMERA_NAME.pattern}, "
                             f"got {self.name!r}")
        for attr in ("height", "width"):
            value = getattr(self, attr)
            # yuv420p halves chroma resolution, so the encoders need even sizes
            if not isinstance(value, int) or value < 2 or value % 2:
                raise ValueError(f"CameraSpec.{attr} must be an even int >= 2, got {value!r}")

    @property
    def key(self) -> str:
        return layout.IMAGE_PREFIX + self.name


@dataclass
class FeatureSpec:
    """What a frame holds: joint state, action, optional environment state, cameras."""

    state_names: list[str]
    action_names: list[str]
    env_state_names: list[str] = field(default_factory=list)  # empty: no environment_state
    cameras: list[CameraSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_names("state_names", self.state_names, allow_empty=False)
        _check_names("action_names", self.action_names, allow_empty=False)
        _check_names("env_state_names", self.env_state_names, allow_empty=True)
        if not all(isinstance(c, CameraSpec) for c in self.cameras):
            raise ValueError("FeatureSpec.cameras must hold CameraSpec items")
        _check_names("cameras", [c.name for c in self.cameras], allow_empty=True)

    def to_features(self) -> dict[str, dict]:
        """info.json features (video info blocks are added from the first encoded episode)."""
        def vec(names: list[str]) -> dict:
            return {"dtype": "float32", "shape": [len(names)], "names": list(names)}

        features = {layout.STATE_KEY: vec(self.state_names)}
        if self.env_state_names:
            features[layout.ENV_STATE_KEY] = vec(self.env_state_names)
        features[layout.ACTION_KEY] = vec(self.action_names)
        for cam in self.cameras:
            features[cam.key] = {"dtype": "video", "shape": [cam.height, cam.width, 3],
                                 "names": ["height", "width", "channels"]}
        features.update({k: dict(v) for k, v in layout.DEFAULT_FEATURES.items()})
        return features


@dataclass
class WriterConfig:
    """Configuration of a `LeRobotDatasetWriter`; validated on construction."""

    root: Path
    fps: int
    robot_type: str
    features: FeatureSpec
    video: VideoConfig = field(default_factory=VideoConfig)
    chunks_size: int = layout.DEFAULT_CHUNKS_SIZE  # files per chunk-XXX directory
    data_files_size_in_mb: int = layout.DEFAULT_DATA_FILE_MB
    video_files_size_in_mb: int = layout.DEFAULT_VIDEO_FILE_MB
    # Frames buffered per camera between add_frame and its encoder; 64 frames of 640x480 RGB
    # are 59 MB and ride out ~2 s of encoder stall at 30 fps before add_frame blocks.
    encoder_queue_frames: int = 64

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not isinstance(self.fps, int) or self.fps < 1:
            raise ValueError(f"WriterConfig.fps must be an int >= 1, got {self.fps!r}")
        if not isinstance(self.robot_type, str) or not self.robot_type:
            raise ValueError("WriterConfig.robot_type must be a non-empty string, "
                             f"got {self.robot_type!r}")
        if not isinstance(self.features, FeatureSpec):
            raise ValueError("WriterConfig.features must be a FeatureSpec")
        if not isinstance(self.video, VideoConfig):
            raise ValueError("WriterConfig.video must be a VideoConfig")
        for name in ("chunks_size", "data_files_size_in_mb", "video_files_size_in_mb",
                     "encoder_queue_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"WriterConfig.{name} must be an int >= 1, got {value!r}")


@dataclass
class EpisodeReport:
    episode_index: int
    length: int  # frames
    duration_s: float  # length / fps
    task: str
    task_index: int
    data_path: Path
    video_paths: dict[str, Path]
    max_timing_error_s: float | None  # largest |sample time - k/fps|; None without timestamps
    encoder_blocked_s: float  # time add_frame waited on full encoder queues this episode
    encoder_queue_peak: int  # most frames waiting in one camera's queue (capacity: config)
    encode_wait_s: float  # time save_episode waited for the encoders to drain
    save_s: float  # wall time of save_episode


@dataclass
class _EpisodeBuffer:
    index: int
    task: str
    encoders: dict[str, StreamingEncoder]
    state: list[np.ndarray] = field(default_factory=list)  # each (D_state,)
    action: list[np.ndarray] = field(default_factory=list)
    env_state: list[np.ndarray] = field(default_factory=list)
    first_time: float | None = None
    last_offset: float = -math.inf
    timed: bool | None = None  # whether frames carry timestamps (must not mix)
    max_timing_error: float = 0.0

    @property
    def length(self) -> int:
        return len(self.state)


def _as_vector(name: str, value: object, size: int) -> np.ndarray:
    # a copy: callers reuse their buffers between frames
    arr = np.array(value, dtype=np.float32, copy=True).reshape(-1)
    if arr.size != size:
        raise ValueError(f"{name} has {arr.size} values, the dataset expects {size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values: {arr}")
    return arr


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> fixed_size_list<float>[D], the column type LeRobot writes."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


class LeRobotDatasetWriter:
    """Writes demonstrations as a LeRobot v3.0 dataset; see the module doc for the guarantees."""

    def __init__(self, config: WriterConfig) -> None:
        self._cfg = config
        self._root = config.root
        self._tmp = self._root / layout.TMP_DIR
        self._features = config.features.to_features()
        self._cameras = {c.name: c for c in config.features.cameras}
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_lock()
        self._episode: _EpisodeBuffer | None = None
        try:
            if (self._root / layout.INFO_PATH).exists():
                self._resume()
            else:
                self._create()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------------ public API

    @property
    def root(self) -> Path:
        return self._root

    @property
    def config(self) -> WriterConfig:
        return self._cfg

    @property
    def num_episodes(self) -> int:
        return int(self._info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self._info["total_frames"])

    @property
    def recording(self) -> bool:
        return self._episode is not None

    def start_episode(self, task: str) -> int:
        """Begin a new episode; returns its episode_index."""
        self._check_open()
        if self._episode is not None:
            raise RuntimeError("an episode is already being recorded; save or discard it first")
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        index = self.num_episodes
        self._tmp.mkdir(parents=True, exist_ok=True)
        encoders = {}
        try:
            for cam in self._cfg.features.cameras:
                encoders[cam.name] = StreamingEncoder(
                    self._tmp / f"episode-{index:06d}-{cam.name}.mp4", width=cam.width,
                    height=cam.height, fps=self._cfg.fps, config=self._cfg.video,
                    queue_size=self._cfg.encoder_queue_frames, name=cam.name)
        except BaseException:
            for enc in encoders.values():
                enc.cancel()
            raise
        self._episode = _EpisodeBuffer(index=index, task=task, encoders=encoders)
        return index

    def add_frame(self, state: np.ndarray, action: np.ndarray, env_state: np.ndarray | None = None,
                  images: dict[str, np.ndarray] | None = None,
                  timestamp: float | None = None) -> None:
        """Append one frame: state (D_s,), action (D_a,), env_state (D_e,) if the dataset has
        one, images {camera name: (H, W, 3) uint8 RGB}, timestamp = sample time in s (any
        epoch; used to measure drift from the fps grid)."""
        ep = self._require_episode()
        spec = self._cfg.features
        row_state = _as_vector("state", state, len(spec.state_names))
        row_action = _as_vector("action", action, len(spec.action_names))
        row_env = None
        if spec.env_state_names:
            if env_state is None:
                raise ValueError("env_state is required: the dataset has "
                                 "observation.environment_state")
            row_env = _as_vector("env_state", env_state, len(spec.env_state_names))
        elif env_state is not None:
            raise ValueError("env_state given but the dataset has no environment_state feature")
        images = images or {}
        if set(images) != set(self._cameras):
            raise ValueError(f"images must have exactly the cameras {sorted(self._cameras)}, "
                             f"got {sorted(images)}")
        for name, img in images.items():
            cam = self._cameras[name]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 \
                    or img.shape != (cam.height, cam.width, 3):
                raise ValueError(f"image {name!r} must be a ({cam.height}, {cam.width}, 3) uint8 "
                                 f"array, got {getattr(img, 'shape', None)} "
                                 f"{getattr(img, 'dtype', type(img).__name__)}")
        self._track_time(ep, timestamp)
        for name, img in images.items():
            ep.encoders[name].put(img)
        ep.state.append(row_state)
        ep.action.append(row_action)
        if row_env is not None:
            ep.env_state.append(row_env)

    def save_episode(self) -> EpisodeReport:
        """Finish encoding and commit the episode durably; returns what was written."""
        ep = self._require_episode()
        if ep.length == 0:
            raise ValueError("the episode has no frame; call discard_episode() instead")
        t0 = time.perf_counter()
        try:
            results = {name: enc.finish() for name, enc in ep.encoders.items()}
        except BaseException:
            self.discard_episode()
            raise
        encode_wait = time.perf_counter() - t0
        for name, res in results.items():
            if res.frames != ep.length:
                self.discard_episode()
                raise RuntimeError(f"camera {name}: encoded {res.frames} frames, "
                                   f"episode has {ep.length}")
        report = self._commit(ep, results, encode_wait, t0)
        self._episode = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        return report

    def discard_episode(self) -> None:
        """Drop the episode being recorded; nothing of it reaches the dataset."""
        ep = self._require_episode()
        for enc in ep.encoders.values():
            enc.cancel()
        self._episode = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def close(self) -> None:
        """Release the dataset. An episode still being recorded is discarded, not saved."""
        if self._lock_fd < 0:
            return
        if self._episode is not None:
            logger.warning("closing with episode %d unsaved (%d frames): discarded",
                           self._episode.index, self._episode.length)
            self.discard_episode()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ open / resume

    def _acquire_lock(self) -> int:
        fd = os.open(self._root / layout.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self._root}: another writer has this dataset open") from None
        return fd

    def _create(self) -> None:
        ignorable = {layout.TMP_DIR, layout.LOCK_FILE}
        leftovers = [p.name for p in self._root.iterdir() if p.name not in ignorable]
        if leftovers:
            raise DatasetFormatError(f"{self._root} is not empty and has no {layout.INFO_PATH} "
                                     f"(found {sorted(leftovers)[:5]}); refusing to write into it")
        cfg = self._cfg
        self._info = layout.build_info(
            fps=cfg.fps, robot_type=cfg.robot_type, features=self._features,
            chunks_size=cfg.chunks_size, data_files_size_in_mb=cfg.data_files_size_in_mb,
            video_files_size_in_mb=cfg.video_files_size_in_mb)
        self._tasks: list[str] = []
        self._stats: DatasetStats | None = None
        self._next_data = (0, 0)
        self._next_meta = (0, 0)
        self._next_video = {c.name: (0, 0) for c in cfg.features.cameras}
        layout.write_json_durably(self._info, self._root / layout.INFO_PATH, self._tmp)
        shutil.rmtree(self._tmp, ignore_errors=True)
        logger.info("created dataset %s", self._root)

    def _resume(self) -> None:
        meta = load_meta(self._root)
        self._check_compatible(meta.info)
        self._recover(meta)
        self._info = meta.info
        self._tasks = meta.tasks[: int(meta.info["total_tasks"])]
        self._stats = self._aggregate_existing(meta)
        size = int(meta.info["chunks_size"])
        eps = meta.episodes

        def after(cfs: list[tuple[int, int]]) -> tuple[int, int]:
            return layout.next_file(*max(cfs), size) if cfs else (0, 0)

        self._next_data = after([e.data_chunk_file for e in eps])
        self._next_meta = after([e.meta_chunk_file for e in eps if e.meta_chunk_file])
        self._next_video = {
            c.name: after([(e.videos[c.key].chunk_index, e.videos[c.key].file_index) for e in eps])
            for c in self._cfg.features.cameras}
        logger.info("resuming dataset %s at episode %d (%d frames)", self._root,
                    self.num_episodes, self.num_frames)

    def _check_compatible(self, info: dict) -> None:
        """The existing dataset must have the schema this writer would create."""
        def mismatch(what: str, have: object, want: object) -> DatasetFormatError:
            return DatasetFormatError(f"{self._root}: cannot append, {what} is {have!r} in the "
                                      f"dataset but {want!r} in the writer config")

        if int(info["fps"]) != self._cfg.fps:
            raise mismatch("fps", info["fps"], self._cfg.fps)
        if info.get("robot_type") != self._cfg.robot_type:
            raise mismatch("robot_type", info.get("robot_type"), self._cfg.robot_type)
        have = info["features"]
        if list(have) != list(self._features):
            raise mismatch("the feature list", list(have), list(self._features))
        for key, want in self._features.items():
            for attr in ("dtype", "shape", "names"):
                got = have[key].get(attr)
                if (list(got) if isinstance(got, (list, tuple)) else got) != want[attr]:
                    raise mismatch(f"features[{key!r}].{attr}", got, want[attr])
            block = have[key].get("info")
            if want["dtype"] == "video" and block:
                if block.get("video.codec") != self._cfg.video.canonical_codec:
                    raise mismatch(f"the codec of {key}", block.get("video.codec"),
                                   self._cfg.video.canonical_codec)

    def _recover(self, meta: DatasetMeta) -> None:
        """Remove what an interrupted save_episode left past the commit record."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        total = int(meta.info["total_episodes"])
        removed: list[str] = []
        for path in sorted({p for p, _ in meta.uncommitted_rows}):
            table = pq.read_table(path)
            keep = pc.less(table.column("episode_index"), total)
            if pc.any(keep).as_py():
                layout.write_parquet_durably(table.filter(keep), path, self._tmp)
            else:
                path.unlink()
            removed.append(str(path.relative_to(self._root)))
        eps = meta.episodes
        groups = [("data", [e.data_chunk_file for e in eps])]
        groups += [(f"videos/{key}", [(e.videos[key].chunk_index, e.videos[key].file_index)
                                      for e in eps]) for key in meta.video_keys]
        for folder, used in groups:
            last = max(used) if used else (-1, -1)
            for path in sorted((self._root / folder).glob("chunk-*/file-*.*")):
                cf = layout.parse_chunk_file(path)
                if cf is not None and cf > last:
                    path.unlink()
                    removed.append(str(path.relative_to(self._root)))
        total_tasks = int(meta.info["total_tasks"])
        if len(meta.tasks) > total_tasks:
            layout.write_parquet_durably(layout.tasks_table(meta.tasks[:total_tasks]),
                                         self._root / layout.TASKS_PATH, self._tmp)
            removed.append(f"{len(meta.tasks) - total_tasks} task(s) in {layout.TASKS_PATH}")
        if removed:
            logger.warning("%s: rolled back an interrupted save: %s", self._root, removed)
            stats = self._aggregate_existing(meta)
            if stats is not None:
                layout.write_json_durably(stats_to_json(stats), self._root / layout.STATS_PATH,
                                          self._tmp)
        shutil.rmtree(self._tmp, ignore_errors=True)

    @staticmethod
    def _aggregate_existing(meta: DatasetMeta) -> DatasetStats | None:
        """Dataset stats from the committed episodes' own stats (stats.json if they lack any)."""
        if meta.episodes and all(ep.stats for ep in meta.episodes):
            return aggregate_stats([ep.stats for ep in meta.episodes])
        return meta.stats

    # ------------------------------------------------------------------ recording helpers

    def _check_open(self) -> None:
        if self._lock_fd < 0:
            raise RuntimeError("the writer is closed")

    def _require_episode(self) -> _EpisodeBuffer:
        self._check_open()
        if self._episode is None:
            raise RuntimeError("no episode is being recorded; call start_episode() first")
        return self._episode

    def _track_time(self, ep: _EpisodeBuffer, timestamp: float | None) -> None:
        timed = timestamp is not None
        if ep.timed is None:
            ep.timed = timed
        elif ep.timed != timed:
            raise ValueError("pass a timestamp with every frame of an episode or with none")
        if not timed:
            return
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, got {timestamp}")
        if ep.first_time is None:
            ep.first_time = float(timestamp)
        offset = float(timestamp) - ep.first_time
        if offset <= ep.last_offset:
            raise ValueError(f"timestamps must increase: {timestamp} after an offset of "
                             f"{ep.last_offset:.6f} s")
        ep.last_offset = offset
        ep.max_timing_error = max(ep.max_timing_error, abs(offset - ep.length / self._cfg.fps))

    # ------------------------------------------------------------------ commit

    def _episode_columns(self, ep: _EpisodeBuffer, task_index: int) -> dict[str, np.ndarray]:
        """The episode's tabular columns as written: vectors (N, D) float32, scalars (N,)."""
        n, fps = ep.length, self._cfg.fps
        frame_index = np.arange(n, dtype=np.int64)
        cols = {layout.STATE_KEY: np.stack(ep.state)}
        if ep.env_state:
            cols[layout.ENV_STATE_KEY] = np.stack(ep.env_state)
        cols[layout.ACTION_KEY] = np.stack(ep.action)
        cols["timestamp"] = (frame_index / fps).astype(np.float32)
        cols["frame_index"] = frame_index
        cols["episode_index"] = np.full(n, ep.index, dtype=np.int64)
        cols["index"] = np.arange(self.num_frames, self.num_frames + n, dtype=np.int64)
        cols["task_index"] = np.full(n, task_index, dtype=np.int64)
        return cols

    def _data_table(self, cols: dict[str, np.ndarray]) -> pa.Table:
        schema = layout.data_schema(self._features)
        # a (1,)-shaped feature is a scalar column, as LeRobot stores it
        arrays = [_fixed_list(cols[f.name]) if pa.types.is_fixed_size_list(f.type)
                  else pa.array(cols[f.name].reshape(-1), type=f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    def _commit(self, ep: _EpisodeBuffer, results: dict, encode_wait: float,
                t0: float) -> EpisodeReport:
        cfg, n = self._cfg, ep.length
        tasks = self._tasks + ([ep.task] if ep.task not in self._tasks else [])
        task_index = tasks.index(ep.task)
        cols = self._episode_columns(ep, task_index)
        ep_stats = {k: vector_stats(v) for k, v in cols.items()}
        info = {**self._info, "features": {k: dict(v) for k, v in self._info["features"].items()}}
        row = {"episode_index": ep.index, "tasks": [ep.task], "length": n,
               "data/chunk_index": self._next_data[0], "data/file_index": self._next_data[1],
               "dataset_from_index": self.num_frames, "dataset_to_index": self.num_frames + n}
        moves: list[tuple[Path, Path]] = []
        for cam in cfg.features.cameras:
            res = results[cam.name]
            ep_stats[cam.key] = res.stats
            self._check_video(res.path, n, info["features"][cam.key])
            chunk, file = self._next_video[cam.name]
            dst = self._root / layout.video_file(cam.key, chunk, file, info["video_path"])
            moves.append((res.path, dst))
            row.update({f"videos/{cam.key}/chunk_index": chunk,
                        f"videos/{cam.key}/file_index": file,
                        f"videos/{cam.key}/from_timestamp": 0.0,
                        f"videos/{cam.key}/to_timestamp": n / cfg.fps})
        row.update({k: v.tolist() for k, v in flatten_stats(ep_stats).items()})
        row.update({"meta/episodes/chunk_index": self._next_meta[0],
                    "meta/episodes/file_index": self._next_meta[1]})
        stats = aggregate_stats([self._stats, ep_stats]) if self._stats else ep_stats
        info.update(total_episodes=ep.index + 1, total_frames=self.num_frames + n,
                    total_tasks=len(tasks), splits={"train": f"0:{ep.index + 1}"})
        data_dst = self._root / layout.data_file(*self._next_data, info["data_path"])

        # Order matters: everything the commit record will point at first, info.json last.
        for src, dst in moves:
            layout.durable_replace(src, dst)
        layout.write_parquet_durably(self._data_table(cols), data_dst, self._tmp)
        layout.write_parquet_durably(pa.Table.from_pylist([row]),
                                     self._root / layout.episodes_file(*self._next_meta), self._tmp)
        if len(tasks) != len(self._tasks):
            layout.write_parquet_durably(layout.tasks_table(tasks), self._root / layout.TASKS_PATH,
                                         self._tmp)
        layout.write_json_durably(stats_to_json(stats), self._root / layout.STATS_PATH, self._tmp)
        layout.write_json_durably(info, self._root / layout.INFO_PATH, self._tmp)

        self._info, self._tasks, self._stats = info, tasks, stats
        size = int(info["chunks_size"])
        self._next_data = layout.next_file(*self._next_data, size)
        self._next_meta = layout.next_file(*self._next_meta, size)
        self._next_video = {k: layout.next_file(*v, size) for k, v in self._next_video.items()}
        self._warn_if_oversized(data_dst, [dst for _, dst in moves])
        return EpisodeReport(
            episode_index=ep.index, length=n, duration_s=n / cfg.fps, task=ep.task,
            task_index=task_index, data_path=data_dst,
            video_paths={cam.key: dst
                         for cam, (_, dst) in zip(cfg.features.cameras, moves, strict=True)},
            max_timing_error_s=ep.max_timing_error if ep.timed else None,
            encoder_blocked_s=sum(e.blocked_s for e in ep.encoders.values()),
            encoder_queue_peak=max((r.max_queue_depth for r in results.values()), default=0),
            encode_wait_s=encode_wait, save_s=time.perf_counter() - t0)

    def _check_video(self, path: Path, length: int, feature: dict) -> None:
        """Frame count and k/fps timing of a freshly encoded file; fills the info block once."""
        probe = probe_video(path)
        expected = np.arange(length) / self._cfg.fps
        if probe.frame_times_s.size != length or \
                np.max(np.abs(probe.frame_times_s - expected)) >= DEFAULT_TOLERANCE_S:
            raise RuntimeError(f"{path.name}: encoded {probe.frame_times_s.size} frames not on the "
                               f"k/{self._cfg.fps} s grid; refusing to commit it")
        if not feature.get("info"):
            probe.codec = canonical_codec_name(probe.codec)
            feature["info"] = probe.info_block()

    def _warn_if_oversized(self, data_path: Path, video_paths: list[Path]) -> None:
        mb = 1024 * 1024
        if data_path.stat().st_size > self._info["data_files_size_in_mb"] * mb:
            logger.warning("%s exceeds data_files_size_in_mb (episodes are never split)", data_path)
        for path in video_paths:
            if path.stat().st_size > self._info["video_files_size_in_mb"] * mb:
                logger.warning("%s exceeds video_files_size_in_mb (episodes are never split)", path)


class LeRobotDatasetReader:
    """Random access to a LeRobot v3.0 dataset written by armstack or by LeRobot.

    Tabular columns are loaded once (they are small); video frames are decoded on demand at
    the frame's timestamp shifted by the episode's from_timestamp in its file, and must lie
    within tolerance_s of it, as LeRobot requires.
    """

    def __init__(self, root: Path | str, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
        self.root = Path(root)
        self.tolerance_s = tolerance_s
        self.meta = load_meta(self.root)
        if self.meta.uncommitted_rows:
            logger.warning("%s: ignoring %d episode row(s) of an interrupted save",
                           self.root, len(self.meta.uncommitted_rows))
        self._columns: dict[str, np.ndarray | list] | None = None

    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def video_keys(self) -> list[str]:
        return self.meta.video_keys

    @property
    def num_frames(self) -> int:
        return self.meta.total_frames

    @property
    def num_episodes(self) -> int:
        return len(self.meta.episodes)

    @property
    def tasks(self) -> list[str]:
        return self.meta.tasks

    @property
    def stats(self) -> DatasetStats | None:
        return self.meta.stats

    def episode(self, episode_index: int) -> Episode:
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode {episode_index} out of range [0, {self.num_episodes})")
        return self.meta.episodes[episode_index]

    def episode_range(self, episode_index: int) -> range:
        """Global frame indices of an episode."""
        ep = self.episode(episode_index)
        return range(ep.from_index, ep.to_index)

    @property
    def columns(self) -> dict[str, np.ndarray | list]:
        """Every tabular column over all frames, rows in global index order."""
        if self._columns is None:
            self._columns = read_data_columns(self.root, self.meta)
        return self._columns

    def episode_data(self, episode_index: int) -> dict[str, np.ndarray | list]:
        r = self.episode_range(episode_index)
        return {k: v[r.start:r.stop] for k, v in self.columns.items()}

    def frame(self, index: int, decode_video: bool = True) -> dict[str, object]:
        """One frame: tabular values, 'task' (string) and, when asked, each camera's image
        (H, W, 3) uint8 decoded at the frame's timestamp."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range [0, {self.num_frames})")
        item: dict[str, object] = {k: v[index] for k, v in self.columns.items()}
        item["task"] = self.tasks[int(item["task_index"])]
        if decode_video:
            ep = int(item["episode_index"])
            for key in self.video_keys:
                item[key] = self.decode_video(ep, key, [float(item["timestamp"])])[0]
        return item

    def decode_video(self, episode_index: int, video_key: str,
                     timestamps_s: list[float] | np.ndarray) -> np.ndarray:
        """Frames of one camera at episode-relative times, (T, H, W, 3) uint8."""
        seg = self.episode(episode_index).videos[video_key]
        shifted = np.asarray(timestamps_s, dtype=np.float64) + seg.from_timestamp
        return decode_frames(self.root / seg.path, shifted, self.tolerance_s)
