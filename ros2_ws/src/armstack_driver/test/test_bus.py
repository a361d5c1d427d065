"""DynamixelBus with the real dynamixel_sdk against the emulated bus on a pseudo-terminal."""

import dataclasses
import os
import time

import numpy as np
import pytest

from armstack_common.servo_config import SERVO_MODELS, OperatingMode
from armstack_driver.bus import (
    STATE_SOURCES,
    BusError,
    BusOptions,
    DynamixelBus,
    NotConnectedError,
    ServoSetupError,
    latency_timer_warning,
    usb_latency_timer,
)
from armstack_sim.dynamixel_bus import DynamixelBusEmulator


@pytest.fixture
def emulator(servo_config):
    with DynamixelBusEmulator(servo_config) as emu:
        emu.set_present_array([j.offset_ticks for j in servo_config.joints], 0, 0)
        yield emu


# The emulator answers from this process, which a loaded machine may stall for longer than the
# SDK's 34 ms ping timeout: setup exchanges get more tries than on a real bus.
PATIENT = BusOptions(io_attempts=10)


@pytest.fixture
def bus(servo_config, emulator):
    driver_bus = DynamixelBus(servo_config, emulator.port_path, PATIENT)
    driver_bus.connect()
    driver_bus.configure()
    yield driver_bus
    driver_bus.disconnect()


def test_io_before_connect_raises(servo_config, emulator):
    bus = DynamixelBus(servo_config, emulator.port_path)
    with pytest.raises(NotConnectedError):
        bus.read_state()
    with pytest.raises(NotConnectedError):
        bus.send(np.zeros(len(servo_config.joints)))


def test_missing_port_is_named(servo_config):
    with pytest.raises(BusError, match="/dev/ttyNOPE0 does not exist"):
        DynamixelBus(servo_config, "/dev/ttyNOPE0").connect()


def test_missing_servo_at_connect_names_its_id(servo_config, emulator):
    emulator.set_connected(4, False)
    bus = DynamixelBus(servo_config, emulator.port_path, PATIENT)
    with pytest.raises(ServoSetupError) as info:
        bus.connect()
    assert list(info.value.problems) == [4]
    assert "servo 4 (forearm_roll) does not answer ping" in str(info.value)
    assert not bus.is_connected


def test_wrong_model_is_refused(servo_config, emulator):
    joints = list(servo_config.joints)
    joints[0] = dataclasses.replace(joints[0], model=SERVO_MODELS["XL430-W250"])
    wrong = dataclasses.replace(servo_config, joints=tuple(joints))
    with pytest.raises(ServoSetupError, match=r"servo 1 \(waist\) is model number 1020, configured XL430"):
        DynamixelBus(wrong, emulator.port_path, PATIENT).connect()


def test_no_servo_at_all_points_at_power_and_baud(servo_config, emulator):
    for servo_id in servo_config.ids:
        emulator.set_connected(servo_id, False)
    with pytest.raises(ServoSetupError, match=r"no servo answers .* at 4000000 baud"):
        DynamixelBus(servo_config, emulator.port_path).connect()


def test_configure_writes_the_driver_settings(bus, emulator, servo_config):
    for joint in servo_config.joints:
        sid = joint.servo_id
        assert emulator.register(sid, "return_delay_time") == 0
        assert emulator.operating_mode(sid) == int(joint.operating_mode)
        assert emulator.profile_velocity(sid) == joint.profile_velocity
        assert emulator.profile_acceleration(sid) == joint.profile_acceleration
        mapped = [emulator.register(sid, f"indirect_address_{k + 1}") for k in range(len(STATE_SOURCES))]
        assert mapped == list(STATE_SOURCES)
        assert not emulator.torque_enabled(sid)
    gripper = servo_config.by_joint("left_finger")
    assert gripper.operating_mode == OperatingMode.CURRENT_BASED_POSITION
    assert emulator.register(gripper.servo_id, "goal_current") == gripper.goal_current_units


