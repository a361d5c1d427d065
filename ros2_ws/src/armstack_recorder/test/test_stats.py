"""Statistics: definitions, shapes and aggregation as LeRobot computes them."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_recorder.stats import (
    QUANTILE_KEYS,
    ImageStatsAccumulator,
    aggregate_stats,
    downsample_for_stats,
    flatten_stats,
    unflatten_stats,
    vector_stats,
)


def test_vector_stats_basic_values_and_shapes() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3)).astype(np.float32) * [1, 10, 0.1]
    s = vector_stats(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s["mean"], x64.mean(0))
    np.testing.assert_allclose(s["std"], x64.std(0))
    np.testing.assert_array_equal(s["min"], x.min(0))
    np.testing.assert_array_equal(s["max"], x.max(0))
    assert s["count"].tolist() == [500]
    assert all(s[k].shape == (3,) for k in QUANTILE_KEYS)
    # histogram quantiles land within a few bins of the exact ones for 500 samples
    for q, key in zip((0.01, 0.1, 0.5, 0.9, 0.99), QUANTILE_KEYS, strict=True):
        exact = np.quantile(x64, q, axis=0, method="inverted_cdf")
        span = x64.max(0) - x64.min(0)
        nxt = np.sort(x64, axis=0)[min(int(np.ceil(q * 500)), 499)]
        assert np.all(s[key] >= exact - span / 5000 - 1e-12), key
        assert np.all(s[key] <= nxt + span / 5000 + 1e-12), key


def test_scalar_column_and_single_sample() -> None:
    s = vector_stats(np.arange(10, dtype=np.int64))
    assert s["min"].dtype == np.int64 and s["min"].tolist() == [0] and s["max"].tolist() == [9]
    assert s["mean"].shape == (1,) and s["q50"].shape == (1,)
    one = vector_stats(np.array([[2.0, -1.0]]))
    assert one["std"].tolist() == [0.0, 0.0] and one["q99"].tolist() == [2.0, -1.0]
    constant = vector_stats(np.full(7, 1e9))  # +-1e-10 is below float64 resolution here
    assert constant["q10"].tolist() == [1e9]
    with pytest.raises(ValueError, match="N >= 1"):
        vector_stats(np.zeros((0, 2)))


def test_image_stats_exact_from_histogram() -> None:
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(6, 480, 640, 3), dtype=np.uint8)
    frames[..., 1] = rng.integers(40, 60, size=(6, 480, 640), dtype=np.uint8)
    acc = ImageStatsAccumulator()
    for f in frames:
        acc.update(f)
    s = acc.result()
    small = np.stack([downsample_for_stats(f) for f in frames]).astype(np.float64)
    assert small.shape == (6, 120, 160, 3)  # 640 px -> stride int(640/150) = 4
    pixels = small.reshape(-1, 3)
    np.testing.assert_allclose(s["mean"].ravel(), pixels.mean(0) / 255, rtol=1e-12)
    np.testing.assert_allclose(s["std"].ravel(), pixels.std(0) / 255, rtol=1e-9)
    np.testing.assert_array_equal(s["min"].ravel(), pixels.min(0) / 255)
    np.testing.assert_array_equal(s["max"].ravel(), pixels.max(0) / 255)
    np.testing.assert_array_equal(s["q90"].ravel(),
                                  np.quantile(pixels, 0.9, axis=0, method="inverted_cdf") / 255)
    assert s["mean"].shape == (3, 1, 1) and s["count"].tolist() == [6]
    assert downsample_for_stats(frames[0][:200, :280]).shape == (200, 280, 3)  # below 300 px


def test_aggregate_equals_pooled_statistics() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.normal(loc=i, size=(n, 2)) for i, n in enumerate((10, 50, 7))]
    agg = aggregate_stats([{"x": vector_stats(p)} for p in parts])["x"]
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(agg["mean"], pooled.mean(0))
    np.testing.assert_allclose(agg["std"], pooled.std(0))
    np.testing.assert_array_equal(agg["min"], pooled.min(0))
    np.testing.assert_array_equal(agg["max"], pooled.max(0))
    assert agg["count"].tolist() == [67]
    weights = np.array([10, 50, 7])[:, None]
    q = np.stack([vector_stats(p)["q50"] for p in parts])
    np.testing.assert_allclose(agg["q50"], (q * weights).sum(0) / 67)


def test_aggregate_image_stats_keep_shape() -> None:
    a, b = ImageStatsAccumulator(), ImageStatsAccumulator()
    a.update(np.zeros((4, 4, 3), np.uint8))
    b.update(np.full((4, 4, 3), 255, np.uint8))
    b.update(np.full((4, 4, 3), 255, np.uint8))
    agg = aggregate_stats([{"cam": a.result()}, {"cam": b.result()}])["cam"]
    assert agg["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(agg["mean"].ravel(), [2 / 3] * 3)
    np.testing.assert_allclose(agg["std"].ravel(), [np.sqrt(2) / 3] * 3)


def test_flatten_roundtrip_with_slash_free_and_dotted_names() -> None:
    stats = {"observation.state": vector_stats(np.ones((3, 2))),
             "index": vector_stats(np.arange(3))}
    flat = flatten_stats(stats)
    assert "stats/observation.state/q01" in flat
    back = unflatten_stats({k: v.tolist() for k, v in flat.items()} | {"length": 3})
    assert set(back) == set(stats)
    np.testing.assert_array_equal(back["index"]["max"], [2])
