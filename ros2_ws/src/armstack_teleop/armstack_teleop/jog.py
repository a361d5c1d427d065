"""End-effector jogging: a target pose in base_link that keyboard and gamepad move.

`EETarget` starts at the measured ee_link pose and is moved by small displacements:
translations along the base_link axes, yaw about the base_link z axis (through the gripper),
pitch about the gripper's own y axis (tilting the approach direction) and roll about its x
axis (the approach axis). What the node publishes on `ee_command` is this target.

The target never runs away from the arm: it stays inside a workspace box, within `max_lead`
metres of the measured ee position and within `max_angle_lead` radians of the measured
orientation. When the arm cannot follow (IK at a limit, a slow joint), further jogging in
the same direction does nothing instead of piling up a target the arm will lunge for later.

Plain module: no rclpy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JogConfig:
    """Limits of the jog target. Positions in base_link (m), angles in rad."""

    workspace_min: tuple[float, float, float] = (0.05, -0.40, 0.01)
    workspace_max: tuple[float, float, float] = (0.45, 0.40, 0.45)
    max_lead: float = 0.05  # m, target position from the measured ee position
    max_angle_lead: float = 0.5  # rad, target orientation from the measured one
    gripper_closed: float = 0.0  # m, left_finger opening
    gripper_open: float = 0.034  # m

    def __post_init__(self) -> None:
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"JogConfig.{name} must have 3 values (x, y, z), got {getattr(self, name)}")
        if not all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ValueError(
                f"JogConfig.workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}"
            )
        if not self.max_lead > 0.0:
            raise ValueError(f"JogConfig.max_lead must be > 0, got {self.max_lead}")
        if not 0.0 < self.max_angle_lead <= math.pi:
            raise ValueError(f"JogConfig.max_angle_lead must be in (0, pi], got {self.max_angle_lead}")
        if not 0.0 <= self.gripper_closed < self.gripper_open:
            raise ValueError(
                f"JogConfig.gripper_closed {self.gripper_closed} must be >= 0 and below gripper_open "
                f"{self.gripper_open}"
            )


def rot_x(angle: float) -> np.ndarray:
    """(3, 3)"""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """(3, 3)"""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """(3, 3)"""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_angle(r0: np.ndarray, r1: np.ndarray) -> float:
    """Angle of the rotation taking r0 to r1 (both (3, 3)), in [0, pi]."""
    return math.acos(min(max((np.trace(r0.T @ r1) - 1.0) / 2.0, -1.0), 1.0))


class EETarget:
    """The jogged ee_link target and gripper opening (see the module docstring)."""

    def __init__(self, config: JogConfig) -> None:
        self.config = config
        self._pose: np.ndarray | None = None  # (4, 4)
        self._gripper = config.gripper_open
        self._measured: np.ndarray | None = None  # (4, 4) last measured ee pose

    @property
    def synced(self) -> bool:
        return self._pose is not None

    @property
    def pose(self) -> np.ndarray:
        """(4, 4) target of ee_link in base_link."""
        if self._pose is None:
            raise RuntimeError("EETarget has no pose before sync()")
        return self._pose.copy()

    @property
    def gripper(self) -> float:
        return self._gripper

    def sync(self, measured_pose: np.ndarray, gripper: float) -> None:
        """Put the target where the arm is (at start and when a device reconnects)."""
        self._measured = np.array(measured_pose, dtype=float)
        self._pose = self._measured.copy()
        self._pose[:3, 3] = np.clip(self._pose[:3, 3], self.config.workspace_min, self.config.workspace_max)
        self._gripper = self._clip_gripper(gripper)

    def observe(self, measured_pose: np.ndarray) -> None:
        """The latest measured ee pose, which the lead limits refer to. (4, 4)"""
        self._measured = np.array(measured_pose, dtype=float)

    def translate(self, delta: np.ndarray) -> None:
        """Move the target by `delta` (3,) metres along the base_link axes."""
        pose = self._require()
        position = pose[:3, 3] + np.asarray(delta, dtype=float)
        position = np.clip(position, self.config.workspace_min, self.config.workspace_max)
        if self._measured is not None:
            anchor = self._measured[:3, 3]
            offset = position - anchor
            distance = float(np.linalg.norm(offset))
            if distance > self.config.max_lead:
                position = anchor + offset * (self.config.max_lead / distance)
        pose[:3, 3] = position

    def rotate(self, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> None:
        """Turn the target: yaw about base_link z, then pitch about its own y, roll about its x."""
        pose = self._require()
        rotation = rot_z(yaw) @ pose[:3, :3] @ rot_y(pitch) @ rot_x(roll)
        if self._measured is not None:
            limit = self.config.max_angle_lead
            before = rotation_angle(self._measured[:3, :3], pose[:3, :3])
            after = rotation_angle(self._measured[:3, :3], rotation)
            # Refuse a step that leaves the allowed cone, but allow any step back into it.
            if after > limit and after >= before:
                return
        pose[:3, :3] = rotation

    def set_gripper(self, opening: float) -> None:
        self._gripper = self._clip_gripper(opening)

    def move_gripper(self, delta: float) -> None:
        self._gripper = self._clip_gripper(self._gripper + delta)

    def toggle_gripper(self) -> None:
        """Fully open when more closed than half, else fully closed."""
        middle = 0.5 * (self.config.gripper_open + self.config.gripper_closed)
        self._gripper = self.config.gripper_open if self._gripper < middle else self.config.gripper_closed

    def _clip_gripper(self, value: float) -> float:
        return float(min(max(value, self.config.gripper_closed), self.config.gripper_open))

    def _require(self) -> np.ndarray:
        if self._pose is None:
            raise RuntimeError("EETarget has no pose before sync()")
        return self._pose
