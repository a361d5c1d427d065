"""IKController on the project URDF: convergence, holding, refusals, limits, 5-DOF weights."""

from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
import pytest
from armstack_common.kinematics import IKConfig
from armstack_common.paths import urdf_path
from armstack_ik.controller import ControllerConfig, EECommand, IKController, Issue, Outcome

DT = 0.02  # the 50 Hz control period
START = np.array([0.0, -0.3, 0.4, 0.0, 0.5, 0.0, 0.01])  # measured: arm (6) + left_finger


def make(ik: IKConfig | None = None, **changes) -> IKController:
    controller = IKController(urdf_path(), ik or IKConfig(max_restarts=4), ControllerConfig(**changes))
    controller.set_measured(controller.joint_names, START, 0.0)
    return controller


def command(
    pose: np.ndarray, gripper: float = 0.02, stamp: float = 0.0, frame: str = "base_link"
) -> EECommand:
    quat = pin.Quaternion(np.ascontiguousarray(pose[:3, :3]))
    return EECommand(pose[:3, 3].copy(), np.array([quat.x, quat.y, quat.z, quat.w]), gripper, stamp, frame)


def rot(axis: str, angle: float) -> np.ndarray:
    return {
        "x": pin.utils.rotate("x", angle),
        "y": pin.utils.rotate("y", angle),
        "z": pin.utils.rotate("z", angle),
    }[axis]


def stream(controller: IKController, pose: np.ndarray, t0: float, steps: int, gripper: float = 0.02):
    """Send the same target every DT (freshly stamped) and step; returns (times, commands)."""
    times, path = [], []
    for k in range(1, steps + 1):
        t = t0 + k * DT
        controller.submit(command(pose, gripper, stamp=t), t)
        times.append(t)
        path.append(controller.step(t))
    return np.array(times), np.array(path)  # (steps,), (steps, 7)


def assert_within_limits(controller: IKController, path: np.ndarray, v0: np.ndarray) -> None:
    lim = controller.limits
    velocity = np.diff(path, axis=0) / DT  # (steps-1, 7)
    assert np.all(np.abs(velocity) <= lim.max_velocity * (1 + 1e-12))
    accel = np.diff(np.vstack([v0, velocity]), axis=0) / DT
    assert np.all(np.abs(accel) <= lim.max_acceleration * (1 + 1e-9) + 1e-9)
    assert np.all(path >= lim.lower) and np.all(path <= lim.upper)


def pose_error(controller: IKController, q: np.ndarray, pose: np.ndarray) -> tuple[float, float]:
    reached = controller.kinematics.fk(q[:-1])
    pos = float(np.linalg.norm(reached[:3, 3] - pose[:3, 3]))
    return pos, float(np.linalg.norm(pin.log3(reached[:3, :3].T @ pose[:3, :3])))


def offset_pose(controller: IKController, dp=(0.0, 0.0, 0.0), r: np.ndarray | None = None) -> np.ndarray:
    """The start pose moved by `dp` (base_link) and rotated by `r` (ee_link axes). (4, 4)"""
    pose = controller.kinematics.fk(START[:-1]).copy()
    pose[:3, 3] += dp
    if r is not None:
        pose[:3, :3] = pose[:3, :3] @ r
    return pose


REACHABLE = {
    "5 cm forward": dict(dp=(0.05, 0.0, 0.0)),
    "10 cm down": dict(dp=(0.0, 0.0, -0.10)),
    "sideways and up, yawed": dict(dp=(0.0, 0.08, 0.05), r=rot("z", 0.4)),
    "pitched 30 deg": dict(r=rot("y", math.radians(30))),
    "rolled 90 deg": dict(r=rot("x", math.pi / 2)),
}


@pytest.mark.parametrize("case", REACHABLE, ids=list(REACHABLE))
def test_reachable_targets_converge_within_the_limits(case):
    controller = make()
    pose = offset_pose(controller, **REACHABLE[case])
    start = controller.kinematics.fk(START[:-1])
    _, path = stream(controller, pose, 0.0, 150)
    path = np.vstack([START, path])
    assert_within_limits(controller, path, v0=np.zeros(7))
    assert not controller.moving
    pos, ang = pose_error(controller, path[-1], pose)
    assert pos < 2e-4 and ang < 2e-3
    assert path[-1, -1] == pytest.approx(0.02)
    # Sanity of the case itself: the arm had somewhere to go.
    assert (
        np.linalg.norm(start[:3, 3] - pose[:3, 3]) + np.linalg.norm(pin.log3(start[:3, :3].T @ pose[:3, :3]))
        > 0.04
    )


