"""Servo and chain semantics, driven packet by packet with explicit time (no pty, no sleeping)."""

import pytest

from armstack_common.servo_config import OperatingMode
from armstack_sim.dynamixel_chain import ServoChain
from armstack_sim.dynamixel_protocol import (
    ALERT_BIT,
    BROADCAST_ID,
    Instruction,
    StatusError,
    decode,
    encode_instruction,
)
from armstack_sim.dynamixel_servo import EmulatedServo
from armstack_sim.dynamixel_table import BAUD_INDEX, CONTROL_TABLES

XM430, XL430 = 1020, 1060


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=value < 0)


def _addr(address: int) -> bytes:
    return address.to_bytes(2, "little")


class Bus:
    """Three servos (two XM430, one XL430) and helpers that speak packets to them."""

    def __init__(self) -> None:
        self.servos = [
            EmulatedServo(CONTROL_TABLES[XM430], 1, BAUD_INDEX[4_000_000], 2048),
            EmulatedServo(CONTROL_TABLES[XM430], 2, BAUD_INDEX[4_000_000], 1000),
            EmulatedServo(CONTROL_TABLES[XL430], 3, BAUD_INDEX[4_000_000], 3000),
        ]
        for servo, ticks in zip(self.servos, (2048, 1000, 3000), strict=True):
            servo.set_present(ticks, 0, 0)  # the simulator places the motors: power-on state
        self.chain = ServoChain(self.servos, reboot_duration_s=0.05)
        self.now = 100.0

    def send(self, servo_id, instruction, params=b"", raw=None, baud=4_000_000):
        packet = decode(raw if raw is not None else encode_instruction(servo_id, instruction, params))
        return [decode(reply.data) for reply in self.chain.handle(packet, self.now, baud)]

    def write(self, servo_id, address, data):
        return self.send(servo_id, Instruction.WRITE, _addr(address) + data)

    def read(self, servo_id, address, length):
        return self.send(servo_id, Instruction.READ, _addr(address) + length.to_bytes(2, "little"))

    def error(self, replies):
        assert len(replies) == 1
        return replies[0].error


@pytest.fixture
def bus():
    return Bus()


def test_ping_returns_model_and_firmware_and_broadcast_ping_answers_in_id_order(bus):
    (status,) = bus.send(3, Instruction.PING)
    assert (status.servo_id, status.params[1:]) == (3, bytes((0x24, 0x04, 46)))  # 1060
    assert [s.servo_id for s in bus.send(BROADCAST_ID, Instruction.PING)] == [1, 2, 3]
    assert bus.send(9, Instruction.PING) == []


def test_read_returns_present_position_and_gaps_read_zero(bus):
    (status,) = bus.read(2, 132, 4)
    assert status.error == 0 and int.from_bytes(status.params[1:], "little") == 1000
    (status,) = bus.read(1, 64, 8)  # 66, 67 are undefined; 68 is Status Return Level 2
    assert status.params[1:] == bytes((0, 0, 0, 0, 2, 0, 0, 0))
    assert bus.error(bus.read(1, 660, 4)) == StatusError.ACCESS  # past the table


def test_present_values_are_seen_however_the_table_is_looked_at(bus):
    """set_present only stores the motor's values; every way into the table encodes them."""
    servo = bus.servos[1]
    servo.set_present(1200, -10, 5)
    (status,) = bus.read(2, 126, 10)  # Present Current, Velocity, Position in one read
    assert (int.from_bytes(status.params[1:3], "little", signed=True),
            int.from_bytes(status.params[3:7], "little", signed=True),
            int.from_bytes(status.params[7:11], "little", signed=True)) == (5, -10, 1200)
    servo.set_present(1300, 0, 0)
    assert servo.get("present_position") == 1300
    servo.set_present(1400, 0, 0)
    bus.write(2, 64, b"\x01")  # torque on latches Goal Position to the latest present
    assert servo.get("goal_position") == 1400
    servo.set_present(1450, 0, 0)
    (status,) = bus.send(BROADCAST_ID, Instruction.SYNC_READ, _addr(132) + _addr(4) + bytes((2,)))
    assert int.from_bytes(status.params[1:], "little") == 1450


