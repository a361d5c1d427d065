"""The safety layer called directly: command checks, step bound, limits, watchdog, state machine."""

import math

import numpy as np
import pytest

from armstack_driver.safety import (
    CommandCheck,
    JointLimits,
    Mode,
    MotionSupervisor,
    SafetyConfig,
    braking_deceleration,
    check_command,
    describe_hardware_error,
    rest_positions,
    servo_problems,
)

NAMES = ("waist", "shoulder", "elbow", "left_finger")
LIMITS = JointLimits(
    names=NAMES,
    lower=np.array([-3.14, -1.88, -2.14, 0.0]),
    upper=np.array([3.14, 1.98, 1.60, 0.037]),
    prismatic=np.array([False, False, False, True]),
    ignored=frozenset({"right_finger"}),
)
CONFIG = SafetyConfig(max_step_rad=0.02, max_step_m=0.002, command_timeout_s=0.5,
                      limit_tolerance_rad=0.01, limit_tolerance_m=0.001)
HOME = np.zeros(4)


def _accepted(names, positions) -> CommandCheck:
    check = check_command(names, positions, LIMITS, CONFIG)
    assert check.ok, check.error
    return check


@pytest.mark.parametrize(("names", "positions", "reason"), [
    (["waist"], [math.nan], "not a finite number"),
    (["waist"], [math.inf], "not a finite number"),
    (["elbow"], [1.62], "outside"),
    (["left_finger"], [-0.002], "outside"),
    (["wrist"], [0.0], "unknown joint"),
    (["waist", "waist"], [0.1, 0.2], "given twice"),
    (["waist", "elbow"], [0.1], "2 names but 1 positions"),
    (["right_finger"], [0.01], "no driven joint"),
    ([], [], "no driven joint"),
])
def test_bad_commands_are_rejected_whole(names, positions, reason):
    check = check_command(names, positions, LIMITS, CONFIG)
    assert not check.ok and reason in check.error
    assert not check.mask.any()


@pytest.mark.parametrize(("value", "expected", "clipped"), [
    (1.605, 1.60, ("elbow",)),  # within tolerance past the upper limit: clipped
    (-2.145, -2.14, ("elbow",)),
    (0.5, 0.5, ()),
])
def test_commands_within_tolerance_are_clipped(value, expected, clipped):
    check = _accepted(["elbow", "right_finger"], [value, 123.0])  # the mimic joint is ignored
    assert check.positions[2] == pytest.approx(expected)
    assert check.mask.tolist() == [False, False, True, False]
    assert check.clipped == clipped


@pytest.mark.parametrize(("bits", "text"), [
    (0x20, "0x20 (overload)"),
    (0x24, "0x24 (overheating, overload)"),
    (0x02, "0x02 (unknown bits 0x02)"),
])
def test_describe_hardware_error(bits, text):
    assert describe_hardware_error(bits) == text


@pytest.mark.parametrize(("error", "torque", "watchdog", "expected", "problem"), [
    (0, True, 0, True, None),
    (0x20, False, 0, True, "hardware error 0x20 (overload)"),
    (0, False, 0, True, "torque went off"),
    (0, False, 0, False, None),  # torque off is expected before enabling
    (0, True, -1, True, "Bus Watchdog expired"),
])
def test_servo_problems(error, torque, watchdog, expected, problem):
    problems = servo_problems([1, 2], ["waist", "elbow"], [0, error], [True, torque], [0, watchdog],
                              torque_expected=expected)
    if problem is None:
        assert problems == {}
    else:
        assert list(problems) == [2] and problem in problems[2] and "elbow" in problems[2]


def _active(measured=HOME, now=10.0) -> MotionSupervisor:
    sup = MotionSupervisor(LIMITS, CONFIG)
    sup.activate(measured, now)
    return sup


def test_inactive_writes_nothing_and_ignores_commands():
    sup = MotionSupervisor(LIMITS, CONFIG)
    assert sup.step(HOME, 0.0) is None
    assert not sup.submit(_accepted(["waist"], [0.5]), 1.0, None)
    assert sup.step(HOME, 1.0) is None


def test_activation_holds_the_measured_pose():
    measured = np.array([0.3, -0.2, 0.1, 0.01])
    sup = _active(measured)
    goal = sup.step(measured + 0.05, 10.01)  # the arm sags a bit: the goal stays put
    np.testing.assert_allclose(goal.positions, measured)
    assert sup.holding and sup.hold_reason == "waiting for joint_command"


@pytest.mark.parametrize(("joint", "target", "per_cycle"), [
    (0, 1.0, 0.02), (0, -1.0, -0.02), (3, 0.03, 0.002), (2, 0.015, 0.015),
])
def test_step_bound_limits_each_cycle(joint, target, per_cycle):
    sup = _active()
    command = np.zeros(4)
    command[joint] = target
    assert sup.submit(_accepted(NAMES, command.tolist()), 10.1, 9.9)
    goals = [sup.step(HOME, 10.1 + 0.005 * k).positions[joint] for k in range(1, 4)]
    expected = [min(abs(per_cycle) * k, abs(target)) * np.sign(target) for k in range(1, 4)]
    np.testing.assert_allclose(goals, expected, atol=1e-12)