def test_far_target_from_another_configuration_converges():
    controller = make()
    goal = np.array([1.2, 0.4, -0.3, 0.8, -0.6, 1.0])
    pose = controller.kinematics.fk(goal).copy()
    _, path = stream(controller, pose, 0.0, 200)
    assert_within_limits(controller, np.vstack([START, path]), v0=np.zeros(7))
    pos, ang = pose_error(controller, path[-1], pose)
    assert pos < 2e-4 and ang < 2e-3


UNREACHABLE = {
    "1 m out": dict(dp=(1.0, 0.0, 0.0)),
    "1 m down": dict(dp=(0.0, 0.0, -1.0)),
    "behind and above reach": dict(dp=(-0.5, 0.0, 0.5)),
}


@pytest.mark.parametrize("case", UNREACHABLE, ids=list(UNREACHABLE))
def test_unreachable_target_holds_the_previous_command(case):
    controller = make()
    settled_pose = offset_pose(controller, dp=(0.02, 0.0, 0.0))
    stream(controller, settled_pose, 0.0, 60)
    assert not controller.moving
    before = controller.command
    t = 60 * DT
    for k in range(1, 6):
        submission = controller.submit(
            command(offset_pose(controller, **UNREACHABLE[case]), 0.03, t + k * DT), t + k * DT
        )
        assert submission.outcome is Outcome.HELD and submission.issue is Issue.UNREACHABLE
        assert "unreachable" in submission.reason and submission.position_error > 2e-3
        np.testing.assert_array_equal(controller.step(t + k * DT), before)  # gripper held too


def test_unreachable_while_moving_finishes_the_move_to_the_last_good_target():
    controller = make()
    good = offset_pose(controller, dp=(0.0, 0.0, -0.08))
    _, first = stream(controller, good, 0.0, 5)
    assert controller.moving
    target = controller.target
    far = offset_pose(controller, dp=(1.0, 0.0, 0.0))
    path = []
    for k in range(6, 120):
        t = k * DT
        assert controller.submit(command(far, stamp=t), t).outcome is Outcome.HELD
        path.append(controller.step(t))
    assert_within_limits(controller, np.vstack([START, first, path]), v0=np.zeros(7))
    np.testing.assert_array_equal(path[-1], target)


def _nan_position(c: EECommand) -> EECommand:
    return EECommand(np.array([np.nan, 0, 0]), c.orientation, c.gripper, c.stamp, c.frame_id)


REJECTIONS = {
    "nan position": (lambda c: _nan_position(c), Issue.INVALID),
    "inf gripper": (
        lambda c: EECommand(c.position, c.orientation, math.inf, c.stamp, c.frame_id),
        Issue.INVALID,
    ),
    "non-unit quaternion": (
        lambda c: EECommand(c.position, 1.1 * c.orientation, c.gripper, c.stamp, c.frame_id),
        Issue.INVALID,
    ),
    "wrong frame": (
        lambda c: EECommand(c.position, c.orientation, c.gripper, c.stamp, "world"),
        Issue.WRONG_FRAME,
    ),
    "empty frame": (
        lambda c: EECommand(c.position, c.orientation, c.gripper, c.stamp, ""),
        Issue.WRONG_FRAME,
    ),
    "stale": (
        lambda c: EECommand(c.position, c.orientation, c.gripper, c.stamp - 1.5, c.frame_id),
        Issue.STALE,
    ),
    "future": (
        lambda c: EECommand(c.position, c.orientation, c.gripper, c.stamp + 1.5, c.frame_id),
        Issue.STALE,
    ),
}


