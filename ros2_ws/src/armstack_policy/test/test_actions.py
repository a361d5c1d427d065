"""Action columns -> end-effector poses and the chunk's ee_link path."""

import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics, IKConfig
from armstack_common.paths import urdf_path
from armstack_common.robot_names import EE_ACTION_NAMES
from armstack_common.transforms import quat_xyzw_to_matrix
from armstack_policy.actions import (
    ActionLayout,
    ChunkPath,
    normalize_quaternion,
    upsample_waypoints,
    waypoint_frames,
)

JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
          "left_finger")


@pytest.fixture(scope="module")
def kinematics() -> ArmKinematics:
    return ArmKinematics(urdf_path(), IKConfig(start_table_size=0))


@pytest.mark.parametrize("q", [[0.0, 0.0, 0.0, 2.0], [0.3, -0.1, 0.2, 0.9], [-1.0, 1.0, 1.0, -1.0]])
def test_normalize_quaternion_keeps_the_direction(q):
    unit = normalize_quaternion(np.array(q))
    assert np.linalg.norm(unit) == pytest.approx(1.0)
    np.testing.assert_allclose(unit * np.linalg.norm(q), q)


def test_normalize_quaternion_refuses_a_zero_vector():
    with pytest.raises(ValueError, match="no direction"):
        normalize_quaternion(np.zeros(4))


def test_ee_pose_reads_columns_by_name_in_any_order():
    names = ("gripper", "qw", "x", "qx", "y", "qy", "z", "qz")
    layout = ActionLayout("ee", names)
    values = dict(x=0.3, y=-0.1, z=0.2, qx=0.0, qy=0.0, qz=0.0, qw=0.5, gripper=0.02)
    pose = layout.ee_pose(np.array([values[n] for n in names]))
    np.testing.assert_allclose(pose.position, [0.3, -0.1, 0.2])
    np.testing.assert_allclose(pose.quaternion, [0.0, 0.0, 0.0, 1.0])
    assert pose.gripper == pytest.approx(0.02)


@pytest.mark.parametrize(("kind", "names", "match"), [
    ("torque", JOINTS, "action kind"),
    ("ee", ("x", "y", "z", "qx", "qy", "qz", "gripper"), r"missing \['qw'\]"),
])
def test_layout_validation(kind, names, match):
    with pytest.raises(ValueError, match=match):
        ActionLayout(kind, names)


def test_joint_path_is_fk_of_every_row(kinematics):
    path = ChunkPath(ActionLayout("joint", JOINTS), kinematics)
    chunk = np.zeros((4, 7))
    chunk[:, 0] = [0.0, 0.2, 0.4, 0.6]  # waist sweep
    chunk[:, 6] = 0.01
    positions, quaternions = path.poses(chunk)
    for row, p, q in zip(chunk, positions, quaternions, strict=True):
        pose = kinematics.fk(row[:6])
        np.testing.assert_allclose(p, pose[:3, 3], atol=1e-12)
        np.testing.assert_allclose(quat_xyzw_to_matrix(q), pose[:3, :3], atol=1e-9)
    # A waist rotation turns the ee position about z: same radius and height.
    radii = np.linalg.norm(positions[:, :2], axis=1)
    np.testing.assert_allclose(radii, radii[0], atol=1e-9)
    np.testing.assert_allclose(np.arctan2(positions[:, 1], positions[:, 0]) - chunk[:, 0],
                               np.arctan2(positions[0, 1], positions[0, 0]), atol=1e-9)


def test_joint_path_needs_the_arm_joints(kinematics):
    with pytest.raises(ValueError, match="lack the arm joints.*waist"):
        ChunkPath(ActionLayout("joint", JOINTS[1:]), kinematics)
    with pytest.raises(ValueError, match="need kinematics"):
        ChunkPath(ActionLayout("joint", JOINTS))


def test_ee_path_uses_the_position_columns_and_unit_quaternions():
    path = ChunkPath(ActionLayout("ee", EE_ACTION_NAMES))
    chunk = np.array([[0.3, 0.0, 0.2, 0.0, 0.0, 0.0, 2.0, 0.01],
                      [0.3, 0.1, 0.2, 0.0, 0.0, 1.0, 1.0, 0.01]])
    positions, quaternions = path.poses(chunk)
    np.testing.assert_allclose(positions, chunk[:, :3])
    np.testing.assert_allclose(quaternions[1], [0.0, 0.0, 2 ** -0.5, 2 ** -0.5])


def test_waypoints_are_interpolated_to_the_control_rate():
    waypoints = np.array([[[0.0, 1.0], [0.3, 1.0], [0.3, 0.4]]], np.float32)  # (1, 3, 2)
    rows = upsample_waypoints(waypoints, 3)
    assert rows.shape == (1, 7, 2) and rows.dtype == np.float32
    assert np.allclose(rows[0, :, 0], [0.0, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3])
    assert np.allclose(rows[0, :, 1], [1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4])
    assert upsample_waypoints(waypoints, 1) is waypoints
    with pytest.raises(ValueError, match="stride"):
        upsample_waypoints(waypoints, 0)


@pytest.mark.parametrize(("waypoints", "stride"), [(1, 1), (3, 1), (3, 3), (16, 5), (8, 4)])
def test_waypoint_frames_is_the_upsampled_length(waypoints, stride):
    rows = upsample_waypoints(np.zeros((waypoints, 2), np.float32), stride)
    assert waypoint_frames(waypoints, stride) == rows.shape[0]
