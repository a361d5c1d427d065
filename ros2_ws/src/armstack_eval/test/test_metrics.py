"""Latency per stage from stamps, jerk of a command stream, interval jitter."""

from __future__ import annotations

import numpy as np
import pytest

from armstack_eval.metrics import (
    COMMAND,
    DETECTIONS,
    JOINT_COMMAND,
    OBJECTS,
    StampedArrivals,
    command_jerk,
    describe,
    interval_jitter_ms,
)

PERIOD = 0.02


@pytest.mark.parametrize("coeff", [0.5, -2.0, 10.0])
def test_jerk_of_a_cubic_is_six_times_its_coefficient(coeff):
    t = np.arange(0.0, 1.0, PERIOD)
    q = np.stack([coeff * t**3, np.zeros_like(t)], axis=1)  # (N, 2): one moving joint
    jerk, at, period = command_jerk(t, q)
    assert period == pytest.approx(PERIOD)
    assert jerk.shape == (t.size - 3,) and at.shape == jerk.shape
    np.testing.assert_allclose(jerk, 6.0 * abs(coeff), rtol=1e-6)
    np.testing.assert_allclose(at, t[3:])


def test_jerk_is_the_norm_over_joints_and_zero_for_a_ramp():
    t = np.arange(0.0, 0.5, PERIOD)
    q = np.stack([t**3, 2.0 * t**3, 3.0 * t + 1.0], axis=1)  # jerks 6, 12 and a ramp (0)
    jerk, _, _ = command_jerk(t, q)
    np.testing.assert_allclose(jerk, np.hypot(6.0, 12.0), rtol=1e-6)


def test_jerk_uses_the_nominal_period_and_skips_gaps():
    t = np.arange(0.0, 0.4, PERIOD)
    t = np.concatenate([t, t + 10.0])  # a 9.6 s hold between two runs
    q = np.concatenate([np.zeros(t.size // 2), np.full(t.size // 2, 5.0)])[:, None]
    jerk, _, period = command_jerk(t, q)
    assert period == pytest.approx(PERIOD)
    # A difference across the gap would see the 5 rad step; within the runs nothing moves.
    assert jerk.size == 2 * (t.size // 2 - 3)
    assert np.all(jerk == 0.0)


def test_jerk_of_too_short_a_stream_is_empty():
    jerk, at, period = command_jerk(np.array([0.0, 0.02]), np.zeros((2, 6)))
    assert jerk.size == 0 and at.size == 0 and period == pytest.approx(0.02)
    assert command_jerk(np.zeros(0), np.zeros((0, 6)))[2] is None


def test_interval_jitter_is_the_deviation_from_the_median_period():
    t = np.array([0.0, 0.020, 0.041, 0.060, 0.080, 5.0, 5.02])
    jitter = interval_jitter_ms(t)
    # Intervals 20, 21, 19, 20 ms in the first run, 20 in the second; the gap is no interval.
    np.testing.assert_allclose(sorted(jitter), [0.0, 0.0, 0.0, 1.0, 1.0], atol=1e-9)


def _arrivals(frames: list[float], offsets: dict[str, float]) -> StampedArrivals:
    arrivals = StampedArrivals()
    for t in frames:
        stamp_ns = int(round(t * 1e9))
        for stage, offset in offsets.items():
            arrivals.note(stage, stamp_ns, t + offset)
    return arrivals


def test_stage_latencies_follow_the_camera_stamp_through_the_pipeline():
    frames = [100.0 + k / 30.0 for k in range(30)]
    offsets = {DETECTIONS: 0.030, OBJECTS: 0.034, COMMAND: 0.050, JOINT_COMMAND: 0.051}
    arrivals = _arrivals(frames, offsets)
    # The driver writes each command 3 ms after the IK published it: 54 ms from the frame.
    driver = [(t + 0.0541, 0.054) for t in frames]
    lat = arrivals.latencies_ms(driver)
    for stage, expected in (("detection", 30.0), ("localization", 4.0), ("controller", 16.0),
                            ("ik", 1.0), ("bus_write", 3.0), ("total", 54.0)):
        assert len(lat[stage]) == len(frames), stage
        np.testing.assert_allclose(lat[stage], expected, atol=1e-3, err_msg=stage)


def test_first_message_per_stamp_counts_and_unstamped_ones_are_ignored():
    arrivals = StampedArrivals()
    arrivals.note(DETECTIONS, 1_000_000_000, 1.030)
    arrivals.note(DETECTIONS, 1_000_000_000, 1.020)  # an earlier publish of the same frame
    arrivals.note(DETECTIONS, 1_000_000_000, 1.090)  # a repeat
    arrivals.note(DETECTIONS, 0, 5.0)
    assert arrivals.latencies_ms([])["detection"] == pytest.approx([20.0])


def test_driver_samples_without_a_matching_command_are_left_out_of_bus_write():
    arrivals = _arrivals([10.0, 10.033], {JOINT_COMMAND: 0.040})
    # Implied stamps: 10.000 (matches), 10.5 (no such command), 10.031 (a publish delayed
    # 31 ms after the write of frame 10.000: too late to tell, never matched to 10.033).
    lat = arrivals.latencies_ms([(10.045, 0.045), (10.545, 0.045), (10.076, 0.045)])
    assert lat["bus_write"] == pytest.approx([5.0])
    assert lat["total"] == pytest.approx([45.0, 45.0, 45.0])


def test_a_joint_space_controller_has_no_ik_stage():
    arrivals = _arrivals([1.0, 2.0], {OBJECTS: 0.03, JOINT_COMMAND: 0.05})
    lat = arrivals.latencies_ms([])
    assert lat["controller"] == pytest.approx([20.0, 20.0])
    assert lat["ik"] == []


def test_a_ground_truth_controller_is_timed_from_the_camera_stamp():
    arrivals = _arrivals([1.0], {OBJECTS: 0.030, COMMAND: 0.012})
    assert arrivals.latencies_ms([], controller_input="camera")["controller"] == pytest.approx([12.0])


def test_describe():
    stats = describe([1.0, 2.0, 3.0, float("nan"), None])
    assert stats["count"] == 3 and stats["median"] == 2.0 and stats["max"] == 3.0
    assert stats["p99"] == pytest.approx(2.98)
    assert describe([]) == {"count": 0, "median": None, "p99": None, "max": None, "mean": None}
