"""Loading a LeRobot v3.0 dataset's metadata (no ROS): info, tasks, episode rows, stats.

Shared by the reader, the writer's resume/recovery and the validator. It reads what LeRobot's
own writer produces (many episodes per metadata file, pandas-indexed tasks) as well as what
armstack's writer produces (one file per episode).

Committed episodes: meta/info.json is the commit record. An episode whose row exists but whose
index is >= info.total_episodes belongs to a save that was interrupted before info.json was
replaced; readers ignore it and the writer removes it when it next opens the dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from armstack_recorder import layout
from armstack_recorder.stats import DatasetStats, stats_from_json, unflatten_stats

logger = logging.getLogger(__name__)


class DatasetFormatError(ValueError):
    """The directory is not a readable LeRobot v3.0 dataset."""


@dataclass
class VideoSegment:
    """Where one episode's frames of one camera live."""

    path: str  # relative to the root
    chunk_index: int
    file_index: int
    from_timestamp: float  # s, time of the episode's first frame inside the file
    to_timestamp: float  # s, from_timestamp + length / fps


@dataclass
class Episode:
    index: int
    length: int
    tasks: list[str]
    from_index: int  # global frame index of the first frame (dataset_from_index)
    to_index: int  # one past the last (dataset_to_index)
    data_path: str  # relative to the root
    data_chunk_file: tuple[int, int]
    meta_chunk_file: tuple[int, int] | None  # file of meta/episodes holding this row
    videos: dict[str, VideoSegment] = field(default_factory=dict)
    stats: DatasetStats = field(default_factory=dict, repr=False)


@dataclass
class DatasetMeta:
    root: Path
    info: dict
    tasks: list[str]
    episodes: list[Episode]  # committed episodes, ordered by index
    stats: DatasetStats | None  # meta/stats.json, None when absent
    uncommitted_rows: list[tuple[Path, int]]  # (episodes file, episode_index) past the commit

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]

    @property
    def video_keys(self) -> list[str]:
        return layout.video_keys(self.features)

    @property
    def total_frames(self) -> int:
        return int(self.info["total_frames"])


def read_info(root: Path) -> dict:
    path = root / layout.INFO_PATH
    if not path.is_file():
        raise DatasetFormatError(f"{root}: no {layout.INFO_PATH}; not a LeRobot dataset")
    info = layout.load_json(path)
    version = info.get("codebase_version")
    if version != layout.CODEBASE_VERSION:
        raise DatasetFormatError(
            f"{path}: codebase_version {version!r}; only {layout.CODEBASE_VERSION} is supported "
            "(convert v2.1 datasets with LeRobot's convert_dataset_v21_to_v30)")
    for key in ("fps", "features", "total_episodes", "total_frames", "data_path"):
        if key not in info:
            raise DatasetFormatError(f"{path}: missing key {key!r}")
    return info


def episode_files(root: Path) -> list[Path]:
    """meta/episodes parquet files in (chunk, file) order."""
    files = [p for p in (root / layout.EPISODES_DIR).glob("*/*.parquet")
             if layout.parse_chunk_file(p) is not None]
    return sorted(files, key=lambda p: layout.parse_chunk_file(p))


def read_episode_rows(root: Path) -> list[tuple[Path, dict]]:
    """Every episode row with the file it came from, ordered by episode_index."""
    rows: list[tuple[Path, dict]] = []
    for path in episode_files(root):
        for row in pq.read_table(path).to_pylist():
            rows.append((path, row))
    rows.sort(key=lambda r: r[1]["episode_index"])
    return rows


