"""The driver loop without ROS, against the emulated bus with ideal joints (in this process)."""

import time

import numpy as np
import pytest

from armstack_driver.bus import BusOptions, DynamixelBus
from armstack_driver.loop import DriverLoop, LoopConfig
from armstack_driver.safety import JointLimits, Mode, MotionSupervisor, SafetyConfig, check_command


class Recorder:
    def __init__(self) -> None:
        self.samples = []
        self.latencies = []
        self.events = 0

    def state(self, sample) -> None:
        self.samples.append(sample)

    def latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def event(self) -> None:
        self.events += 1


@pytest.fixture
def make_loop(arm, servo_config):
    loops = []

    def make(publish_state=None, **config) -> tuple[DriverLoop, Recorder]:
        # A generous reply margin: the emulator shares this process, and the machine its cores.
        bus = DynamixelBus(servo_config, arm.bus.port_path, BusOptions(reply_margin_ms=60.0, io_attempts=10))
        bus.connect()
        bus.configure()
        recorder = Recorder()
        loop = DriverLoop(bus, MotionSupervisor(JointLimits.from_servo_config(servo_config), SafetyConfig()),
                          LoopConfig(**config), publish_state or recorder.state, recorder.latency,
                          recorder.event)
        loop.start()
        loops.append(loop)
        return loop, recorder

    yield make
    for loop in loops:
        loop.stop()
        loop.bus.disconnect()


def _command(loop, servo_config, **joints):
    limits = JointLimits.from_servo_config(servo_config)
    check = check_command(list(joints), list(joints.values()), limits, SafetyConfig())
    assert check.ok, check.error
    loop.post_command(check, time.monotonic(), time.time())


def _enable(loop) -> None:
    ok, message = loop.request("enable")
    assert ok, message


def _wait(predicate, timeout=3.0, every=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        if every is not None:
            every()
        time.sleep(0.02)


def test_states_flow_before_enable_and_commands_move_the_arm_after(make_loop, arm, servo_config):
    loop, rec = make_loop()
    _wait(lambda: len(rec.samples) > 10)
    assert loop.status().mode == "inactive" and not arm.bus.torque_enabled(1)
    ok, message = loop.request("enable")
    assert ok, message
    _wait(lambda: abs(arm.positions()[0] - 0.3) < 1e-3 and abs(arm.positions()[6] - 0.02) < 1e-4,
          every=lambda: _command(loop, servo_config, waist=0.3, left_finger=0.02))
    assert rec.latencies and all(0 <= s < 0.5 for s in rec.latencies)
    assert rec.samples[-1].positions[0] == pytest.approx(0.3, abs=2e-3)
    assert rec.events >= 2  # inactive -> active, holding -> following


def test_estop_torque_off_after_the_hold_delay(make_loop, arm):
    loop, _ = make_loop(estop_torque_off=True, estop_torque_off_delay_s=1.0)
    _enable(loop)
    t0 = time.monotonic()
    assert loop.request("estop") == (True, "e-stop: holding position; torque off in 1 s")
    assert arm.bus.torque_enabled(3)  # holding first
    _wait(lambda: not any(arm.bus.torque_enabled(i) for i in range(1, 8)), timeout=3.0)
    assert time.monotonic() - t0 >= 1.0
    assert loop.status().mode == "estop"
    assert loop.request("enable")[0] and arm.bus.torque_enabled(3)


def test_enable_arms_the_bus_watchdog(make_loop, arm):
    loop, _ = make_loop(bus_watchdog_ms=1000)  # long: a loaded machine may stall this process
    _enable(loop)
    assert [arm.bus.register(i, "bus_watchdog") for i in range(1, 8)] == [50] * 7
    time.sleep(1.5)  # the loop's traffic keeps every watchdog fed
    assert loop.status().mode == "active" and loop.status().servo_problems == {}


def test_enable_refuses_with_a_servo_missing(make_loop, arm):
    loop, _ = make_loop()
    arm.bus.set_connected(5, False)
    ok, message = loop.request("enable")
    assert not ok and "servo 5 (wrist_angle)" in message
    assert not any(arm.bus.torque_enabled(i) for i in range(1, 8))


def test_a_request_that_raises_fails_and_the_loop_goes_on(make_loop, arm, monkeypatch):
    """A bug in a request handler (a mock: the one seen, a late bus reply, is fixed) must fail
    that request, not end the loop that reads the bus and publishes the state."""
    loop, recorder = make_loop()

    def broken() -> list[int]:
        raise IndexError("index out of range")

    monkeypatch.setattr(loop.bus, "restore_ram_setup", broken)
    ok, message = loop.request("enable")
    assert not ok and message == "enable failed: IndexError: index out of range"
    before = len(recorder.samples)
    _wait(lambda: len(recorder.samples) > before + 5)  # still reading the bus
    monkeypatch.undo()
    _enable(loop)


@pytest.mark.parametrize("reboot", [True, False])
def test_enable_after_a_hardware_error(make_loop, arm, reboot):
    loop, _ = make_loop(reboot_on_enable=reboot)
    _enable(loop)
    arm.bus.inject_hardware_error(4, 0x20)
    _wait(lambda: loop.status().mode == "fault")
    assert any("servo 4 (forearm_roll: hardware error 0x20 (overload))" in f for f in loop.status().faults)
    ok, message = loop.request("enable")
    assert ok == reboot, message
    if reboot:
        assert message == "motion enabled (rebooted servo(s) [4])" and arm.bus.torque_enabled(4)
    else:
        assert "reboot_on_enable is off" in message


def test_a_failing_cycle_stops_motion_but_not_the_loop(make_loop, arm):
    calls = []

    def broken(sample) -> None:
        calls.append(sample)
        if len(calls) > 20:
            raise RuntimeError("subscriber bug")

    loop, _ = make_loop(publish_state=broken)
    _enable(loop)
    _wait(lambda: loop.status().mode == "fault")
    cycles = loop.status().cycles
    _wait(lambda: loop.status().cycles > cycles + 20)  # still cycling
    assert loop.status().faults == ("driver cycle raised an exception (see log)",)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="rate_hz"):
        LoopConfig(rate_hz=20.0)
    with pytest.raises(ValueError, match="bus_watchdog_ms"):
        LoopConfig(bus_watchdog_ms=30)
    with pytest.raises(ValueError, match="would trip between cycles"):
        LoopConfig(rate_hz=50.0, bus_watchdog_ms=40)