def test_goal_reaches_target_and_partial_command_keeps_other_joints():
    sup = _active(np.array([0.1, 0.2, 0.3, 0.01]))
    sup.submit(_accepted(["left_finger"], [0.02]), 10.1, None)
    for k in range(10):
        goal = sup.step(HOME, 10.1 + 0.005 * k)
    np.testing.assert_allclose(goal.positions, [0.1, 0.2, 0.3, 0.02])


def test_new_command_stamp_is_reported_once():
    sup = _active()
    sup.submit(_accepted(["waist"], [0.01]), 10.1, 123.5)
    assert sup.step(HOME, 10.11).new_command_stamp == 123.5
    assert sup.step(HOME, 10.12).new_command_stamp is None


def test_commands_received_before_activation_are_ignored():
    sup = _active(now=10.0)
    assert not sup.submit(_accepted(["waist"], [0.5]), 9.99, None)


def test_watchdog_holds_at_measured_then_a_fresh_command_resumes():
    sup = _active()
    sup.submit(_accepted(["waist"], [1.0]), 10.0, None)
    for k in range(1, 11):
        sup.step(np.array([0.015 * k, 0, 0, 0]), 10.0 + 0.005 * k)
    measured = np.array([0.2, 0.0, 0.0, 0.0])
    goal = sup.step(measured, 10.0 + CONFIG.command_timeout_s + 0.01)
    np.testing.assert_allclose(goal.positions, measured)  # stopped where the arm is
    assert sup.holding and "command watchdog" in sup.hold_reason
    np.testing.assert_allclose(sup.step(measured, 11.0).positions, measured)
    sup.submit(_accepted(["waist"], [1.0]), 11.0, None)
    assert sup.step(measured, 11.01).positions[0] == pytest.approx(0.22)


@pytest.mark.parametrize("stop", ["estop", "fault"])
def test_stops_hold_ignore_commands_and_need_reactivation(stop):
    sup = _active()
    sup.submit(_accepted(["waist"], [1.0]), 10.0, None)
    sup.step(HOME, 10.005)
    measured = np.array([0.01, 0.0, 0.0, 0.0])
    if stop == "estop":
        sup.estop(measured)
    else:
        sup.fault(["servo 3 (elbow: hardware error 0x20 (overload))"], measured)
    assert sup.mode == (Mode.ESTOP if stop == "estop" else Mode.FAULT)
    assert not sup.submit(_accepted(["waist"], [1.0]), 10.02, None)
    for k in range(5):
        np.testing.assert_allclose(sup.step(measured + 0.001 * k, 10.03 + k).positions, measured)
    sup.activate(measured, 20.0)
    assert sup.mode == Mode.ACTIVE and sup.faults == []


def test_fault_without_a_measurement_holds_the_last_goal():
    sup = _active()
    sup.submit(_accepted(["waist"], [1.0]), 10.0, None)
    last = sup.step(HOME, 10.005).positions
    sup.fault(["bus read failed"], None)
    np.testing.assert_allclose(sup.step(HOME, 10.01).positions, last)


def test_faults_accumulate_without_duplicates_and_estop_does_not_mask_them():
    sup = _active()
    sup.fault(["a"], HOME)
    sup.fault(["a", "b"], HOME)
    sup.estop(HOME)
    assert sup.mode == Mode.FAULT and sup.faults == ["a", "b"]


def test_fault_before_enabling_writes_nothing():
    sup = MotionSupervisor(LIMITS, CONFIG)
    sup.fault(["servo 4 missing"], HOME)
    assert sup.mode == Mode.FAULT and sup.step(HOME, 1.0) is None


def test_deactivate_stops_writing():
    sup = _active()
    sup.deactivate()
    assert sup.mode == Mode.INACTIVE and sup.step(HOME, 11.0) is None


@pytest.mark.parametrize(("field", "value"), [
    ("max_step_rad", 0.0), ("max_step_m", -1.0), ("command_timeout_s", math.nan),
    ("limit_tolerance_rad", -0.1),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**{field: value})


def test_braking_deceleration_of_the_configured_profiles(servo_config):
    decel = braking_deceleration(servo_config)
    # Profile Acceleration 30 x 214.577 rev/min^2 = 11.24 rad/s^2 at the joint; the finger's
    # linkage maps the same motor acceleration through 40000 ticks/m.
    np.testing.assert_allclose(decel[:6], 30 * 214.577 / 3600 * 2 * math.pi, rtol=1e-9)
    assert decel[6] == pytest.approx(30 * 214.577 / 3600 * 4096 / 40000)


@pytest.mark.parametrize(("position", "velocity", "decel", "rest"), [
    (0.5, 2.0, 10.0, 0.7),
    (0.5, -2.0, 10.0, 0.3),
    (0.5, 0.0, 10.0, 0.5),
    (0.5, 2.0, math.inf, 0.5),  # no profile: the servo stops at once
])
def test_rest_positions(position, velocity, decel, rest):
    assert rest_positions([position], [velocity], [decel])[0] == pytest.approx(rest)
