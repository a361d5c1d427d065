"""LeRobot v3.0 on-disk layout: paths, feature schema, metadata files, durable writes (no ROS).

A v3.0 dataset root holds
    meta/info.json                          schema, fps, counters, path templates
    meta/stats.json                         dataset statistics (see stats.py)
    meta/tasks.parquet                      task string -> task_index (pandas index = task)
    meta/episodes/chunk-XXX/file-XXX.parquet one row per episode: lengths, global index range,
                                            data/video file pointers, per-episode stats
    data/chunk-XXX/file-XXX.parquet         one row per frame, columns = non-video features
    videos/<video_key>/chunk-XXX/file-XXX.mp4
A file may hold several consecutive episodes: episode rows point at (chunk, file) and give
dataset_from_index/to_index (frames) and videos/<key>/from_timestamp/to_timestamp (seconds
inside the mp4). Readers must follow those pointers, never infer episodes from file names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk directory
DEFAULT_DATA_FILE_MB = 100
DEFAULT_VIDEO_FILE_MB = 200
# Scratch space of the writer inside the root: hidden, so LeRobot's data/*/*.parquet globs and
# the Hub's file listing never see half-written files; same filesystem, so os.replace is atomic.
TMP_DIR = ".armstack_tmp"
LOCK_FILE = ".armstack_writer.lock"

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
# Bookkeeping columns every v3.0 dataset has, in LeRobot's order (after the user features).
DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VISUAL_DTYPES = ("video", "image")
_CHUNK_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.(parquet|mp4)$")


def data_file(chunk_index: int, file_index: int, template: str = DATA_PATH) -> str:
    return template.format(chunk_index=chunk_index, file_index=file_index)


def video_file(video_key: str, chunk_index: int, file_index: int,
               template: str = VIDEO_PATH) -> str:
    return template.format(video_key=video_key, chunk_index=chunk_index, file_index=file_index)


def episodes_file(chunk_index: int, file_index: int) -> str:
    return EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)


def next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one; a chunk directory holds chunks_size files."""
    if file_index + 1 >= chunks_size:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def parse_chunk_file(path: str | Path) -> tuple[int, int] | None:
    """(chunk, file) of a path ending in chunk-XXX/file-YYY.parquet|mp4, else None."""
    m = _CHUNK_FILE_RE.search(Path(path).as_posix())
    return (int(m.group(1)), int(m.group(2))) if m else None


def video_keys(features: dict[str, dict]) -> list[str]:
    return [k for k, ft in features.items() if ft["dtype"] == "video"]


def tabular_keys(features: dict[str, dict]) -> list[str]:
    """Features stored as parquet columns (everything but videos), in info.json order."""
    return [k for k, ft in features.items() if ft["dtype"] != "video"]


def arrow_type(feature: dict) -> pa.DataType:
    """Parquet column type of a tabular feature, as LeRobot (HF datasets) writes it.

    shape (1,) -> scalar; (D,) -> fixed_size_list<dtype>[D]; 'image' -> struct{bytes, path};
    'string' -> string.
    """
    dtype = feature["dtype"]
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if dtype == "string":
        return pa.string()
    scalar = pa.from_numpy_dtype(np.dtype(dtype))
    shape = list(feature["shape"])
    if shape == [1]:
        return scalar
    if len(shape) == 1:
        return pa.list_(scalar, shape[0])
    raise ValueError(f"unsupported tabular feature shape {shape} (dtype {dtype})")


def data_schema(features: dict[str, dict]) -> pa.Schema:
    return pa.schema([(k, arrow_type(features[k])) for k in tabular_keys(features)])


def build_info(*, fps: int, robot_type: str, features: dict[str, dict], chunks_size: int,
               data_files_size_in_mb: int, video_files_size_in_mb: int) -> dict:
    """A fresh info.json (no episodes yet), keys in LeRobot's order."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys(features) else None,
        "features": features,
    }


# ----------------------------------------------------------------------------- durable writes


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (create/rename) so it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def durable_replace(src: Path, dst: Path) -> None:
    """Move an fsync'ed file into place atomically and persist the rename.

    os.replace is atomic on POSIX within one filesystem: a reader sees the old file or the
    new one, never a mix; a crash before it leaves dst untouched.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(dst.parent)


def _scratch_file(tmp_dir: Path, dst: Path) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=dst.stem + "-", suffix=".tmp")
    os.close(fd)
    return Path(name)


def write_bytes_durably(data: bytes, dst: Path, tmp_dir: Path) -> None:
    tmp = _scratch_file(tmp_dir, dst)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    durable_replace(tmp, dst)


def write_json_durably(obj: object, dst: Path, tmp_dir: Path) -> None:
    write_bytes_durably(json.dumps(obj, indent=4, ensure_ascii=False).encode(), dst, tmp_dir)


def write_parquet_durably(table: pa.Table, dst: Path, tmp_dir: Path) -> None:
    tmp = _scratch_file(tmp_dir, dst)
    pq.write_table(table, tmp, compression="snappy")
    fsync_file(tmp)
    durable_replace(tmp, dst)


def load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- tasks table


def _pandas_index_metadata(index_column: str, value_column: str) -> bytes:
    """pandas' parquet metadata marking index_column as the DataFrame index.

    LeRobot loads tasks with pandas.read_parquet and looks tasks up by the index
    (tasks.loc[task], tasks.iloc[i].name), so the file must carry this block; pyarrow alone
    would otherwise produce a plain column and a RangeIndex.
    """
    meta = {
        "index_columns": [index_column],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": value_column, "field_name": value_column, "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": index_column, "field_name": index_column, "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return json.dumps(meta).encode()


def tasks_table(tasks: Iterable[str]) -> pa.Table:
    """meta/tasks.parquet content: task strings (pandas index named 'task') -> task_index."""
    names = list(tasks)
    table = pa.table({"task_index": pa.array(range(len(names)), pa.int64()),
                      "task": pa.array(names, pa.string())})
    return table.replace_schema_metadata({b"pandas": _pandas_index_metadata("task", "task_index")})


def read_tasks(path: Path) -> list[str]:
    """Task strings ordered by task_index, from a tasks.parquet written by LeRobot or armstack.

    The task strings are the pandas index: a column named in the pandas metadata
    (LeRobot writes '__index_level_0__' for its unnamed index), or a plain 'task' column.
    """
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    candidates = []
    if b"pandas" in meta:
        candidates += [c for c in json.loads(meta[b"pandas"]).get("index_columns", [])
                       if isinstance(c, str)]
    candidates += ["task", "__index_level_0__"]
    column = next((c for c in candidates if c in table.column_names), None)
    if column is None or "task_index" not in table.column_names:
        raise ValueError(f"{path}: expected task strings and a task_index column, "
                         f"found columns {table.column_names}")
    names = table.column(column).to_pylist()
    indices = table.column("task_index").to_pylist()
    if sorted(indices) != list(range(len(indices))):
        raise ValueError(f"{path}: task_index must be 0..{len(indices) - 1}, got {sorted(indices)}")
    ordered = [""] * len(names)
    for name, idx in zip(names, indices, strict=True):
        ordered[idx] = name
    return ordered
