"""Rotations and rigid transforms as NumPy arrays (no ROS, no tf2).

Quaternions are (x, y, z, w), the order of geometry_msgs/Quaternion; poses are
(4, 4) homogeneous matrices of a child frame in its parent frame.
"""

from __future__ import annotations

import numpy as np


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> rotation matrix. (4,) -> (3, 3)"""
    x, y, z, w = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat_xyzw(r: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w) with w >= 0. (3, 3) -> (4,)"""
    r = np.asarray(r, dtype=float)
    trace = np.trace(r)
    # Branch on the largest diagonal term so the square root never nears zero
    # (Shepperd's method).
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_matrix(position: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """(3,), (4,) -> (4, 4)"""
    pose = np.eye(4)
    pose[:3, :3] = quat_xyzw_to_matrix(quat_xyzw)
    pose[:3, 3] = position
    return pose


def invert(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform. (4, 4) -> (4, 4)"""
    inv = np.eye(4)
    inv[:3, :3] = pose[:3, :3].T
    inv[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return inv