def test_write_errors_follow_the_manual(bus):
    assert bus.error(bus.write(1, 132, _u32(5))) == StatusError.ACCESS  # read-only
    assert bus.error(bus.write(1, 66, b"\x01")) == StatusError.ACCESS  # undefined
    assert bus.error(bus.write(1, 116, b"\x01\x02")) == StatusError.DATA_LENGTH  # half an item
    assert bus.error(bus.write(1, 64, b"\x02")) == StatusError.DATA_RANGE
    assert bus.error(bus.write(1, 11, b"\x02")) == StatusError.DATA_RANGE  # no mode 2
    assert bus.error(bus.write(3, 11, b"\x05")) == StatusError.DATA_RANGE  # XL430: no current modes
    assert bus.error(bus.write(3, 102, b"\x10\x00")) == StatusError.ACCESS  # XL430: no Goal Current
    assert bus.error(bus.write(1, 104, _u32(201))) == StatusError.DATA_LIMIT  # > Velocity Limit 200
    assert bus.error(bus.write(1, 104, _u32(-200))) == StatusError.NONE
    assert bus.error(bus.write(1, 102, (-1194).to_bytes(2, "little", signed=True))) == StatusError.DATA_LIMIT


def test_eeprom_is_locked_while_torque_is_on(bus):
    assert bus.error(bus.write(1, 11, b"\x04")) == StatusError.NONE
    assert bus.error(bus.write(1, 64, b"\x01")) == StatusError.NONE
    assert bus.error(bus.write(1, 11, b"\x03")) == StatusError.ACCESS
    assert bus.error(bus.write(1, 9, b"\x00")) == StatusError.ACCESS
    assert bus.servos[0].operating_mode == OperatingMode.EXTENDED_POSITION
    bus.write(1, 64, b"\x00")
    assert bus.error(bus.write(1, 9, b"\x00")) == StatusError.NONE


def test_failed_write_changes_nothing(bus):
    # LED ok, but 66/67 undefined: the whole write is refused.
    assert bus.error(bus.write(1, 65, b"\x01\x00\x00\x02")) == StatusError.ACCESS
    assert bus.servos[0].get("led") == 0 and bus.servos[0].get("status_return_level") == 2


def test_goal_position_limits_depend_on_operating_mode(bus):
    bus.write(1, 48, _u32(3000))  # Max Position Limit
    bus.write(1, 64, b"\x01")
    assert bus.error(bus.write(1, 116, _u32(3001))) == StatusError.DATA_LIMIT  # position mode
    assert bus.error(bus.write(1, 116, _u32(2999))) == StatusError.NONE
    bus.write(1, 64, b"\x00")
    bus.write(1, 11, b"\x04")
    bus.write(1, 64, b"\x01")
    assert bus.error(bus.write(1, 116, _u32(-50_000))) == StatusError.NONE  # extended: limits unused
    assert bus.error(bus.write(1, 116, _u32(1_048_576))) == StatusError.DATA_RANGE


def test_torque_on_latches_goal_to_present_and_profile_moves_to_goal(bus):
    servo = bus.servos[1]
    bus.write(2, 116, _u32(3000))  # written with torque off ...
    bus.write(2, 64, b"\x01")
    assert servo.command().goal_position_ticks == 1000  # ... and replaced on torque on
    bus.write(2, 112, _u32(100))  # 100 x 0.229 rev/min = 1563 ticks/s
    bus.write(2, 116, _u32(1500))
    for _ in range(10):
        servo.step(0.01)
    assert servo.command().position_ticks == pytest.approx(1000 + 0.1 * 1563.1, rel=1e-3)
    for _ in range(40):
        servo.step(0.01)
    assert servo.command().position_ticks == 1500
    assert int.from_bytes(bus.read(2, 140, 4)[0].params[1:], "little") == 1500


