"""Normalization statistics in the LeRobot v3.0 layout (no ROS, no torch).

Every feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99, per
episode (stored as `stats/<feature>/<stat>` columns of the episode metadata) and aggregated over
the dataset (meta/stats.json). Shapes follow LeRobot so its normalizers load them unchanged:
a vector feature (D,) gives (D,) arrays, a scalar column (1,), a camera (3, 1, 1) per channel in
[0, 1]; `count` is always (1,) and counts frames.

Definitions, chosen to agree with LeRobot's `compute_stats.py` so a dataset written by either
side validates against the other's numbers:
- Vector quantiles come from a 5000-bin histogram spanning [min, max] with linear interpolation
  inside the bin that crosses q*N (LeRobot's RunningQuantileStats fed one batch).
- Camera statistics are per channel over the pixels of every frame, after the same stride
  downsampling LeRobot applies (frames >= 300 px are strided to ~150 px). Pixels are uint8, so
  an exact 256-bin histogram per channel gives every statistic exactly in O(1) memory while
  frames stream through the encoder; quantiles are the nearest-rank value of that histogram.
- Aggregation over episodes is LeRobot's: count-weighted mean, the parallel-variance formula
  for std, element-wise min/max, and count-weighted means of the quantiles (an approximation
  of the dataset quantile that LeRobot also uses).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

QUANTILES: tuple[float, ...] = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS: tuple[str, ...] = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
BASIC_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count")
STAT_KEYS: tuple[str, ...] = BASIC_KEYS + QUANTILE_KEYS
HISTOGRAM_BINS = 5000
# LeRobot's auto_downsample_height_width: frames whose longer side reaches 300 px are strided
# so that side becomes ~150 px before per-channel statistics are taken.
DOWNSAMPLE_THRESHOLD_PX = 300
DOWNSAMPLE_TARGET_PX = 150

FeatureStats = dict[str, np.ndarray]
DatasetStats = dict[str, FeatureStats]


def _histogram_quantile(column: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """Quantiles of one column (N,) from a HISTOGRAM_BINS histogram over [min, max]."""
    lo, hi = float(column.min()), float(column.max())
    edges = np.linspace(lo - 1e-10, hi + 1e-10, HISTOGRAM_BINS + 1)
    if not np.all(np.diff(edges) > 0):
        # A constant column at a magnitude where +-1e-10 is below float64 resolution: every
        # quantile is that constant.
        return np.full(len(quantiles), lo)
    hist, _ = np.histogram(column, bins=edges)
    cumsum = np.cumsum(hist)
    out = np.empty(len(quantiles))
    for i, q in enumerate(quantiles):
        target = q * column.size
        idx = int(np.searchsorted(cumsum, target))
        if idx == 0:
            out[i] = edges[0]
        elif idx >= cumsum.size:
            out[i] = edges[-1]
        else:
            before = cumsum[idx - 1]
            in_bin = cumsum[idx] - before
            frac = (target - before) / in_bin if in_bin else 0.0
            out[i] = edges[idx] + frac * (edges[idx + 1] - edges[idx])
    return out


def vector_stats(values: np.ndarray) -> FeatureStats:
    """Statistics of a numeric feature over the frames of one episode.

    values: (N,) for a scalar column (stats shaped (1,)) or (N, D) for a vector (stats (D,)).
    """
    raw = np.asarray(values)
    if raw.ndim == 1:
        raw = raw[:, None]  # (N, 1)
    if raw.ndim != 2 or raw.shape[0] == 0:
        raise ValueError("vector_stats needs (N,) or (N, D) with N >= 1, "
                         f"got shape {np.shape(values)}")
    arr = raw.astype(np.float64)
    stats: FeatureStats = {
        # min/max keep an integer column's dtype, as LeRobot's do (int64 in the episode parquet)
        "min": raw.min(axis=0),
        "max": raw.max(axis=0),
        "mean": arr.mean(axis=0),
        "std": arr.std(axis=0),
        "count": np.array([arr.shape[0]], dtype=np.int64),
    }
    if arr.shape[0] < 2:
        # LeRobot's rule for a single sample: quantiles equal the mean.
        for key in QUANTILE_KEYS:
            stats[key] = stats["mean"].copy()
        return stats
    q = np.stack([_histogram_quantile(arr[:, d], QUANTILES) for d in range(arr.shape[1])], axis=1)
    for i, key in enumerate(QUANTILE_KEYS):
        stats[key] = q[i]  # (D,)
    return stats


def downsample_for_stats(image: np.ndarray) -> np.ndarray:
    """Stride-downsample an (H, W, C) frame the way LeRobot does before image statistics."""
    height, width = image.shape[:2]
    if max(height, width) < DOWNSAMPLE_THRESHOLD_PX:
        return image
    factor = int((width if width > height else height) / DOWNSAMPLE_TARGET_PX)
    return image[::factor, ::factor]


class ImageStatsAccumulator:
    """Per-channel statistics of uint8 frames, exact, from a (C, 256) value histogram."""

    def __init__(self, channels: int = 3) -> None:
        self._hist = np.zeros((channels, 256), dtype=np.int64)
        self._frames = 0

    @property
    def frames(self) -> int:
        return self._frames

    def update(self, image: np.ndarray) -> None:
        """Add one (H, W, C) uint8 frame."""
        small = downsample_for_stats(image)
        for c in range(self._hist.shape[0]):
            self._hist[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self._frames += 1

    def result(self) -> FeatureStats:
        """Statistics in [0, 1], each (C, 1, 1); count (1,) = frames seen."""
        if self._frames == 0:
            raise ValueError("ImageStatsAccumulator has seen no frame")
        values = np.arange(256, dtype=np.float64)
        total = self._hist.sum(axis=1).astype(np.float64)  # (C,) pixels per channel
        mean = (self._hist * values).sum(axis=1) / total
        var = (self._hist * (values - mean[:, None]) ** 2).sum(axis=1) / total
        present = self._hist > 0
        stats: FeatureStats = {
            "min": np.argmax(present, axis=1).astype(np.float64),
            "max": (255 - np.argmax(present[:, ::-1], axis=1)).astype(np.float64),
            "mean": mean,
            "std": np.sqrt(var),
        }
        cumsum = np.cumsum(self._hist, axis=1)
        for q, key in zip(QUANTILES, QUANTILE_KEYS, strict=True):
            # nearest rank: the smallest value whose cumulative count reaches q * pixels
            stats[key] = np.array([np.searchsorted(cumsum[c], q * total[c])
                                   for c in range(cumsum.shape[0])], dtype=np.float64)
        out = {k: (v / 255.0).reshape(-1, 1, 1) for k, v in stats.items()}
        out["count"] = np.array([self._frames], dtype=np.int64)
        return out


def aggregate_feature_stats(per_episode: list[FeatureStats]) -> FeatureStats:
    """Combine one feature's statistics over episodes (LeRobot's formulas, see module doc)."""
    if not per_episode:
        raise ValueError("aggregate_feature_stats needs at least one episode")
    means = np.stack([s["mean"] for s in per_episode])  # (E, *shape)
    variances = np.stack([s["std"] ** 2 for s in per_episode])
    counts = np.stack([s["count"] for s in per_episode]).astype(np.float64)  # (E, 1)
    total = counts.sum(axis=0)  # (1,)
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))  # broadcastable
    denom = total.reshape(weights.shape[1:])
    mean = (means * weights).sum(axis=0) / denom
    var = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / denom
    out: FeatureStats = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": total.astype(np.int64),
    }
    for key in QUANTILE_KEYS:
        if all(key in s for s in per_episode):
            q = np.stack([s[key] for s in per_episode])
            out[key] = (q * weights).sum(axis=0) / denom
    return out


def aggregate_stats(per_episode: list[DatasetStats]) -> DatasetStats:
    """Dataset statistics from per-episode statistics; a feature missing in some episodes is
    aggregated over the episodes that have it."""
    keys = sorted({k for ep in per_episode for k in ep})
    return {k: aggregate_feature_stats([ep[k] for ep in per_episode if k in ep]) for k in keys}


def stats_to_json(stats: DatasetStats) -> dict[str, dict[str, list]]:
    """Nested lists for meta/stats.json."""
    return {feat: {k: np.asarray(v).tolist() for k, v in fs.items()} for feat, fs in stats.items()}


def stats_from_json(raw: dict) -> DatasetStats:
    """Arrays from meta/stats.json (or from the `stats/...` episode columns, unflattened)."""
    out: DatasetStats = {}
    for feat, fs in raw.items():
        if not isinstance(fs, dict):
            raise ValueError(f"stats for {feat!r} must be a mapping of statistic to values")
        out[feat] = {k: np.asarray(v) for k, v in fs.items()}
    return out


def flatten_stats(stats: DatasetStats) -> dict[str, np.ndarray]:
    """`stats/<feature>/<stat>` columns of an episode metadata row."""
    return {f"stats/{feat}/{k}": v for feat, fs in stats.items() for k, v in fs.items()}


def unflatten_stats(row: dict[str, object]) -> DatasetStats:
    """Inverse of flatten_stats over the `stats/...` keys of an episode metadata row.

    Feature names may contain '/' in foreign datasets, so the statistic is the last component
    and the feature is everything between the prefix and it.
    """
    out: DatasetStats = {}
    for key, value in row.items():
        if not key.startswith("stats/") or value is None:
            continue
        feat, _, stat = key[len("stats/"):].rpartition("/")
        out.setdefault(feat, {})[stat] = np.asarray(value)
    return out
