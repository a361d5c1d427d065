"""ProfiledJoints: joint goals move at the servos' profile velocity and acceleration."""

import numpy as np
import pytest
from armstack_common.servo_config import load_default_servo_config
from armstack_sim.profiled_joints import ProfiledJoints

DT = 0.002  # s, the simulator's physics step


def _limits(joint):
    """(rad/s, rad/s^2) of a joint's velocity-based profile, from the register units."""
    rev_per_s = joint.profile_velocity * 0.229 / 60.0
    rev_per_s2 = joint.profile_acceleration * 214.577 / 3600.0
    per_rev = 4096.0 / joint.ticks_per_unit  # joint units per motor revolution
    return rev_per_s * per_rev, rev_per_s2 * per_rev


def test_a_step_goal_is_reached_within_the_profile_limits():
    config = load_default_servo_config()
    servos = ProfiledJoints(config)
    start = np.zeros(len(config.joints))
    servos.reset(start)
    goal = start.copy()
    goal[0] = 1.0  # waist, rad
    servos.set_goals(goal)
    trace = np.array([servos.step(DT)[0] for _ in range(round(2.0 / DT))])
    vmax, amax = _limits(config.joints[0])
    velocity = np.diff(trace) / DT
    assert velocity.max() == pytest.approx(vmax, rel=0.02)  # cruises at the profile velocity
    moving = int(np.nonzero(velocity)[0][-1])  # the last step snaps onto the goal
    assert np.abs(np.diff(velocity[:moving])).max() / DT <= amax * 1.05
    # Ticks are integers: the goal is reached to a tick and held.
    assert trace[-1] == pytest.approx(1.0, abs=1.0 / config.joints[0].ticks_per_unit)
    # A trapezoid over 1 rad takes distance / vmax + vmax / amax, no less.
    arrival = DT * (1 + np.argmax(np.abs(trace - trace[-1]) < 1e-9))
    assert arrival == pytest.approx(1.0 / vmax + vmax / amax, rel=0.05)


def test_other_joints_hold_and_reset_stops_at_once():
    config = load_default_servo_config()
    servos = ProfiledJoints(config)
    start = np.linspace(-0.2, 0.2, len(config.joints))
    start[-1] = 0.01  # the finger, m
    servos.reset(start)
    setpoints = servos.step(DT).copy()
    np.testing.assert_allclose(setpoints, start, atol=max(1.0 / j.ticks_per_unit
                                                          for j in config.joints))
    goal = start + 0.5
    servos.set_goals(goal)
    moving = servos.step(DT).copy()
    assert np.all(moving != setpoints) and np.all(np.abs(moving - start) < 0.01)
    servos.reset(start)
    assert servos.step(DT) == pytest.approx(setpoints)  # no leftover velocity


def test_drive_moves_the_world_along_the_profiles():
    from armstack_sim.world import SimWorld

    world = SimWorld()
    world.reset(0)
    config = load_default_servo_config()
    servos = ProfiledJoints(config)
    start = world.joint_positions()
    servos.reset(start)
    goal = start.copy()
    goal[0] += 0.3  # waist, rad
    servos.set_goals(goal)
    t0 = world.time
    servos.drive(world, 0.02)  # one 50 Hz control period
    assert world.time - t0 == pytest.approx(0.02, abs=world.timestep / 2)
    # the world's setpoint is the profile's, 20 ms into a trapezoid from rest (a ramp at the
    # profile acceleration, to a tick), not the goal
    _, amax = _limits(config.joints[0])
    tick = 1.0 / config.joints[0].ticks_per_unit
    assert world.joint_targets()[0] - start[0] == pytest.approx(0.5 * amax * 0.02 ** 2,
                                                                abs=2 * tick)
    servos.drive(world, 1.5)
    assert world.joint_targets()[0] == pytest.approx(goal[0], abs=tick)
    assert world.joint_positions()[0] == pytest.approx(goal[0], abs=0.01)