def test_trapezoid_respects_acceleration(bus):
    servo = bus.servos[0]
    bus.write(1, 11, b"\x04")
    bus.write(1, 64, b"\x01")
    bus.write(1, 108, _u32(10))  # 10 x 214.577 rev/min^2 = 2441 ticks/s^2
    bus.write(1, 112, _u32(200))
    bus.write(1, 116, _u32(20_000))
    positions = []
    for _ in range(300):
        servo.step(0.01)
        positions.append(servo.command().position_ticks)
    velocities = [(b - a) / 0.01 for a, b in zip(positions, positions[1:], strict=False)]
    accelerations = [(b - a) / 0.01 for a, b in zip(velocities, velocities[1:], strict=False)]
    assert max(abs(a) for a in accelerations) <= 2441.4 * 1.001
    assert max(velocities) == pytest.approx(200 * 0.229 / 60 * 4096, rel=1e-3)


def test_time_based_profile_reaches_goal_in_profile_velocity_ms(bus):
    servo = bus.servos[0]
    bus.write(1, 10, b"\x04")  # Drive Mode bit 2: time-based profile
    bus.write(1, 64, b"\x01")
    bus.write(1, 108, _u32(100))  # accelerate for 100 ms
    bus.write(1, 112, _u32(500))  # arrive after 500 ms
    bus.write(1, 116, _u32(3048))
    for _ in range(45):
        servo.step(0.01)
    assert 2900 < servo.command().position_ticks < 3048
    for _ in range(8):
        servo.step(0.01)
    assert servo.command().position_ticks == 3048


def test_indirect_addressing_reads_and_writes_through(bus):
    # Indirect Data 1.. = Hardware Error Status(70), Present Position(132..135)
    for k, target in enumerate((70, 132, 133, 134, 135)):
        assert bus.error(bus.write(2, 168 + 2 * k, _addr(target))) == StatusError.NONE
    (status,) = bus.read(2, 224, 5)
    assert status.params[1:] == bytes((0,)) + _u32(1000)
    # Indirect Data 29.. (second bank) = Goal Position; a partial write is a length error.
    for k in range(4):
        bus.write(2, 578 + 2 * k, _addr(116 + k))
    bus.write(2, 64, b"\x01")
    assert bus.error(bus.write(2, 634, b"\x10\x00")) == StatusError.DATA_LENGTH
    assert bus.error(bus.write(2, 634, _u32(1234))) == StatusError.NONE
    assert bus.servos[1].get("goal_position") == 1234
    assert bus.error(bus.write(2, 168, _addr(20))) == StatusError.DATA_RANGE  # EEPROM not allowed


def test_hardware_error_sets_alert_bit_and_shutdown_needs_reboot(bus):
    bus.write(1, 64, b"\x01")
    bus.servos[0].inject_hardware_error(0x20)  # overload, in the default Shutdown mask
    (status,) = bus.send(1, Instruction.PING)
    assert status.error == ALERT_BIT
    assert bus.read(1, 70, 1)[0].params == bytes((ALERT_BIT, 0x20))
    assert not bus.servos[0].torque_enabled
    bus.write(1, 64, b"\x01")
    assert not bus.servos[0].torque_enabled  # refused until REBOOT
    assert bus.send(1, Instruction.REBOOT)[0].error == ALERT_BIT
    assert bus.send(1, Instruction.PING) == []  # rebooting
    bus.now += 0.06
    assert bus.send(1, Instruction.PING)[0].error == 0
    bus.write(1, 64, b"\x01")
    assert bus.servos[0].torque_enabled