@pytest.mark.parametrize("case", REJECTIONS, ids=list(REJECTIONS))
def test_bad_commands_are_rejected_and_change_nothing(case):
    controller = make()
    pose = offset_pose(controller, dp=(0.0, 0.0, -0.05))
    stream(controller, pose, 0.0, 3)
    before_command, before_target = controller.command, controller.target
    spoil, issue = REJECTIONS[case]
    t = 4 * DT
    other = offset_pose(controller, dp=(0.05, 0.0, 0.0))
    submission = controller.submit(spoil(command(other, stamp=t)), t)
    assert submission.outcome is Outcome.REJECTED and submission.issue is issue and submission.reason
    np.testing.assert_array_equal(controller.command, before_command)
    np.testing.assert_array_equal(controller.target, before_target)


def test_stale_check_can_be_disabled():
    controller = make(max_command_age=0.0)
    pose = offset_pose(controller, dp=(0.0, 0.0, -0.05))
    assert controller.submit(command(pose, stamp=-100.0), 1.0).outcome is Outcome.TRACKING


def test_no_measured_state_is_rejected_until_one_arrives():
    controller = IKController(urdf_path(), IKConfig(max_restarts=4), ControllerConfig())
    pose = controller.kinematics.fk(START[:-1]).copy()
    submission = controller.submit(command(pose), 0.0)
    assert submission.issue is Issue.NO_STATE and "left_finger" in submission.reason
    assert controller.step(0.0) is None
    controller.set_measured([*controller.joint_names[:-1], "right_finger"], START, 0.0)
    assert controller.submit(command(pose), 0.0).issue is Issue.NO_STATE  # the gripper is still unknown
    controller.set_measured(["left_finger"], [0.01], 0.0)
    assert controller.submit(command(pose), 0.0).outcome is Outcome.TRACKING
    np.testing.assert_allclose(controller.step(0.0), START)  # first command: the measured state


@pytest.mark.parametrize("gripper, expected", [(0.5, 0.037), (-0.2, 0.0), (0.025, 0.025)])
def test_gripper_is_clipped_to_the_finger_limits_and_rate_limited(gripper, expected):
    controller = make()
    pose = controller.kinematics.fk(START[:-1]).copy()
    _, path = stream(controller, pose, 0.0, 60, gripper=gripper)
    assert path[-1, -1] == pytest.approx(expected)
    finger_speed = np.abs(np.diff(np.concatenate([[START[-1]], path[:, -1]]))) / DT
    assert finger_speed.max() <= 0.5 * 0.15 * (1 + 1e-12)  # velocity_scale * URDF velocity


def test_five_dof_weights_leave_the_roll_about_the_approach_axis_free():
    # Target: the start pose rolled 0.6 rad about ee_link x and moved 3 cm. With the x
    # orientation weight at 0 the roll is not asked for: the approach axis is matched and
    # the roll stays near the seed's; with full weights the roll is matched too.
    roll = 0.6
    results = {}
    for weights in ((0.0, 1.0, 1.0), (1.0, 1.0, 1.0)):
        controller = make(IKConfig(orientation_weights=weights, max_restarts=4))
        pose = offset_pose(controller, dp=(0.0, 0.03, 0.0), r=rot("x", roll))
        _, path = stream(controller, pose, 0.0, 100)
        reached = controller.kinematics.fk(path[-1][:-1])
        assert np.linalg.norm(reached[:3, 3] - pose[:3, 3]) < 2e-4
        assert reached[:3, 0] @ pose[:3, 0] > math.cos(2e-3)  # approach axis matched either way
        start_y = controller.kinematics.fk(START[:-1])[:3, 1]
        results[weights] = (reached[:3, 1] @ pose[:3, 1], reached[:3, 1] @ start_y)
    free_vs_target, free_vs_start = results[(0.0, 1.0, 1.0)]
    full_vs_target, _ = results[(1.0, 1.0, 1.0)]
    assert full_vs_target > math.cos(2e-3)
    assert free_vs_target < math.cos(0.3)  # the roll was not followed...
    assert free_vs_start > math.cos(0.3)  # ...it stayed near the start's


def test_gap_between_commands_restarts_from_rest():
    controller = make()
    far = offset_pose(controller, dp=(0.0, 0.0, -0.1))
    stream(controller, far, 0.0, 5)
    t = 5 * DT + 0.3  # commands stopped for 0.3 s > max_step_period
    before = controller.command
    controller.submit(command(far, stamp=t), t)
    np.testing.assert_array_equal(controller.step(t), before)  # the period is unknown: no motion
    controller.submit(command(far, stamp=t + DT), t + DT)
    after = controller.step(t + DT)
    assert np.any(after != before)
    assert np.all(np.abs(after - before) <= controller.limits.max_acceleration * DT**2 * (1 + 1e-9))