def test_hold_after_estop_keeps_the_arm_still(make_loop, arm, servo_config):
    loop, _ = make_loop()
    _enable(loop)
    _command(loop, servo_config, waist=1.2)  # a long move at the profile's top speed (2.4 rad/s)
    time.sleep(0.35)
    assert loop.request("estop")[0]
    at_stop = arm.positions()
    trace = []
    for _ in range(40):
        time.sleep(0.02)
        trace.append(arm.positions()[0])
    braking = 2.4**2 / (2 * 11.2)  # v^2 / 2a of the profile
    assert 0.05 < at_stop[0] < 0.9
    assert max(trace) - at_stop[0] < braking + 0.05  # one deceleration ...
    assert max(trace) - trace[-1] < 1e-3  # ... and no way back: it rests where it stopped
    assert np.abs(arm.positions()[1:] - at_stop[1:]).max() < 1e-6
    assert loop.supervisor.mode == Mode.ESTOP


def test_a_power_cycled_servo_is_set_up_again_without_a_jump(make_loop, arm, servo_config):
    loop, _ = make_loop()
    _enable(loop)
    _wait(lambda: abs(arm.positions()[2] - 0.3) < 2e-3, every=lambda: _command(loop, servo_config, elbow=0.3))
    arm.bus.power_cycle(3)
    _wait(lambda: loop.status().mode == "fault")
    assert any("servo 3 (elbow: torque went off" in f for f in loop.status().faults)
    ok, message = loop.request("enable")
    assert ok and message == "motion enabled (set up servo(s) [3] again)"
    elbow = servo_config.by_joint("elbow")
    assert arm.bus.torque_enabled(3)
    assert elbow.to_joint(arm.bus.goal_position_ticks(3)) == pytest.approx(0.3, abs=0.01)  # no jump to -pi


def test_a_vanished_port_stops_motion_and_the_loop_goes_on(make_loop, arm):
    loop, _ = make_loop()
    _enable(loop)
    arm.bus.stop()  # the adapter is unplugged: the pty's other end is gone
    _wait(lambda: loop.status().mode == "fault")
    # The fault may come from the goal write before any read fails (seen in CI): the reads of
    # the cycles after it fail on the same vanished port.
    _wait(lambda: "port error" in loop.status().last_read_failure)
    cycles = loop.status().cycles
    _wait(lambda: loop.status().cycles > cycles + 10)