def test_bus_watchdog_stops_servo_and_locks_goals_until_cleared(bus):
    servo = bus.servos[0]
    bus.write(1, 64, b"\x01")
    bus.write(1, 112, _u32(50))
    bus.write(1, 116, _u32(3000))
    bus.write(1, 98, b"\x05")  # 100 ms
    for _ in range(5):
        servo.step(0.01)
    moving_to = servo.command().position_ticks
    bus.now += 0.09
    bus.chain.check_watchdogs(bus.now)
    assert servo.get("bus_watchdog") == 5  # not yet
    bus.now += 0.02
    bus.chain.check_watchdogs(bus.now)
    assert servo.get("bus_watchdog") == -1
    assert servo.command().goal_position_ticks == round(moving_to)
    servo.step(0.01)
    assert servo.command().position_ticks == round(moving_to)  # stopped, not still moving
    assert bus.error(bus.write(1, 116, _u32(2500))) == StatusError.DATA_RANGE
    assert bus.error(bus.write(1, 98, b"\x00")) == StatusError.NONE
    assert bus.error(bus.write(1, 116, _u32(2500))) == StatusError.NONE


def test_any_instruction_feeds_the_watchdog_but_not_when_torque_is_off(bus):
    bus.write(1, 98, b"\x01")  # 20 ms, torque off: not monitored
    bus.now += 1.0
    bus.chain.check_watchdogs(bus.now)
    assert bus.servos[0].get("bus_watchdog") == 1
    bus.write(1, 64, b"\x01")
    for _ in range(10):
        bus.now += 0.015
        bus.send(BROADCAST_ID, Instruction.SYNC_READ, _addr(132) + b"\x04\x00\x02")  # lists only id 2
        bus.chain.check_watchdogs(bus.now)
    assert bus.servos[0].get("bus_watchdog") == 1


def test_crc_error_and_unknown_instruction_answers(bus):
    raw = bytearray(encode_instruction(1, Instruction.READ, _addr(132) + b"\x04\x00"))
    raw[-2] ^= 0x55
    assert bus.error(bus.send(0, 0, raw=bytes(raw))) == StatusError.CRC
    raw = bytearray(encode_instruction(BROADCAST_ID, Instruction.PING))
    raw[-2] ^= 0x55
    assert bus.send(0, 0, raw=bytes(raw)) == []  # broadcast: nobody answers
    assert bus.error(bus.send(1, 0x77)) == StatusError.INSTRUCTION
    assert bus.error(bus.send(1, Instruction.ACTION)) == StatusError.INSTRUCTION  # nothing registered
    assert bus.error(bus.send(1, Instruction.READ, b"\x84\x00")) == StatusError.DATA_LENGTH


def test_broadcast_and_status_return_level(bus):
    assert bus.send(BROADCAST_ID, Instruction.WRITE, _addr(65) + b"\x01") == []
    assert all(servo.get("led") == 1 for servo in bus.servos)
    assert bus.send(BROADCAST_ID, Instruction.READ, _addr(65) + b"\x01\x00") == []
    bus.write(2, 68, b"\x01")
    assert bus.write(2, 65, b"\x00") == []  # level 1: reads only
    assert len(bus.read(2, 65, 1)) == 1
    bus.write(2, 68, b"\x00")
    assert bus.read(2, 65, 1) == [] and len(bus.send(2, Instruction.PING)) == 1


def test_reg_write_applies_on_action(bus):
    assert bus.error(bus.send(2, Instruction.REG_WRITE, _addr(65) + b"\x01")) == 0
    assert bus.servos[1].get("led") == 0 and bus.servos[1].get("registered_instruction") == 1
    assert bus.send(BROADCAST_ID, Instruction.ACTION) == []
    assert bus.servos[1].get("led") == 1 and bus.servos[1].get("registered_instruction") == 0


