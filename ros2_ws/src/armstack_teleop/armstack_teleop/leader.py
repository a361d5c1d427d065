"""Leader arm: a second, hand-moved Dynamixel arm whose joint angles become the follower's commands.

ALOHA / Koch / GELLO style: the leader has the follower's kinematic layout (one servo per
follower joint, torque off so the operator moves it by hand) and its own calibration file in
the follower's format (config/robot/leader_dynamixel.yaml, read by armstack_common.servo_config):
each leader joint is named after the follower joint it drives, and its offset_ticks /
direction / ticks_per_metre map leader servo ticks to that follower joint's position.
The gripper joint (left_finger) is a handle or trigger on the leader; its ticks_per_metre maps
the handle's travel onto the finger opening.

`LeaderMapping` converts a tick reading (J,) into follower joint positions: calibration,
clipping to the follower's joint limits (from the URDF, through the follower's bus config),
and a speed limit that also eases the follower onto the leader when teleoperation starts with
the two arms apart. `calibrate_offsets` computes offset_ticks from a reading taken with the
leader held in a known pose. Plain module: no rclpy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from armstack_common.servo_config import ServoBusConfig, ServoConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderConfig:
    """Speed limits of the follower commands derived from the leader (0: no limit)."""

    max_speed: float = 3.0  # rad/s, revolute joints
    max_gripper_speed: float = 0.2  # m/s, prismatic joints

    def __post_init__(self) -> None:
        for name in ("max_speed", "max_gripper_speed"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"LeaderConfig.{name} must be >= 0, got {getattr(self, name)}")


class LeaderMapping:
    """Leader ticks (J,) -> follower joint positions (J,), in the leader file's joint order."""

    def __init__(self, leader: ServoBusConfig, follower: ServoBusConfig, config: LeaderConfig) -> None:
        self.leader = leader
        self.config = config
        lower, upper, speed = [], [], []
        for joint in leader.joints:
            try:
                target = follower.by_joint(joint.joint)
            except KeyError:
                raise ServoConfigError(
                    f"{leader.source}: joints.{joint.joint}: the follower ({follower.source}) has no such joint"
                ) from None
            if target.prismatic != joint.prismatic:
                raise ServoConfigError(
                    f"{leader.source}: joints.{joint.joint}: prismatic on one arm, revolute on the other"
                )
            lower.append(target.min_position)
            upper.append(target.max_position)
            speed.append(config.max_gripper_speed if joint.prismatic else config.max_speed)
        self.lower = np.array(lower)  # (J,)
        self.upper = np.array(upper)  # (J,)
        self._speed = np.array(speed)  # (J,); 0 = unlimited
        self._last: np.ndarray | None = None  # (J,) last command

    @property
    def joint_names(self) -> list[str]:
        return self.leader.joint_names

    def to_follower(self, ticks: npt.ArrayLike) -> np.ndarray:
        """Calibrated leader angles within the follower's limits. (J,) ticks -> (J,) rad / m"""
        return np.clip(self.leader.ticks_to_joint(ticks), self.lower, self.upper)

    def reset(self, start: npt.ArrayLike | None) -> None:
        """Restart the speed limit from `start` (J,) (the follower's measured joints), or, with
        None, from the next reading (no easing)."""
        self._last = None if start is None else np.clip(np.asarray(start, dtype=float), self.lower, self.upper)

    def command(self, ticks: npt.ArrayLike, dt: float) -> np.ndarray:
        """The follower command for this reading, at most speed * dt from the last one. (J,)"""
        target = self.to_follower(ticks)
        if self._last is None:
            self._last = target
            return target.copy()
        bound = np.where(self._speed > 0.0, self._speed * max(dt, 0.0), np.inf)
        self._last = self._last + np.clip(target - self._last, -bound, bound)
        return self._last.copy()


def calibrate_offsets(leader: ServoBusConfig, ticks: npt.ArrayLike, pose: npt.ArrayLike) -> dict[str, int]:
    """offset_ticks per leader joint such that the reading `ticks` (J,) maps to `pose` (J,)
    (rad / m, e.g. the follower's zero pose), keeping each joint's direction and scale."""
    ticks = np.asarray(ticks, dtype=float)
    pose = np.asarray(pose, dtype=float)
    n = len(leader.joints)
    if ticks.shape != (n,) or pose.shape != (n,):
        raise ValueError(f"ticks and pose must have shape ({n},), got {ticks.shape} and {pose.shape}")
    return {
        joint.joint: int(np.rint(t - joint.direction * joint.ticks_per_unit * q))
        for joint, t, q in zip(leader.joints, ticks, pose, strict=True)
    }