def _episode_from_row(row: dict, info: dict, path: Path) -> Episode:
    vkeys = layout.video_keys(info["features"])
    try:
        data_cf = (int(row["data/chunk_index"]), int(row["data/file_index"]))
        videos = {}
        for key in vkeys:
            cf = (int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"]))
            videos[key] = VideoSegment(
                path=layout.video_file(key, *cf, template=info["video_path"]),
                chunk_index=cf[0], file_index=cf[1],
                from_timestamp=float(row[f"videos/{key}/from_timestamp"]),
                to_timestamp=float(row[f"videos/{key}/to_timestamp"]))
        meta_cf = None
        if row.get("meta/episodes/chunk_index") is not None:
            meta_cf = (int(row["meta/episodes/chunk_index"]), int(row["meta/episodes/file_index"]))
        return Episode(
            index=int(row["episode_index"]), length=int(row["length"]),
            tasks=list(row.get("tasks") or []),
            from_index=int(row["dataset_from_index"]), to_index=int(row["dataset_to_index"]),
            data_path=layout.data_file(*data_cf, template=info["data_path"]),
            data_chunk_file=data_cf, meta_chunk_file=meta_cf or layout.parse_chunk_file(path),
            videos=videos, stats=unflatten_stats(row))
    except (KeyError, TypeError) as exc:
        raise DatasetFormatError(
            f"{path}: episode row {row.get('episode_index')!r} lacks or has a bad {exc}") from exc


def load_meta(root: Path) -> DatasetMeta:
    """Read all metadata; episodes past info.total_episodes are reported, not returned."""
    root = Path(root)
    info = read_info(root)
    tasks_path = root / layout.TASKS_PATH
    tasks = layout.read_tasks(tasks_path) if tasks_path.is_file() else []
    total = int(info["total_episodes"])
    episodes: list[Episode] = []
    uncommitted: list[tuple[Path, int]] = []
    for path, row in read_episode_rows(root):
        idx = int(row["episode_index"])
        if idx >= total:
            uncommitted.append((path, idx))
            continue
        episodes.append(_episode_from_row(row, info, path))
    indices = [ep.index for ep in episodes]
    if indices != list(range(total)):
        missing = sorted(set(range(total)) - set(indices))
        raise DatasetFormatError(
            f"{root}: info.json has total_episodes={total} but meta/episodes holds "
            f"{len(indices)} committed rows (missing {missing[:10]}, duplicates "
            f"{sorted({i for i in indices if indices.count(i) > 1})[:10]})")
    stats_path = root / layout.STATS_PATH
    stats = stats_from_json(layout.load_json(stats_path)) if stats_path.is_file() else None
    return DatasetMeta(root, info, tasks, episodes, stats, uncommitted)


def read_data_columns(root: Path, meta: DatasetMeta) -> dict[str, np.ndarray | list]:
    """All committed frames' tabular columns, rows ordered by global index.

    Numeric (1,) features -> (N,), vector features -> (N, D), image/string -> list.
    """
    paths = sorted({ep.data_path for ep in meta.episodes},
                   key=lambda p: layout.parse_chunk_file(p) or (0, 0))
    if not paths:
        return {k: np.zeros((0,)) for k in layout.tabular_keys(meta.features)}
    tables = []
    for rel in paths:
        table = pq.read_table(root / rel)
        # drop rows of an interrupted save that shares a packed file (LeRobot-written data)
        ep_col = table.column("episode_index").to_numpy()
        if np.any(ep_col >= len(meta.episodes)):
            table = table.filter(pa.array(ep_col < len(meta.episodes)))
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="permissive")
    index = table.column("index").to_numpy()
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(meta.total_frames)):
        raise DatasetFormatError(
            f"{root}: data 'index' column is not 0..{meta.total_frames - 1} "
            f"(got {index.size} rows, min {index.min() if index.size else None}, "
            f"max {index.max() if index.size else None})")
    return {name: column_to_numpy(table.column(name).take(pa.array(order)))
            for name in table.column_names}


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray | list:
    """A parquet column as numpy: scalars (N,), fixed or variable lists (N, D)."""
    col = column.combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) \
            or pa.types.is_large_list(col.type):
        n = len(col)
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1) if n else flat.reshape(0, 0)
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return col.to_numpy(zero_copy_only=False)
    return col.to_pylist()  # image structs, strings
