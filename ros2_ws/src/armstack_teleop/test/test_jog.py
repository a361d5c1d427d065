"""The jog target: motion in base_link / gripper axes, workspace and lead limits, gripper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from armstack_teleop.jog import EETarget, JogConfig, rot_y, rot_z, rotation_angle


def top_down(position) -> np.ndarray:
    """ee_link pointing down (x = -z of base_link), fingers along base y. (4, 4)"""
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([[0, 0, -1], [0, 1, 0], [1, 0, 0]])
    pose[:3, 3] = position
    return pose


@pytest.fixture
def target() -> EETarget:
    t = EETarget(JogConfig())
    t.sync(top_down([0.25, 0.0, 0.15]), 0.02)
    return t


@pytest.mark.parametrize("delta", [(0.01, 0, 0), (0, -0.02, 0), (0, 0, 0.015), (0.01, 0.01, -0.01)])
def test_translation_is_along_base_axes(target: EETarget, delta) -> None:
    before = target.pose
    target.translate(np.array(delta))
    after = target.pose
    np.testing.assert_allclose(after[:3, 3] - before[:3, 3], delta, atol=1e-12)
    np.testing.assert_allclose(after[:3, :3], before[:3, :3])


def test_yaw_turns_about_base_z_through_the_gripper(target: EETarget) -> None:
    before = target.pose
    target.rotate(yaw=0.3)
    after = target.pose
    np.testing.assert_allclose(after[:3, 3], before[:3, 3])
    np.testing.assert_allclose(after[:3, :3], rot_z(0.3) @ before[:3, :3], atol=1e-12)
    # Pointing down, the approach axis stays vertical.
    np.testing.assert_allclose(after[:3, 0], [0, 0, -1], atol=1e-12)


def test_pitch_tilts_the_approach_axis_about_the_gripper_y(target: EETarget) -> None:
    before = target.pose
    target.rotate(pitch=0.2)
    after = target.pose
    np.testing.assert_allclose(after[:3, :3], before[:3, :3] @ rot_y(0.2), atol=1e-12)
    np.testing.assert_allclose(after[:3, 1], before[:3, 1], atol=1e-12)  # the y axis is the hinge
    assert math.isclose(math.acos(-after[2, 0]), 0.2, abs_tol=1e-9)  # tilted from vertical by 0.2


def test_roll_keeps_the_approach_axis(target: EETarget) -> None:
    before = target.pose
    target.rotate(roll=0.4)
    after = target.pose
    np.testing.assert_allclose(after[:3, 0], before[:3, 0], atol=1e-12)
    assert math.isclose(rotation_angle(before[:3, :3], after[:3, :3]), 0.4, abs_tol=1e-9)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [((0.0, 0.0, -0.5), (0.25, 0.0, 0.01)), ((0.0, 0.6, 0.0), (0.25, 0.40, 0.15)), ((-0.3, 0, 0), (0.05, 0, 0.15))],
)
def test_workspace_box_bounds_the_target(delta, expected) -> None:
    # A large lead so that only the box acts.
    t = EETarget(JogConfig(max_lead=1.0))
    t.sync(top_down([0.25, 0.0, 0.15]), 0.02)
    t.translate(np.array(delta))
    np.testing.assert_allclose(t.pose[:3, 3], expected, atol=1e-12)


def test_target_stays_within_max_lead_of_the_measured_pose(target: EETarget) -> None:
    for _ in range(40):  # 40 cm of key presses while the arm does not move
        target.translate(np.array([0.01, 0.0, 0.0]))
    np.testing.assert_allclose(target.pose[:3, 3], [0.30, 0.0, 0.15], atol=1e-12)
    # Once the arm catches up, jogging continues from there.
    target.observe(top_down([0.30, 0.0, 0.15]))
    target.translate(np.array([0.01, 0.0, 0.0]))
    np.testing.assert_allclose(target.pose[:3, 3], [0.31, 0.0, 0.15], atol=1e-12)


def test_rotation_stops_at_max_angle_lead_and_may_come_back(target: EETarget) -> None:
    measured = target.pose
    for _ in range(20):
        target.rotate(yaw=0.1)
    angle = rotation_angle(measured[:3, :3], target.pose[:3, :3])
    assert angle <= JogConfig().max_angle_lead + 1e-9
    assert angle >= JogConfig().max_angle_lead - 0.1  # it went as far as allowed
    target.rotate(yaw=-0.1)
    assert rotation_angle(measured[:3, :3], target.pose[:3, :3]) < angle


def test_sync_moves_the_target_to_the_measured_pose_within_the_box(target: EETarget) -> None:
    target.translate(np.array([0.02, 0, 0]))
    target.sync(top_down([0.6, 0.0, 0.2]), 0.5)  # outside the box, gripper beyond open
    np.testing.assert_allclose(target.pose[:3, 3], [0.45, 0.0, 0.2])
    assert target.gripper == JogConfig().gripper_open


def test_gripper_is_clipped_and_toggles(target: EETarget) -> None:
    cfg = JogConfig()
    target.move_gripper(-1.0)
    assert target.gripper == cfg.gripper_closed
    target.toggle_gripper()
    assert target.gripper == cfg.gripper_open
    target.move_gripper(0.01)
    assert target.gripper == cfg.gripper_open
    target.toggle_gripper()
    assert target.gripper == cfg.gripper_closed
    target.set_gripper(0.01)
    assert target.gripper == pytest.approx(0.01)


def test_no_pose_before_sync() -> None:
    t = EETarget(JogConfig())
    assert not t.synced
    with pytest.raises(RuntimeError, match="sync"):
        t.translate(np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workspace_min": (0.5, 0.0, 0.0)}, "workspace_min"),
        ({"workspace_max": (0.1, 0.1)}, "workspace_max"),
        ({"max_lead": 0.0}, "max_lead"),
        ({"max_angle_lead": 4.0}, "max_angle_lead"),
        ({"gripper_closed": 0.05}, "gripper_closed"),
    ],
)
def test_config_errors_name_the_field(kwargs, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        JogConfig(**kwargs)
