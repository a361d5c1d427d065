"""MotionLimiter: exact velocity/acceleration/position bounds, no overshoot, minimum time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from armstack_ik.motion_limits import MotionLimiter, MotionLimits, braking_speed

DT = 0.02


def _limits(n: int = 1, v: float = 1.0, a: float = 5.0, lo: float = -10.0, hi: float = 10.0) -> MotionLimits:
    return MotionLimits(
        lower=np.full(n, lo), upper=np.full(n, hi), max_velocity=np.full(n, v), max_acceleration=np.full(n, a)
    )


def _run(limiter: MotionLimiter, target: np.ndarray, dt: float, max_steps: int = 10_000) -> np.ndarray:
    """Step until settled; returns the trajectory (steps + 1, n) including the start."""
    path = [limiter.position]
    for _ in range(max_steps):
        path.append(limiter.step(target, dt))
        if limiter.settled(target):
            return np.array(path)
    raise AssertionError(f"not settled after {max_steps} steps at {path[-1]}")


def _assert_bounds(path: np.ndarray, limits: MotionLimits, dt: float, v0: np.ndarray | None = None) -> None:
    velocity = np.diff(path, axis=0) / dt  # (steps, n)
    assert np.all(np.abs(velocity) <= limits.max_velocity * (1 + 1e-12))
    if v0 is not None:
        velocity = np.vstack([v0, velocity])
    accel = np.diff(velocity, axis=0) / dt
    assert np.all(np.abs(accel) <= limits.max_acceleration * (1 + 1e-9) + 1e-9)
    assert np.all(path >= limits.lower) and np.all(path <= limits.upper)


def _min_time(distance: float, v: float, a: float) -> float:
    """Continuous-time minimum duration of a rest-to-rest move (trapezoid or triangle)."""
    if distance >= v * v / a:
        return distance / v + v / a
    return 2.0 * math.sqrt(distance / a)


@pytest.mark.parametrize(
    "start, target, v, a",
    [
        (0.0, 1.0, 1.0, 5.0),  # trapezoid: cruises at v
        (0.0, -0.05, 1.0, 5.0),  # triangle: never reaches v
        (0.3, 0.3 + 1e-4, 1.0, 5.0),  # below one acceleration step
        (2.0, -3.0, 3.14, 8.0),  # long move, arm-like limits
        (0.0, 0.037, 0.075, 0.5),  # gripper-like, metres
    ],
)
def test_rest_to_rest_move_is_bounded_monotone_and_near_minimum_time(start, target, v, a):
    limits = _limits(v=v, a=a)
    limiter = MotionLimiter(limits)
    limiter.reset(np.array([start]))
    path = _run(limiter, np.array([target]), DT)
    _assert_bounds(path, limits, DT, v0=np.zeros(1))
    assert path[-1, 0] == target  # lands exactly
    steps = np.diff(path[:, 0])
    assert np.all(steps * np.sign(target - start) >= 0.0)  # monotone: no overshoot, no backing up
    duration = (len(path) - 1) * DT
    assert duration <= _min_time(abs(target - start), v, a) + 3 * DT


def test_jumping_targets_and_reversals_keep_every_bound():
    rng = np.random.default_rng(7)
    limits = MotionLimits(
        lower=np.array([-1.0, -2.0, 0.0]),
        upper=np.array([1.0, 2.0, 0.04]),
        max_velocity=np.array([1.5, 3.0, 0.1]),
        max_acceleration=np.array([4.0, 10.0, 0.5]),
    )
    limiter = MotionLimiter(limits)
    limiter.reset(np.zeros(3))
    path = [limiter.position]
    target = np.zeros(3)
    for k in range(600):
        if k % 7 == 0:  # a new target, often beyond the position limits
            target = rng.uniform(limits.lower - 0.5, limits.upper + 0.5)
        path.append(limiter.step(target, DT))
    _assert_bounds(np.array(path), limits, DT, v0=np.zeros(3))


def test_variable_step_periods_keep_velocity_and_acceleration_bounds():
    rng = np.random.default_rng(3)
    limits = _limits(n=2, v=2.0, a=6.0)
    limiter = MotionLimiter(limits)
    limiter.reset(np.zeros(2))
    prev_v = np.zeros(2)
    for k in range(400):
        dt = float(rng.uniform(0.005, 0.04))
        before = limiter.position
        after = limiter.step(np.array([3.0, -3.0]) * (1 if k < 200 else -1), dt)
        v = (after - before) / dt
        assert np.all(np.abs(v) <= 2.0 * (1 + 1e-12))
        assert np.all(np.abs(v - prev_v) <= 6.0 * dt * (1 + 1e-9) + 1e-12)
        prev_v = v


def test_target_beyond_the_position_limit_settles_on_the_limit():
    limiter = MotionLimiter(_limits(v=1.0, a=5.0, lo=-0.5, hi=0.5))
    limiter.reset(np.array([0.0]))
    path = _run(limiter, np.array([3.0]), DT)
    assert path[-1, 0] == 0.5
    assert path.max() == 0.5


def test_reset_clips_a_start_outside_the_limits():
    limiter = MotionLimiter(_limits(lo=-0.5, hi=0.5))
    limiter.reset(np.array([0.9]))
    assert limiter.position[0] == 0.5


def test_lowering_the_velocity_limit_while_moving_takes_effect_at_once():
    limiter = MotionLimiter(_limits(v=2.0, a=5.0))
    limiter.reset(np.array([0.0]))
    for _ in range(30):
        limiter.step(np.array([5.0]), DT)
    assert limiter.velocity[0] == pytest.approx(2.0)
    limiter.set_limits(_limits(v=0.5, a=5.0))
    before = limiter.position[0]
    after = limiter.step(np.array([5.0]), DT)[0]
    assert (after - before) / DT == pytest.approx(0.5)


def test_stop_restarts_from_rest():
    limiter = MotionLimiter(_limits(v=2.0, a=5.0))
    limiter.reset(np.array([0.0]))
    for _ in range(30):
        limiter.step(np.array([5.0]), DT)
    limiter.stop()
    before = limiter.position[0]
    after = limiter.step(np.array([5.0]), DT)[0]
    assert after - before == pytest.approx(5.0 * DT * DT)


def test_braking_speed_profile_decelerates_by_exactly_one_step():
    a, dt = 4.0, 0.02
    distance = np.array([0.3])
    v = braking_speed(distance, np.array([a]), dt)
    v_next = braking_speed(distance - v * dt, np.array([a]), dt)
    assert v[0] - v_next[0] == pytest.approx(a * dt)


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("max_velocity", {"max_velocity": np.array([0.0])}),
        ("max_acceleration", {"max_acceleration": np.array([-1.0])}),
        ("lower", {"lower": np.array([1.0]), "upper": np.array([0.0])}),
        ("upper", {"upper": np.array([1.0, 2.0])}),
        ("lower", {"lower": np.array([np.nan])}),
    ],
)
def test_invalid_limits_name_the_field(field, kwargs):
    base = {
        "lower": np.array([-1.0]),
        "upper": np.array([1.0]),
        "max_velocity": np.array([1.0]),
        "max_acceleration": np.array([1.0]),
    }
    with pytest.raises(ValueError, match=f"MotionLimits.{field}"):
        MotionLimits(**{**base, **kwargs})


def test_misuse_raises():
    limiter = MotionLimiter(_limits())
    with pytest.raises(RuntimeError):
        limiter.step(np.array([1.0]), DT)
    limiter.reset(np.array([0.0]))
    with pytest.raises(ValueError, match="dt"):
        limiter.step(np.array([1.0]), 0.0)
    with pytest.raises(ValueError, match="joints"):
        limiter.set_limits(_limits(n=2))