def test_configure_releases_torque_only_when_eeprom_must_change(servo_config, emulator, bus):
    bus.enable_torque(bus.read_state())
    assert bus.configure() == []  # nothing to change: the holding arm is left alone
    assert emulator.torque_enabled(2)
    bus.write_register(2, 64, 1, 0)
    bus.write_register(2, 11, 1, int(OperatingMode.POSITION))
    bus.write_register(2, 64, 1, 1)
    notes = bus.configure()
    assert notes == ["servo 2 (shoulder): torque turned off to change Operating Mode"]
    assert emulator.operating_mode(2) == int(OperatingMode.EXTENDED_POSITION)


def test_read_state_decodes_every_field(bus, emulator, servo_config):
    n = len(servo_config.joints)
    ticks = np.arange(n) * 100 + 1000
    velocity = -np.arange(n) - 5
    current = np.arange(n) * 3 - 4
    emulator.set_present_array(ticks, velocity, current)
    emulator.inject_hardware_error(5, 0x20)
    reading = bus.read_state()
    assert reading.ok
    np.testing.assert_array_equal(reading.ticks, ticks)
    np.testing.assert_array_equal(reading.velocity_units, velocity)
    np.testing.assert_array_equal(reading.effort_units, current)
    assert reading.hardware_error.tolist() == [0, 0, 0, 0, 0x20, 0, 0]
    assert not reading.torque_enabled.any() and not reading.bus_watchdog.any()
    assert abs(reading.completed_at - time.time()) < 0.5


def test_failures_are_per_servo_and_the_next_read_is_clean(bus, emulator):
    emulator.set_connected(3, False)
    reading = bus.read_state()
    assert list(reading.failures) == [3] and "timeout" in reading.failures[3]
    # One reply margin (20 ms), not the SDK's 34 ms for every servo after the silent one.
    assert reading.duration_s < 0.15
    emulator.set_connected(3, True)
    emulator.corrupt_replies(1, servo_id=6)
    reading = bus.read_state()
    assert list(reading.failures) == [6] and "Incorrect status packet" in reading.failures[6]
    assert bus.read_state().ok  # the late replies of the failed read were drained


def test_send_clips_and_returns_what_was_sent(bus, emulator, servo_config):
    bus.enable_torque(bus.read_state())
    request = np.array([0.5, -0.4, 2.5, 0.2, -0.1, 0.3, 0.05])  # elbow and finger beyond limits
    sent = bus.send(request)
    elbow, finger = servo_config.by_joint("elbow"), servo_config.by_joint("left_finger")
    assert sent.clipped.tolist() == [False, False, True, False, False, False, True]
    assert sent.positions[2] == pytest.approx(elbow.max_position, abs=1e-3)
    assert sent.positions[6] == pytest.approx(finger.max_position, abs=1e-4)
    np.testing.assert_allclose(sent.positions[[0, 1, 3, 4, 5]], request[[0, 1, 3, 4, 5]], atol=1e-3)
    assert bus.ping(1)[0] is not None  # a reply after the broadcast: the servos have the goals
    goals = [emulator.goal_position_ticks(sid) for sid in servo_config.ids]
    np.testing.assert_array_equal(goals, sent.ticks)
    with pytest.raises(ValueError, match="finite"):
        bus.send(np.full(7, np.nan))


def test_enable_torque_holds_present_position(bus, emulator, servo_config):
    emulator.set_present_array(np.array([j.offset_ticks for j in servo_config.joints]) + 300, 0, 0)
    bus.enable_torque(bus.read_state())
    for joint in servo_config.joints:
        assert emulator.torque_enabled(joint.servo_id)
        assert emulator.goal_position_ticks(joint.servo_id) == joint.offset_ticks + 300


def test_reboot_clears_the_error_and_rewrites_the_indirect_block(bus, emulator, servo_config):
    ticks = np.array([j.offset_ticks for j in servo_config.joints]) + 77
    emulator.set_present_array(ticks, 0, 0)
    emulator.inject_hardware_error(2, 0x20)
    bus.reboot([2])
    reading = bus.read_state()
    assert reading.ok and reading.hardware_error[1] == 0
    np.testing.assert_array_equal(reading.ticks, ticks)  # block mapped again, not zeros
    assert emulator.register(2, "indirect_address_1") == STATE_SOURCES[0]