def test_sync_and_bulk_transfers(bus):
    replies = bus.send(BROADCAST_ID, Instruction.SYNC_READ, _addr(132) + b"\x04\x00" + bytes((3, 9, 1)))
    assert [(r.servo_id, int.from_bytes(r.params[1:], "little")) for r in replies] == [(3, 3000), (1, 2048)]
    bus.send(BROADCAST_ID, Instruction.SYNC_WRITE, _addr(65) + b"\x01\x00" + bytes((1, 1, 3, 1)))
    assert [servo.get("led") for servo in bus.servos] == [1, 0, 1]
    params = bytes((2,)) + _addr(7) + b"\x01\x00" + bytes((1,)) + _addr(0) + b"\x02\x00"
    replies = bus.send(BROADCAST_ID, Instruction.BULK_READ, params)
    assert [(r.servo_id, r.params[1:]) for r in replies] == [(2, b"\x02"), (1, _addr(1020))]
    params = bytes((3,)) + _addr(65) + b"\x01\x00\x00" + bytes((2,)) + _addr(9) + b"\x01\x00\x00"
    bus.send(BROADCAST_ID, Instruction.BULK_WRITE, params)
    assert bus.servos[2].get("led") == 0 and bus.servos[1].get("return_delay_time") == 0


def test_fast_sync_read_builds_one_packet_and_truncates_on_a_silent_servo(bus):
    (reply,) = bus.send(BROADCAST_ID, Instruction.FAST_SYNC_READ, _addr(132) + b"\x04\x00" + bytes((1, 2)))
    assert reply.crc_ok and reply.servo_id == BROADCAST_ID
    assert reply.params == b"\x00\x01" + _u32(2048) + reply.raw[14:16] + b"\x00\x02" + _u32(1000)
    bus.chain.slot_of(bus.servos[0]).connected = False
    request = encode_instruction(BROADCAST_ID, Instruction.FAST_SYNC_READ, _addr(132) + b"\x04\x00\x01\x02")
    (reply,) = bus.chain.handle(decode(request), bus.now)
    claimed = reply.data[5] | (reply.data[6] << 8)
    assert claimed + 7 > len(reply.data)  # the host keeps waiting: a corrupt/timeout, as on hardware


def test_id_and_baud_changes_apply_after_the_reply(bus):
    (status,) = bus.write(2, 7, b"\x09")
    assert status.servo_id == 2
    assert bus.send(2, Instruction.PING) == [] and len(bus.send(9, Instruction.PING)) == 1
    (status,) = bus.write(9, 8, b"\x03")  # 1 Mbit/s
    assert status.error == 0
    assert bus.send(9, Instruction.PING) == []  # host still at 4 Mbit/s
    assert len(bus.send(9, Instruction.PING, baud=1_000_000)) == 1


def test_multi_turn_is_forgotten_on_power_on_reboot_and_clear(bus):
    fresh = EmulatedServo(CONTROL_TABLES[XM430], 4, BAUD_INDEX[4_000_000], 2048)
    fresh.set_present(4096 + 100, 0, 0)  # powered on one turn further than configured
    assert fresh.get("present_position") == 100 and fresh.command().goal_position_ticks == 4196
    servo = bus.servos[0]
    bus.write(1, 11, b"\x04")
    servo.set_present(4096 * 2 + 100, 0, 0)
    assert servo.get("present_position") == 4096 * 2 + 100
    assert bus.error(bus.send(1, Instruction.CLEAR, bytes((0x01, 0x44, 0x58, 0x4C, 0x22)))) == 0
    assert servo.get("present_position") == 100
    servo.set_present(-50, 0, 0)  # motor turned back past its zero
    assert servo.get("present_position") == -50 - 2 * 4096
    bus.send(1, Instruction.REBOOT)
    assert servo.get("present_position") == 4096 - 50
    assert servo.command().position_ticks == pytest.approx(-50)  # motor frame unchanged


def test_homing_offset_and_reverse_drive_mode_map_register_and_motor_frames(bus):
    servo = bus.servos[0]
    bus.write(1, 20, _u32(100))
    bus.write(1, 10, b"\x01")
    servo.set_present(2048, 10, 5)
    assert servo.get("present_position") == -2048 + 100
    assert servo.get("present_velocity") == -10 and servo.get("present_current") == -5
    bus.write(1, 11, b"\x04")
    bus.write(1, 64, b"\x01")
    bus.write(1, 116, _u32(-1000))
    assert servo.command().goal_position_ticks == 1100
