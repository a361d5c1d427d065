"""Bound a stream of joint position targets by position, velocity and acceleration limits.

Each call to `MotionLimiter.step(target, dt)` moves the last sent command towards the
target by at most what the limits allow in `dt`, per joint and independently (as
ros2_controllers' joint limiters do): the IK node calls it once per outgoing command, so
however the targets jump, the commands a servo receives never do.

Per joint, the velocity of the step is the smallest of
- the velocity that lands exactly on the target in this step (|e| / dt),
- the velocity limit,
- the braking velocity: the largest one from which decelerating by a*dt per step still
  stops on the target (a discrete trapezoidal profile, so targets are not overshot),
then bounded to within a*dt of the previous step's velocity (acceleration limit) and, last,
to the velocity limit again: when the two conflict (the limits were lowered while moving),
the velocity limit wins. Position limits clip the target and the command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotionLimits:
    """Per-joint limits, all (n,): positions [rad or m], velocity [/s], acceleration [/s^2]."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            value = np.array(getattr(self, name), dtype=float)  # own copy: the caller's may change
            if value.ndim != 1 or (n is not None and value.shape[0] != n):
                raise ValueError(
                    f"MotionLimits.{name} must be a vector of length {n or 'n'}, got shape {value.shape}"
                )
            n = value.shape[0]
            if not np.all(np.isfinite(value)):
                raise ValueError(f"MotionLimits.{name} must be finite, got {value.tolist()}")
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        if np.any(self.lower > self.upper):
            raise ValueError(
                f"MotionLimits.lower must be <= upper, got {self.lower.tolist()} > {self.upper.tolist()}"
            )
        for name in ("max_velocity", "max_acceleration"):
            if np.any(getattr(self, name) <= 0.0):
                raise ValueError(f"MotionLimits.{name} must be > 0, got {getattr(self, name).tolist()}")

    @property
    def size(self) -> int:
        return self.lower.shape[0]


def braking_speed(distance: np.ndarray, accel: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed (n,) for this step from which the joint can still stop on its target.

    Braking hardest from speed v (steps of v, v - a*dt, ... down to the last positive one)
    covers D(v), increasing in v: a*dt^2 * m(m+1)/2 at v = m*a*dt, linear in between.
    Inverting D gives the speed; after a step at it, the braking speed of the remaining
    distance is exactly a*dt lower, and the last step is at most a*dt, so a joint following
    the profile lands on its target without exceeding the acceleration limit.
    """
    unit = accel * dt * dt  # (n,) distance of one step at speed a*dt
    m = np.floor(np.sqrt(0.25 + 2.0 * distance / unit) - 0.5)  # (n,) whole braking steps
    return distance / ((m + 1.0) * dt) + 0.5 * m * accel * dt


class MotionLimiter:
    """The last sent command (n,) and its velocity, moved towards targets within limits."""

    def __init__(self, limits: MotionLimits) -> None:
        self.limits = limits
        self._position: np.ndarray | None = None  # (n,)
        self._velocity = np.zeros(limits.size)  # (n,)

    @property
    def initialized(self) -> bool:
        return self._position is not None

    @property
    def position(self) -> np.ndarray:
        """The last command (n,), a copy."""
        if self._position is None:
            raise RuntimeError("MotionLimiter.position read before reset()")
        return self._position.copy()

    @property
    def velocity(self) -> np.ndarray:
        """Velocity (n,) of the last step, a copy."""
        return self._velocity.copy()

    def set_limits(self, limits: MotionLimits) -> None:
        """Swap limits in place (live reconfiguration); the command and its velocity stay."""
        if limits.size != self.limits.size:
            raise ValueError(f"MotionLimiter: new limits have {limits.size} joints, not {self.limits.size}")
        self.limits = limits

    def reset(self, position: np.ndarray) -> None:
        """Start from `position` (n,) at rest (e.g. the measured joint state)."""
        position = np.asarray(position, dtype=float)
        if position.shape != (self.limits.size,) or not np.all(np.isfinite(position)):
            raise ValueError(f"MotionLimiter.reset: need {self.limits.size} finite positions, got {position}")
        self._position = self.clip(position)
        self._velocity = np.zeros(self.limits.size)

    def stop(self) -> None:
        """Mark the command as at rest: no command went out for long enough that the
        joints have stopped at it, so the next step accelerates from zero."""
        self._velocity = np.zeros(self.limits.size)

    def clip(self, q: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(q, self.limits.lower), self.limits.upper)

    def settled(self, target: np.ndarray) -> bool:
        """True when the command sits on `target` (clipped) with zero velocity."""
        return (
            self._position is not None
            and bool(np.array_equal(self._position, self.clip(np.asarray(target, dtype=float))))
            and not np.any(self._velocity)
        )

    def step(self, target: np.ndarray, dt: float) -> np.ndarray:
        """The next command (n,) towards `target` (n,) after `dt` seconds; a copy."""
        if self._position is None:
            raise RuntimeError("MotionLimiter.step called before reset()")
        if not (dt > 0.0 and math.isfinite(dt)):
            raise ValueError(f"MotionLimiter.step: dt must be > 0 and finite, got {dt}")
        lim = self.limits
        goal = self.clip(np.asarray(target, dtype=float))  # (n,)
        error = goal - self._position  # (n,)
        distance = np.abs(error)
        speed = np.minimum(
            np.minimum(distance / dt, lim.max_velocity), braking_speed(distance, lim.max_acceleration, dt)
        )
        wanted = np.sign(error) * speed  # (n,)
        dv = lim.max_acceleration * dt
        velocity = np.clip(wanted, self._velocity - dv, self._velocity + dv)
        velocity = np.clip(velocity, -lim.max_velocity, lim.max_velocity)
        # Landing exactly on the target avoids a float residue that would keep the joint
        # "moving" by 1e-17 steps forever.
        landing = np.abs(velocity * dt - error) <= 1e-12 * np.maximum(1.0, distance)
        new = np.where(landing, goal, self._position + velocity * dt)
        new = self.clip(new)
        self._velocity = (new - self._position) / dt
        self._position = new
        return new.copy()