def test_bus_watchdog_is_armed_and_a_tripped_one_cleared(bus, emulator):
    bus.enable_torque(bus.read_state())
    bus.set_bus_watchdog(40)
    assert emulator.register(1, "bus_watchdog") == 2
    deadline = time.monotonic() + 5.0
    while any(emulator.register(i, "bus_watchdog") != -1 for i in range(1, 8)):  # silence: they trip
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert bus.read_state().bus_watchdog.tolist() == [-1] * 7
    bus.set_bus_watchdog(0)
    assert bus.read_state().bus_watchdog.tolist() == [0] * 7
    with pytest.raises(ValueError, match="multiple of 20"):
        bus.set_bus_watchdog(30)


@pytest.mark.parametrize(("value", "warns"), [(16, True), (1, False)])
def test_latency_timer_check(tmp_path, value, warns):
    sysfs = tmp_path / "usb-serial"
    (sysfs / "ttyUSB0").mkdir(parents=True)
    (sysfs / "ttyUSB0" / "latency_timer").write_text(f"{value}\n")
    device = tmp_path / "ttyUSB0"
    device.touch()
    link = tmp_path / "by-id-FTDI"
    os.symlink(device, link)
    assert usb_latency_timer(str(link), sysfs) == (sysfs / "ttyUSB0" / "latency_timer", value)
    warning = latency_timer_warning(str(link), sysfs)
    if warns:
        assert f"is {value} ms" in warning
        assert f"echo 1 | sudo tee {sysfs / 'ttyUSB0' / 'latency_timer'}" in warning
        assert 'ATTR{latency_timer}="1"' in warning
    else:
        assert warning is None


def test_latency_timer_check_ignores_non_usb_ports(emulator):
    assert latency_timer_warning(emulator.port_path) is None


def test_a_late_reply_is_not_taken_for_the_next_reads(bus, emulator):
    """A starved bus: a reply comes after its request timed out, while the next request waits.
    It is a reply of another length: the read drops it and asks again, rather than returning
    the wrong bytes (which, in driver/enable, once raised IndexError and ended the loop)."""
    from armstack_driver.bus import ADDR_HOMING_OFFSET, ADDR_INDIRECT_ADDRESS_1, STATE_LENGTH

    emulator.set_reply_latency(0.06, servo_id=1)  # past the SDK's 34 ms read timeout
    port = bus._port
    _, result, _ = bus._ph.readTxRx(port, 1, ADDR_HOMING_OFFSET, 4)
    assert result != 0  # timed out; its 4-byte reply is still on its way
    emulator.set_reply_latency(0.0, servo_id=1)
    block = bus.read_block(1, ADDR_INDIRECT_ADDRESS_1, 2 * STATE_LENGTH)
    assert [block[2 * k] | block[2 * k + 1] << 8 for k in range(STATE_LENGTH)] == list(STATE_SOURCES)


def test_a_late_reply_of_the_same_length_is_not_taken_for_the_next_read(bus, emulator):
    """As above, but the late reply has the length the next read expects, so only its timing
    tells it apart: after a failed exchange the bus drops what arrives until the line is quiet,
    and the next read returns its own register rather than the late one's."""
    from armstack_driver.bus import ADDR_HOMING_OFFSET, ADDR_PROFILE_ACCELERATION, BusError

    bus.options = dataclasses.replace(bus.options, io_attempts=1)  # no retry to absorb it
    bus.write_register(1, ADDR_PROFILE_ACCELERATION, 4, 77)
    assert bus.read_register(1, ADDR_HOMING_OFFSET, 4) != 77
    emulator.set_reply_latency(0.06, servo_id=1)  # past the SDK's 34 ms read timeout
    with pytest.raises(BusError, match="servo 1"):
        bus.read_register(1, ADDR_HOMING_OFFSET, 4)
    emulator.set_reply_latency(0.0, servo_id=1)
    assert bus.read_register(1, ADDR_PROFILE_ACCELERATION, 4) == 77
