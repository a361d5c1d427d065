"""What a policy's action vector means for its commands and its rviz path (no ROS).

Joint-space actions ("joint") are position targets named like sensor_msgs/JointState; they go
out as they are. End-effector actions ("ee") hold x, y, z (m, base_link), qx, qy, qz, qw and
gripper (m, left_finger); a regressed or ensembled quaternion is only near unit length, so it
is normalized before it becomes a pose. The chunk's path for rviz is the ee_link position of
every row: the action's own x, y, z, or forward kinematics of the joint targets.
A policy may predict waypoints several control frames apart (a VLA's tokens, a Diffusion
Policy's denoised chunk): `upsample_waypoints` interpolates them to the control rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from armstack_common.robot_names import EE_ACTION_NAMES
from armstack_common.transforms import matrix_to_quat_xyzw

ACTION_KINDS = ("joint", "ee")


def waypoint_frames(waypoints: int, stride: int) -> int:
    """Control frames that `waypoints` actions `stride` frames apart span, both ends included:
    the length of their `upsample_waypoints`."""
    return (waypoints - 1) * stride + 1


def upsample_waypoints(waypoints: np.ndarray, stride: int) -> np.ndarray:
    """(..., k, D) waypoints stride frames apart -> (..., (k - 1) * stride + 1, D) by linear
    interpolation (row j * stride is waypoint j). A quaternion comes out slightly short of unit
    length between waypoints; the runtime normalizes it (below)."""
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    waypoints = np.asarray(waypoints)
    if stride == 1:
        return waypoints
    k = waypoints.shape[-2]
    frac = np.arange(stride, dtype=np.float64) / stride  # (s,)
    start, end = waypoints[..., :-1, None, :], waypoints[..., 1:, None, :]  # (..., k-1, 1, D)
    rows = start + (end - start) * frac[:, None]  # (..., k-1, s, D)
    rows = rows.reshape(*waypoints.shape[:-2], (k - 1) * stride, waypoints.shape[-1])
    return np.concatenate([rows, waypoints[..., -1:, :]], axis=-2).astype(waypoints.dtype)


class ForwardKinematics(Protocol):
    """What the path needs of armstack_common.kinematics.ArmKinematics."""

    joint_names: tuple[str, ...]

    def fk(self, q: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class EEPose:
    position: np.ndarray  # (3,) m
    quaternion: np.ndarray  # (4,) x, y, z, w, unit length
    gripper: float  # m


def normalize_quaternion(q: np.ndarray) -> np.ndarray:
    """(4,) x, y, z, w scaled to unit length; ValueError for a (near) zero vector."""
    norm = math.sqrt(float(np.dot(q, q)))
    if not norm > 1e-6:
        raise ValueError(f"quaternion {np.asarray(q).tolist()} has no direction")
    return np.asarray(q, dtype=np.float64) / norm


class ActionLayout:
    """Column meaning of one policy's actions; validated on construction."""

    def __init__(self, kind: str, names: Sequence[str]) -> None:
        if kind not in ACTION_KINDS:
            raise ValueError(f"action kind must be one of {ACTION_KINDS}, got {kind!r}")
        self.kind = kind
        self.names = tuple(names)
        if kind == "ee":
            missing = [n for n in EE_ACTION_NAMES if n not in self.names]
            if missing:
                raise ValueError(f"end-effector actions need columns {EE_ACTION_NAMES}, "
                                 f"missing {missing}")
            self._position = [self.names.index(n) for n in EE_ACTION_NAMES[:3]]
            self._quaternion = [self.names.index(n) for n in EE_ACTION_NAMES[3:7]]
            self._gripper = self.names.index("gripper")

    def ee_pose(self, action: np.ndarray) -> EEPose:
        """The (D,) action of an "ee" policy as a pose and gripper opening."""
        if self.kind != "ee":
            raise ValueError("ee_pose needs end-effector actions")
        return EEPose(np.asarray(action[self._position], dtype=np.float64),
                      normalize_quaternion(action[self._quaternion]), float(action[self._gripper]))


class ChunkPath:
    """ee_link poses of each row of a chunk, for a nav_msgs/Path."""

    def __init__(self, layout: ActionLayout, kinematics: ForwardKinematics | None = None) -> None:
        self.layout = layout
        self._kinematics = kinematics
        if layout.kind == "joint":
            if kinematics is None:
                raise ValueError("joint-space actions need kinematics for the path")
            missing = [n for n in kinematics.joint_names if n not in layout.names]
            if missing:
                raise ValueError(f"actions {layout.names} lack the arm joints {missing} "
                                 "that place ee_link")
            self._joints = [layout.names.index(n) for n in kinematics.joint_names]

    def poses(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """chunk (k, D) -> positions (k, 3) m and unit quaternions (k, 4) x, y, z, w."""
        k = chunk.shape[0]
        positions, quaternions = np.empty((k, 3)), np.empty((k, 4))
        for i, row in enumerate(chunk):
            if self.layout.kind == "ee":
                pose = self.layout.ee_pose(row)
                positions[i], quaternions[i] = pose.position, pose.quaternion
            else:
                m = self._kinematics.fk(np.asarray(row[self._joints], dtype=np.float64))
                positions[i], quaternions[i] = m[:3, 3], matrix_to_quat_xyzw(m[:3, :3])
        return positions, quaternions
