"""The real driver node (subprocess) on the emulated bus: rate, commands, checks, parameters."""

import time

import numpy as np
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter


def _loop_counts(obs) -> tuple[float, int, int]:
    """(diagnostics stamp, cycles, missed cycles) of the latest loop status."""
    stamp, status = obs.stamped_status("loop")
    values = {kv.key: kv.value for kv in status.values}
    return stamp, int(values["cycles"]), int(values["missed_cycles"])


def test_joint_states_at_the_configured_rate(start_driver, driver_observer):
    start_driver(rate_hz=200.0, diagnostics_period_s=0.5)
    obs = driver_observer
    obs.spin_until(lambda: len(obs.messages["joint_states"]) > 20 and obs.value("loop", "cycles"),
                   30.0, "joint_states and loop diagnostics")
    obs.messages["joint_states"].clear()
    first = _loop_counts(obs)
    obs.spin_for(3.0)
    last = _loop_counts(obs)
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                       for _, m in obs.messages["joint_states"]])
    published = np.count_nonzero((stamps > first[0]) & (stamps <= last[0]))
    cycles, missed = last[1] - first[1], last[2] - first[2]
    elapsed = last[0] - first[0]
    print(f"\njoint_states {published / elapsed:.1f} Hz, loop cycles {cycles / elapsed:.1f} Hz, "
          f"cycles + missed {(cycles + missed) / elapsed:.1f} Hz (target 200)")
    # Every cycle publishes; the loop keeps the 200 Hz schedule and counts each slot it misses
    # (a 2-core machine shared with other work misses some), so nothing is lost unreported.
    assert published == pytest.approx(cycles, rel=0.2, abs=10)
    assert (cycles + missed) / elapsed == pytest.approx(200.0, rel=0.05)
    assert cycles / elapsed > 50.0
    assert np.all(np.diff(stamps) > 0)
    msg = obs.latest("joint_states")
    assert list(msg.name) == ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                              "wrist_rotate", "left_finger", "right_finger"]
    assert msg.position[7] == msg.position[6]  # URDF mimic, multiplier 1
    assert len(msg.velocity) == len(msg.effort) == 8
    # Stamped when the sync read completed: older than its arrival here, but not by much.
    age = time.time() - stamps[-1]
    assert 0.0 < age < 0.5


def test_commanded_joints_arrive_and_latency_is_measured(start_driver, driver_observer, arm):
    start_driver()
    obs = driver_observer
    obs.wait_mode("active")
    target = {"waist": 0.4, "shoulder": -0.3, "wrist_rotate": 1.0, "left_finger": 0.025}
    obs.spin_until(lambda: np.allclose(arm.positions()[[0, 1, 5, 6]], list(target.values()), atol=2e-3),
                   10.0, "the arm at the commanded pose", every=lambda: obs.command(**target))
    obs.spin_for(0.3, every=lambda: obs.command(**target))
    state = obs.latest("joint_states")
    reported = dict(zip(state.name, state.position, strict=True))
    for joint, value in target.items():
        assert reported[joint] == pytest.approx(value, abs=2e-3)
    assert reported["right_finger"] == pytest.approx(0.025, abs=1e-4)
    latencies = [m.data for _, m in obs.messages["driver/latency"]]
    assert latencies and all(0.0 < s < 0.5 for s in latencies)  # stamp (now) -> bus write
    obs.spin_until(lambda: obs.value("motion", "latency_ms_median") not in (None, "nan"), 10.0,
                   "latency in diagnostics")
    assert 0.0 < float(obs.value("motion", "latency_ms_median")) < 100.0


BAD_COMMANDS = (
    ({"elbow": float("nan")}, "elbow = nan is not a finite number"),
    ({"elbow": 2.5}, "elbow = 2.5000 rad outside"),
    ({"waist": 0.3, "gripper": 0.01}, "unknown joint 'gripper'"),
)


def test_bad_commands_never_reach_the_servos(start_driver, driver_observer, arm):
    start_driver(diagnostics_period_s=0.2)
    obs = driver_observer
    obs.wait_mode("active")
    before = [arm.bus.goal_position_ticks(i) for i in range(1, 8)]
    for joints, reason in BAD_COMMANDS:
        obs.spin_until(lambda reason=reason: reason in (obs.status("motion").message or ""), 10.0,
                       f"the rejection {reason!r} in diagnostics",
                       every=lambda joints=joints: obs.command(**joints))
        assert obs.status("motion").level == b"\x01"
    obs.spin_for(0.3)
    assert [arm.bus.goal_position_ticks(i) for i in range(1, 8)] == before
    assert np.abs(arm.positions()).max() < 1e-3
    assert int(obs.value("motion", "commands_rejected")) >= len(BAD_COMMANDS)


def _set(obs, name: str, value) -> tuple[bool, str]:
    parameter = Parameter(name, value=value).to_parameter_msg()
    answer = obs.call(SetParameters, "driver/set_parameters",
                      request=SetParameters.Request(parameters=[parameter]))
    return answer.results[0].successful, answer.results[0].reason


def test_live_parameter_updates_are_validated_and_applied(start_driver, driver_observer, arm):
    start_driver()
    obs = driver_observer
    obs.wait_mode("active")
    ok, reason = _set(obs, "bus_watchdog_ms", 30)
    assert not ok and "multiple of 20" in reason
    ok, reason = _set(obs, "max_step_rad", 0.001)  # 0.2 rad/s at 200 Hz
    assert ok, reason
    obs.wait_following(lambda: obs.command(waist=1.0))
    start, t0 = arm.positions()[0], time.monotonic()
    obs.spin_for(1.0, every=lambda: obs.command(waist=1.0))
    speed = (arm.positions()[0] - start) / (time.monotonic() - t0)
    assert 0.05 < speed < 0.25  # the new step bound holds the arm back from the 2.4 rad/s profile
