"""Consistency checks of a LeRobot v3.0 dataset on disk (no ROS); used by tools/dataset.py.

Checks, each failure a message naming the file, episode or feature:
- schema: info.json keys and path templates, every feature's dtype/shape/names, the default
  bookkeeping features, video info blocks; parquet columns and types against the features;
- episodes: contiguous indices, lengths equal to dataset_to_index - dataset_from_index,
  global index ranges that tile 0..total_frames, tasks known, files present;
- timestamps: per episode frame_index = 0..length-1 and timestamp = frame_index/fps within
  tolerance_s; the video holds exactly `length` frames at from_timestamp + k/fps within
  tolerance_s; the first and last frame of each episode decode at their timestamps;
- stats: every feature present with LeRobot's keys and shapes; per-episode statistics of the
  tabular features recomputed from the parquet data; dataset statistics equal the aggregate of
  the per-episode ones; camera statistics in [0, 1].
Leftovers of an interrupted save (rows or files past the commit record) are warnings: readers
ignore them and the writer removes them when it next opens the dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
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
    BASIC_KEYS,
    HISTOGRAM_BINS,
    QUANTILE_KEYS,
    FeatureStats,
    aggregate_stats,
    vector_stats,
)
from armstack_recorder.video import (
    DEFAULT_TOLERANCE_S,
    FrameTimestampError,
    VideoProbe,
    canonical_codec_name,
    decode_frames,
    probe_video,
)

logger = logging.getLogger(__name__)

INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
             "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
             "data_path", "video_path", "features")
KNOWN_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "bool", "string", "image", "video")
MAX_MESSAGES_PER_CHECK = 20  # a broken dataset can fail every frame; say it once per episode
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass
class ValidationReport:
    root: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def format(self) -> str:
        lines = [f"{self.root}: {'OK' if self.ok else 'INVALID'} "
                 f"({len(self.errors)} error(s), {len(self.warnings)} warning(s))"]
        lines += [f"  error: {m}" for m in self.errors]
        lines += [f"  warning: {m}" for m in self.warnings]
        return "\n".join(lines)


def validate_dataset(root: Path | str, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     decode: bool = True) -> ValidationReport:
    """Run every check; decode=False skips decoding frames (packet timing is still checked)."""
    report = ValidationReport(Path(root))
    try:
        meta = load_meta(report.root)
    except (DatasetFormatError, OSError, ValueError, KeyError) as exc:
        report.error(f"metadata: {exc}")
        return report
    _check_info(meta, report)
    if report.errors:
        return report  # later checks index features and paths that the info lacks
    _check_tasks(meta, report)
    _check_episodes(meta, report)
    _check_leftovers(meta, report)
    columns = _check_data(meta, report, tolerance_s)
    _check_videos(meta, report, tolerance_s, decode)
    _check_stats(meta, report, columns)
    return report


# ----------------------------------------------------------------------------- info and schema


def _check_info(meta: DatasetMeta, report: ValidationReport) -> None:
    info = meta.info
    for key in INFO_KEYS:
        if key not in info:
            report.error(f"info.json: missing key {key!r}")
    if not isinstance(info.get("fps"), int) or info["fps"] < 1:
        report.error(f"info.json: fps must be a positive int, got {info.get('fps')!r}")
    for key in ("{chunk_index", "{file_index"):
        if key not in str(info.get("data_path")):
            report.error(f"info.json: data_path {info.get('data_path')!r} lacks {key}}}")
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        report.error("info.json: features must be a non-empty mapping")
        return
    for name, ft in features.items():
        _check_feature(name, ft, info, report)
    for name, want in layout.DEFAULT_FEATURES.items():
        ft = features.get(name)
        if ft is None:
            report.error(f"info.json: default feature {name!r} is missing")
        elif ft.get("dtype") != want["dtype"] or list(ft.get("shape", [])) != want["shape"]:
            report.error(f"info.json: feature {name!r} must be {want['dtype']} shape "
                         f"{want['shape']}, got {ft.get('dtype')} {ft.get('shape')}")
    if layout.video_keys(features) and "{video_key}" not in str(info.get("video_path")):
        report.error(f"info.json: video_path {info.get('video_path')!r} lacks {{video_key}}")


def _check_feature(name: str, ft: object, info: dict, report: ValidationReport) -> None:
    where = f"info.json: feature {name!r}"
    if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
        report.error(f"{where} needs dtype and shape")
        return
    if "/" in name:
        report.error(f"{where}: names may not contain '/' (LeRobot flattens stats keys on it)")
    dtype, shape, names = ft["dtype"], ft["shape"], ft.get("names")
    if dtype not in KNOWN_DTYPES:
        report.error(f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not shape \
            or not all(isinstance(s, int) and s > 0 for s in shape):
        report.error(f"{where}: shape must be a list of positive ints, got {shape!r}")
        return
    if dtype in layout.VISUAL_DTYPES:
        if len(shape) != 3 or shape[2] != 3:
            report.error(f"{where}: {dtype} shape must be [height, width, 3], got {shape}")
    elif isinstance(names, list) and len(shape) == 1 and len(names) != shape[0]:
        report.error(f"{where}: {len(names)} names for shape {shape}")
    if dtype == "video":
        block = ft.get("info")
        if not block:
            if info.get("total_episodes", 0) > 0:
                report.error(f"{where}: missing the video 'info' block (codec, pix_fmt, fps)")
            return
        if block.get("video.fps") != info.get("fps"):
            report.error(f"{where}: video.fps {block.get('video.fps')} != dataset fps "
                         f"{info.get('fps')}")
        if [block.get("video.height"), block.get("video.width")] != shape[:2]:
            report.error(f"{where}: video {block.get('video.height')}x{block.get('video.width')} "
                         f"does not match shape {shape}")


def _arrow_matches(t: pa.DataType, ft: dict) -> bool:
    """Whether a parquet column type can hold the feature (fixed or variable lists)."""
    dtype, shape = ft["dtype"], list(ft["shape"])
    if dtype == "image":
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0
    if dtype == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    want = pa.from_numpy_dtype(np.dtype(dtype))
    if shape == [1]:
        return t == want
    if pa.types.is_fixed_size_list(t):
        return t.value_type == want and t.list_size == shape[0]
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and t.value_type == want


# ----------------------------------------------------------------------------- tasks and episodes


def _check_tasks(meta: DatasetMeta, report: ValidationReport) -> None:
    total = int(meta.info["total_tasks"])
    if len(meta.tasks) < total:
        report.error(f"tasks.parquet: {len(meta.tasks)} task(s), info.json says "
                     f"total_tasks={total}")
    elif len(meta.tasks) > total:
        report.warn(f"tasks.parquet: {len(meta.tasks) - total} task(s) past total_tasks={total} "
                    "(interrupted save)")
    if len(set(meta.tasks)) != len(meta.tasks):
        report.error("tasks.parquet: duplicate task strings")
    if meta.episodes and not (meta.root / layout.TASKS_PATH).is_file():
        report.error(f"{layout.TASKS_PATH} is missing")


def _check_episodes(meta: DatasetMeta, report: ValidationReport) -> None:
    expected_from = 0
    fps = meta.fps
    for ep in meta.episodes:
        where = f"episode {ep.index}"
        if ep.length < 1:
            report.error(f"{where}: length {ep.length} < 1")
        if ep.to_index - ep.from_index != ep.length:
            report.error(f"{where}: dataset_to_index - dataset_from_index = "
                         f"{ep.to_index - ep.from_index} but length = {ep.length}")
        if ep.from_index != expected_from:
            report.error(f"{where}: dataset_from_index {ep.from_index}, expected {expected_from} "
                         "(ranges must tile the global index without gaps)")
        expected_from = ep.to_index
        unknown = [t for t in ep.tasks if t not in meta.tasks]
        if unknown or not ep.tasks:
            report.error(f"{where}: tasks {ep.tasks!r} not (all) in tasks.parquet")
        if not (meta.root / ep.data_path).is_file():
            report.error(f"{where}: data file {ep.data_path} is missing")
        for key, seg in ep.videos.items():
            if not (meta.root / seg.path).is_file():
                report.error(f"{where}: video file {seg.path} is missing")
            span = seg.to_timestamp - seg.from_timestamp
            if abs(span - ep.length / fps) > 1.0 / fps / 2:
                report.error(f"{where}: {key} spans {span:.4f} s in its file, length/fps = "
                             f"{ep.length / fps:.4f} s")
    if expected_from != meta.total_frames:
        report.error(f"episodes cover {expected_from} frames, info.json says total_frames="
                     f"{meta.total_frames}")


def _check_leftovers(meta: DatasetMeta, report: ValidationReport) -> None:
    if meta.uncommitted_rows:
        report.warn(f"{len(meta.uncommitted_rows)} episode row(s) past total_episodes "
                    "(interrupted save; removed when a writer next opens the dataset)")
    groups = [("data", [ep.data_chunk_file for ep in meta.episodes])]
    groups += [(f"videos/{k}", [(ep.videos[k].chunk_index, ep.videos[k].file_index)
                                for ep in meta.episodes]) for k in meta.video_keys]
    for folder, used in groups:
        used_set = set(used)
        for path in sorted((meta.root / folder).glob("chunk-*/file-*.*")):
            cf = layout.parse_chunk_file(path)
            if cf is not None and cf not in used_set:
                report.warn(f"{path.relative_to(meta.root)} is not referenced by any episode")
    if (meta.root / layout.TMP_DIR).exists():
        report.warn(f"{layout.TMP_DIR}/ exists: a writer is running or was interrupted")


def _check_data(meta: DatasetMeta, report: ValidationReport,
                tol: float) -> dict[str, np.ndarray] | None:
    """Column schema of every data file, then per-episode index/timestamp rules."""
    tabular = layout.tabular_keys(meta.features)
    for rel in sorted({ep.data_path for ep in meta.episodes}):
        path = meta.root / rel
        if not path.is_file():
            continue
        schema = pq.read_schema(path)
        missing = [k for k in tabular if k not in schema.names]
        extra = [k for k in schema.names if k not in tabular and not k.startswith("__index_level")]
        if missing or extra:
            report.error(f"{rel}: columns differ from info.json features "
                         f"(missing {missing}, unexpected {extra})")
        for name in tabular:
            ft = meta.features[name]
            if name in schema.names and not _arrow_matches(schema.field(name).type, ft):
                report.error(f"{rel}: column {name!r} has type {schema.field(name).type}, feature "
                             f"is {ft['dtype']} shape {list(ft['shape'])}")
    if report.errors:
        return None
    try:
        cols = read_data_columns(meta.root, meta)
    except (DatasetFormatError, pa.ArrowException) as exc:
        report.error(f"data: {exc}")
        return None
    for name in tabular:
        shape = list(meta.features[name]["shape"])
        col = cols.get(name)
        if isinstance(col, np.ndarray) and len(shape) == 1 and shape != [1] \
                and col.shape[1:] != (shape[0],):
            report.error(f"data: column {name!r} rows have {col.shape[1:]} values, "
                         f"shape is {shape}")
    for ep in meta.episodes:
        _check_episode_rows(meta, ep, cols, report, tol)
    return cols


def _check_episode_rows(meta: DatasetMeta, ep: Episode, cols: dict, report: ValidationReport,
                        tol: float) -> None:
    where = f"episode {ep.index}"
    sl = slice(ep.from_index, ep.to_index)
    if np.any(cols["episode_index"][sl] != ep.index):
        report.error(f"{where}: rows {ep.from_index}..{ep.to_index - 1} carry episode_index "
                     f"{sorted(set(cols['episode_index'][sl].tolist()))[:5]}")
    frame_index = cols["frame_index"][sl]
    if not np.array_equal(frame_index, np.arange(ep.length)):
        bad = 0
        if frame_index.size == ep.length:
            bad = int(np.argmax(frame_index != np.arange(ep.length)))
        report.error(f"{where}: frame_index is not 0..{ep.length - 1} (row {bad} has "
                     f"{frame_index[bad] if frame_index.size else None})")
    ts = cols["timestamp"][sl].astype(np.float64)
    err = np.abs(ts - np.arange(ts.size) / meta.fps)
    if err.size and err.max() >= tol:
        k = int(np.argmax(err >= tol))
        report.error(f"{where}: timestamp of frame {k} is {ts[k]:.6f} s, expected "
                     f"{k / meta.fps:.6f} s (frame_index/fps, tolerance {tol} s); "
                     f"{int((err >= tol).sum())} frame(s) off")
    task_idx = cols["task_index"][sl]
    if np.any((task_idx < 0) | (task_idx >= len(meta.tasks))):
        report.error(f"{where}: task_index outside 0..{len(meta.tasks) - 1}")
    elif any(meta.tasks[int(t)] not in ep.tasks for t in np.unique(task_idx)):
        used = [meta.tasks[int(t)] for t in np.unique(task_idx)]
        report.error(f"{where}: frames use tasks {used} "
                     f"but the episode lists {ep.tasks}")


# ----------------------------------------------------------------------------- videos


def _check_videos(meta: DatasetMeta, report: ValidationReport, tol: float, decode: bool) -> None:
    probes: dict[str, VideoProbe | None] = {}
    failures = 0
    for ep in meta.episodes:
        for key, seg in ep.videos.items():
            if seg.path not in probes:
                probes[seg.path] = _probe(meta, key, seg.path, report)
            probe = probes[seg.path]
            if probe is None or failures >= MAX_MESSAGES_PER_CHECK:
                continue
            expected = seg.from_timestamp + np.arange(ep.length) / meta.fps
            times = probe.frame_times_s
            inside = times[(times >= seg.from_timestamp - tol) & (times < seg.to_timestamp - tol)]
            if inside.size != ep.length or np.max(np.abs(inside - expected)) >= tol:
                failures += 1
                report.error(f"episode {ep.index}: {seg.path} has {inside.size} frame(s) in "
                             f"[{seg.from_timestamp:.4f}, {seg.to_timestamp:.4f}) s, expected "
                             f"{ep.length} at from_timestamp + k/{meta.fps} (tolerance {tol} s)")
                continue
            if decode:
                try:
                    decode_frames(meta.root / seg.path, [expected[0], expected[-1]], tol)
                except (FrameTimestampError, OSError, ValueError) as exc:
                    failures += 1
                    report.error(f"episode {ep.index}: {key} does not decode at its first/last "
                                 f"timestamp: {exc}")


def _probe(meta: DatasetMeta, key: str, rel: str, report: ValidationReport) -> VideoProbe | None:
    try:
        probe = probe_video(meta.root / rel)
    except (OSError, ValueError) as exc:
        report.error(f"{rel}: cannot be read as a video ({exc})")
        return None
    ft = meta.features[key]
    block = ft.get("info") or {}
    codec = canonical_codec_name(probe.codec)
    if block.get("video.codec") and codec != block["video.codec"]:
        report.error(f"{rel}: codec {codec}, info.json says {block['video.codec']}")
    if block.get("video.pix_fmt") and probe.pix_fmt != block["video.pix_fmt"]:
        report.error(f"{rel}: pix_fmt {probe.pix_fmt}, info.json says {block['video.pix_fmt']}")
    if [probe.height, probe.width] != list(ft["shape"][:2]):
        report.error(f"{rel}: {probe.height}x{probe.width} frames, "
                     f"feature shape {list(ft['shape'])}")
    if abs(probe.fps - meta.fps) > 1e-6:
        report.error(f"{rel}: stream frame rate {probe.fps}, dataset fps {meta.fps}")
    return probe


# ----------------------------------------------------------------------------- stats


def _expected_stat_shape(ft: dict) -> tuple[int, ...]:
    if ft["dtype"] in layout.VISUAL_DTYPES:
        return (ft["shape"][2], 1, 1)
    return tuple(ft["shape"])


def _check_stats(meta: DatasetMeta, report: ValidationReport, cols: dict | None) -> None:
    if not meta.episodes:
        return
    if meta.stats is None:
        report.error(f"{layout.STATS_PATH} is missing")
        return
    for name, ft in meta.features.items():
        if ft["dtype"] == "string":
            continue
        fs = meta.stats.get(name)
        if fs is None:
            report.error(f"stats.json: no statistics for feature {name!r}")
            continue
        _check_stat_shapes(f"stats.json[{name!r}]", fs, ft, report)
        count = int(np.ravel(fs.get("count", [0]))[0])
        if ft["dtype"] not in layout.VISUAL_DTYPES and count != meta.total_frames:
            report.error(f"stats.json[{name!r}]: count {fs.get('count')} != total_frames "
                         f"{meta.total_frames}")
    have_rows = all(ep.stats for ep in meta.episodes)
    if have_rows and cols is not None:
        _check_episode_stats(meta, cols, report)
    if have_rows:
        aggregated = aggregate_stats([ep.stats for ep in meta.episodes])
        for name, fs in aggregated.items():
            if name in meta.stats:
                _compare(f"stats.json[{name!r}] vs the aggregate of the episodes' stats",
                         meta.stats[name], fs, report, quantile_atol=1e-6)
    elif cols is not None:
        report.warn("meta/episodes has no per-episode stats columns; stats.json checked against "
                    "the data directly")
        for name in layout.tabular_keys(meta.features):
            if name in meta.stats and isinstance(cols.get(name), np.ndarray):
                _compare(f"stats.json[{name!r}] vs the data", meta.stats[name],
                         vector_stats(cols[name]), report, quantile_atol=None)


def _check_stat_shapes(where: str, fs: FeatureStats, ft: dict, report: ValidationReport) -> None:
    want = _expected_stat_shape(ft)
    for key in BASIC_KEYS:
        if key not in fs:
            report.error(f"{where}: missing {key!r}")
            continue
        shape = np.shape(fs[key])
        if key == "count":
            if shape != (1,):
                report.error(f"{where}: count must have shape (1,), got {shape}")
        elif shape != want:
            report.error(f"{where}: {key} has shape {shape}, expected {want}")
        elif not np.all(np.isfinite(fs[key])):
            report.error(f"{where}: {key} has non-finite values")
    if ft["dtype"] in layout.VISUAL_DTYPES and all(k in fs for k in ("min", "max")):
        if np.min(fs["min"]) < -1e-6 or np.max(fs["max"]) > 1 + 1e-6:
            report.error(f"{where}: camera statistics must lie in [0, 1]")


def _check_episode_stats(meta: DatasetMeta, cols: dict, report: ValidationReport) -> None:
    failures = 0
    for ep in meta.episodes:
        for name in layout.tabular_keys(meta.features):
            col = cols.get(name)
            if not isinstance(col, np.ndarray) or name not in ep.stats:
                continue
            recomputed = vector_stats(col[ep.from_index:ep.to_index])
            before = len(report.errors)
            # same histogram algorithm on both sides: quantiles agree to a couple of bins
            span = float(np.max(recomputed["max"] - recomputed["min"]))
            _compare(f"episode {ep.index} stats[{name!r}] vs its data", ep.stats[name], recomputed,
                     report, quantile_atol=2 * span / HISTOGRAM_BINS + 1e-6)
            failures += len(report.errors) > before
            if failures >= MAX_MESSAGES_PER_CHECK:
                return
        for key in meta.video_keys:
            if key in ep.stats:
                _check_stat_shapes(f"episode {ep.index} stats[{key!r}]", ep.stats[key],
                                   meta.features[key], report)


def _compare(where: str, have: FeatureStats, want: FeatureStats, report: ValidationReport,
             quantile_atol: float | None) -> None:
    """have (stored) against want (recomputed); quantiles only when quantile_atol is given.

    LeRobot computes mean and E[x^2] - mean^2 in float32 for float32 features, so its std of a
    near-constant column can be off by sqrt(eps32 * E[x^2]) (2e-4 for values ~0.3); the
    tolerances scale with the column's magnitude accordingly, which still catches stats that
    belong to other data.
    """
    keys = list(BASIC_KEYS) + (list(QUANTILE_KEYS) if quantile_atol is not None else [])
    mean = np.asarray(want["mean"], dtype=np.float64)
    std = np.asarray(want["std"], dtype=np.float64)
    mean_sq = mean**2 + std**2  # E[x^2] per dimension
    for key in keys:
        if key not in have or key not in want:
            continue
        a = np.asarray(have[key], dtype=np.float64)
        b = np.asarray(want[key], dtype=np.float64)
        if a.shape != b.shape:
            report.error(f"{where}: {key} shape {a.shape} != {b.shape}")
            return
        if key == "std":
            ok = np.abs(a**2 - b**2) <= 1e-5 * b**2 + 16 * FLOAT32_EPS * mean_sq + 1e-12
        else:
            atol = quantile_atol if key in QUANTILE_KEYS else 1e-6
            if key == "mean":
                atol += 1e-5 * np.sqrt(mean_sq)
            ok = np.isclose(a, b, rtol=1e-5, atol=atol)
        if not np.all(ok):
            worst = int(np.argmax(~np.ravel(ok)))
            report.error(f"{where}: {key} differs (stored {a.ravel()[worst]:.6g}, recomputed "
                         f"{b.ravel()[worst]:.6g})")
            return