@pytest.mark.parametrize("resync_after", [1.0, 0.0])
def test_resync_after_idle_starts_from_the_measured_state(resync_after):
    controller = make(resync_after=resync_after)
    pose = offset_pose(controller, dp=(0.0, 0.0, -0.05))
    stream(controller, pose, 0.0, 60)
    old = controller.command
    moved = START + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # someone turned the waist
    controller.set_measured(controller.joint_names, moved, 10.0)
    submission = controller.submit(command(pose, stamp=10.0), 10.0)
    first = controller.step(10.0)
    if resync_after:
        assert submission.synced
        np.testing.assert_array_equal(first, moved)  # where the arm is, not the old command
    else:
        assert not submission.synced
        np.testing.assert_array_equal(first, old)


def test_reconfigure_applies_new_velocity_scale_and_refuses_bad_settings():
    controller = make()
    controller.reconfigure(controller.kinematics.config, ControllerConfig(velocity_scale=0.1))
    pose = offset_pose(controller, dp=(0.0, 0.0, -0.1))
    _, path = stream(controller, pose, 0.0, 40)
    speed = np.abs(np.diff(np.vstack([START, path]), axis=0)) / DT
    assert np.all(speed[:, :-1] <= 0.1 * 3.14 * (1 + 1e-12))
    with pytest.raises(ValueError, match="arm_acceleration"):
        controller.reconfigure(controller.kinematics.config, ControllerConfig(arm_acceleration=(1.0,)))
    assert controller.config.velocity_scale == 0.1  # the refused update left the settings alone
    new_ik = IKConfig(orientation_weights=(0.0, 1.0, 1.0), max_restarts=2)
    controller.reconfigure(new_ik, controller.config)
    assert controller.kinematics.config == new_ik


@pytest.mark.parametrize(
    "field, changes, ik",
    [
        ("arm_acceleration", {"arm_acceleration": (8.0,) * 5}, IKConfig()),
        ("accept_position_tolerance", {"accept_position_tolerance": 1e-5}, IKConfig()),
        ("accept_orientation_tolerance", {"accept_orientation_tolerance": 1e-4}, IKConfig()),
    ],
)
def test_settings_that_do_not_fit_the_arm_name_the_field(field, changes, ik):
    with pytest.raises(ValueError, match=field):
        IKController(urdf_path(), ik, ControllerConfig(**changes))


@pytest.mark.parametrize(
    "field, value",
    [
        ("velocity_scale", 0.0),
        ("velocity_scale", 1.5),
        ("max_step_period", 0.0),
        ("base_frame", ""),
        ("max_command_age", -1.0),
        ("arm_acceleration", (8.0, -1.0)),
        ("quaternion_tolerance", 0.0),
    ],
)
def test_controller_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"ControllerConfig.{field}"):
        ControllerConfig(**{field: value})


def test_malformed_joint_state_records_nothing():
    controller = IKController(urdf_path(), IKConfig(max_restarts=1), ControllerConfig())
    with pytest.raises(ValueError, match="7 names but 6 positions"):
        controller.set_measured(controller.joint_names, START[:-1], 0.0)
    assert controller.measured_age(0.0) is None


def test_reset_makes_a_used_controller_behave_as_a_new_one():
    used = make()
    pose = offset_pose(used, dp=(0.03, -0.02, 0.02))
    stream(used, pose, 0.0, 5)  # mid-move: a target, a velocity, a clock
    assert used.moving and used.target is not None
    used.reset()
    assert used.command is None and used.target is None and not used.moving
    assert used.measured_age(100.0) is None
    # a new episode at another time: the same commands as a controller made for it
    used.set_measured(used.joint_names, START, 50.0)
    fresh = make()
    fresh.set_measured(fresh.joint_names, START, 50.0)
    _, after_reset = stream(used, pose, 50.0, 30)
    _, new = stream(fresh, pose, 50.0, 30)
    np.testing.assert_array_equal(after_reset, new)
