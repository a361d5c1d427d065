"""The emulated bus as the driver sees it: the real dynamixel_sdk over the pseudo-terminal."""

import os
import time

import numpy as np
import pytest
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from armstack_common.servo_config import load_default_servo_config
from armstack_sim.dynamixel_bus import DynamixelBusEmulator, EmulatorOptions
from armstack_sim.dynamixel_protocol import Instruction, encode_instruction

ERR_CRC, ERR_DATA_RANGE, ERR_ACCESS, ERR_ALERT = 3, 4, 7, 0x80
# Indirect Data 1..11 of every servo: Hardware Error Status(70), then Present Current(126),
# Present Velocity(128) and Present Position(132) - one contiguous block for one sync read.
STATE_SOURCES = (70, *range(126, 136))
STATE_ADDRESS, STATE_LENGTH = 224, len(STATE_SOURCES)


@pytest.fixture(scope="module")
def config():
    return load_default_servo_config()


def _open(emulator, baud=4_000_000):
    port = PortHandler(emulator.port_path)
    assert port.openPort() and port.setBaudRate(baud)
    return port


@pytest.fixture
def bus(config):
    with DynamixelBusEmulator(config) as emulator:
        port = _open(emulator)
        yield emulator, port, PacketHandler(2.0)
        port.closePort()


def _signed(value: int, size: int) -> int:
    return value - (1 << (8 * size)) if value >= 1 << (8 * size - 1) else value


def _ok(result) -> None:
    comm, error = result
    assert (comm, error) == (COMM_SUCCESS, 0)


def _sync_point(ph, port) -> None:
    # Broadcast writes get no reply; a ping after one proves the servos have processed it.
    assert ph.ping(port, 1)[1] == COMM_SUCCESS


def _enable_extended_position(ph, port, ids):
    for servo_id in ids:
        _ok(ph.write1ByteTxRx(port, servo_id, 9, 0))  # Return Delay Time 0
        _ok(ph.write1ByteTxRx(port, servo_id, 11, 4))
        _ok(ph.write1ByteTxRx(port, servo_id, 64, 1))


def test_ping_reports_each_configured_model(bus, config):
    emulator, port, ph = bus
    for joint in config.joints:
        model, comm, error = ph.ping(port, joint.servo_id)
        assert (model, comm, error) == (joint.model.model_number, COMM_SUCCESS, 0)
    found, comm = ph.broadcastPing(port)
    assert comm == COMM_SUCCESS
    assert {servo_id: entry[0] for servo_id, entry in found.items()} == {
        j.servo_id: j.model.model_number for j in config.joints}
    assert ph.ping(port, 42)[1] == COMM_RX_TIMEOUT


def test_read_write_and_eeprom_lock(bus):
    emulator, port, ph = bus
    _ok(ph.write4ByteTxRx(port, 3, 112, 77))
    assert ph.read4ByteTxRx(port, 3, 112) == (77, COMM_SUCCESS, 0)
    assert emulator.profile_velocity(3) == 77
    _ok(ph.write1ByteTxRx(port, 3, 64, 1))
    assert ph.write1ByteTxRx(port, 3, 11, 4) == (COMM_SUCCESS, ERR_ACCESS)  # EEPROM, torque on
    assert ph.write4ByteTxRx(port, 3, 132, 5) == (COMM_SUCCESS, ERR_ACCESS)  # read-only
    assert emulator.torque_enabled(3) and emulator.operating_mode(3) == 3


def test_indirect_state_block_sync_read_and_goal_sync_write(bus, config):
    emulator, port, ph = bus
    for servo_id in config.ids:
        for k, source in enumerate(STATE_SOURCES):
            _ok(ph.write2ByteTxRx(port, servo_id, 168 + 2 * k, source))
    for k, servo_id in enumerate(config.ids):
        emulator.set_present(servo_id, 1000 + k, -30 - k, 12 - k)
    emulator.inject_hardware_error(3, 0x20)
    reader = GroupSyncRead(port, ph, STATE_ADDRESS, STATE_LENGTH)
    for servo_id in config.ids:
        assert reader.addParam(servo_id)
    assert reader.txRxPacket() == COMM_SUCCESS
    for k, servo_id in enumerate(config.ids):
        assert reader.getData(servo_id, 224, 1) == (0x20 if servo_id == 3 else 0)
        assert _signed(reader.getData(servo_id, 225, 2), 2) == 12 - k
        assert _signed(reader.getData(servo_id, 227, 4), 4) == -30 - k
        assert _signed(reader.getData(servo_id, 231, 4), 4) == 1000 + k

    emulator.clear_hardware_error(3)
    _enable_extended_position(ph, port, config.ids)
    targets = np.array([0.5, -0.4, 0.3, -2.0, 1.0, 3.0, 0.02])  # rad ..., m for the finger
    writer = GroupSyncWrite(port, ph, 116, 4)
    for servo_id, ticks in zip(config.ids, config.joint_to_ticks(targets), strict=True):
        assert writer.addParam(servo_id, int(ticks).to_bytes(4, "little", signed=True))
    assert writer.txPacket() == COMM_SUCCESS
    _sync_point(ph, port)
    goals = [emulator.goal_position_ticks(servo_id) for servo_id in config.ids]
    np.testing.assert_allclose(config.ticks_to_joint(goals), targets, atol=1e-3)


def test_profiled_motion_round_trips_through_the_joint_map(bus, config):
    emulator, port, ph = bus
    _enable_extended_position(ph, port, config.ids)
    target = np.array([0.3, 0.2, -0.1, 0.5, -0.2, 1.0, 0.03])
    writer = GroupSyncWrite(port, ph, 116, 4)
    for servo_id, ticks in zip(config.ids, config.joint_to_ticks(target), strict=True):
        writer.addParam(servo_id, int(ticks).to_bytes(4, "little", signed=True))
    assert writer.txPacket() == COMM_SUCCESS
    _sync_point(ph, port)
    # A stand-in for physics: the motor follows its profiled reference exactly.
    for _ in range(300):
        emulator.step(0.01)
        commands = emulator.commands()
        emulator.set_present_array([commands[i].position_ticks for i in config.ids],
                                   [commands[i].velocity_units for i in config.ids], 0.0)
    reader = GroupSyncRead(port, ph, 132, 4)
    for servo_id in config.ids:
        reader.addParam(servo_id)
    assert reader.txRxPacket() == COMM_SUCCESS
    ticks = [_signed(reader.getData(servo_id, 132, 4), 4) for servo_id in config.ids]
    np.testing.assert_allclose(config.ticks_to_joint(ticks), target, atol=2e-3)


def test_replies_needing_byte_stuffing_reach_the_sdk_intact(bus, config):
    emulator, port, ph = bus
    # Velocity -1 (FF FF FF FF) then position 0x...FD puts FF FF FD inside the reply.
    emulator.set_present(2, 0x07FD, -1, 0)
    reader = GroupSyncRead(port, ph, 128, 8)
    reader.addParam(2)
    assert reader.txRxPacket() == COMM_SUCCESS
    assert _signed(reader.getData(2, 128, 4), 4) == -1 and reader.getData(2, 132, 4) == 0x07FD


def test_bulk_read_and_fast_sync_read(bus, config):
    emulator, port, ph = bus
    bulk = GroupBulkRead(port, ph)
    assert bulk.addParam(1, 0, 2) and bulk.addParam(6, 132, 4) and bulk.addParam(7, 38, 2)
    assert bulk.txRxPacket() == COMM_SUCCESS
    assert bulk.getData(1, 0, 2) == 1020
    assert bulk.getData(6, 132, 4) == config.by_id(6).offset_ticks
    assert bulk.getData(7, 38, 2) == 1193  # XM430-W350 Current Limit default
    fast = GroupSyncRead(port, ph, 132, 4)
    for servo_id in config.ids:
        fast.addParam(servo_id)
    assert fast.fastSyncRead() == COMM_SUCCESS
    assert [fast.getData(i, 132, 4) for i in config.ids] == [j.offset_ticks for j in config.joints]


def test_bad_crc_is_answered_with_crc_error(bus):
    emulator, port, ph = bus
    packet = bytearray(encode_instruction(2, Instruction.READ, bytes((132, 0, 4, 0))))
    packet[-1] ^= 0x40
    port.clearPort()
    port.writePort(bytes(packet))
    port.setPacketTimeout(11)
    status, comm = ph.rxPacket(port, False)
    assert comm == COMM_SUCCESS and status[4] == 2 and status[8] == ERR_CRC
    assert emulator.stats.crc_errors == 1


def test_garbage_on_the_line_does_not_break_the_bus(bus):
    emulator, port, ph = bus
    rng = np.random.default_rng(5)
    noise = bytes(rng.integers(0, 256, 300, dtype=np.uint8))
    # A header claiming a 512-byte frame, then noise: the servos must not wait forever.
    port.writePort(b"\xff\xff\xfd\x00\x01\x00\x02" + noise + b"\xff\xff\xfd\xfd")
    time.sleep(0.02)
    assert ph.ping(port, 1)[1:] == (COMM_SUCCESS, 0)
    assert ph.read4ByteTxRx(port, 4, 0)[1] == COMM_SUCCESS
    assert emulator.stats.discarded_bytes > 0


def test_bus_watchdog_trips_in_real_time(bus):
    emulator, port, ph = bus
    _enable_extended_position(ph, port, [5])
    _ok(ph.write1ByteTxRx(port, 5, 98, 2))  # 40 ms
    time.sleep(0.1)
    assert ph.read1ByteTxRx(port, 5, 98) == (0xFF, COMM_SUCCESS, 0)  # -1: Bus Watchdog Error
    assert ph.write4ByteTxRx(port, 5, 116, 2100) == (COMM_SUCCESS, ERR_DATA_RANGE)
    _ok(ph.write1ByteTxRx(port, 5, 98, 0))
    _ok(ph.write4ByteTxRx(port, 5, 116, 2100))
    assert emulator.goal_position_ticks(5) == 2100


def test_fault_injection(bus):
    emulator, port, ph = bus
    emulator.set_connected(4, False)
    assert ph.ping(port, 4)[1] == COMM_RX_TIMEOUT
    emulator.set_connected(4, True)
    assert ph.ping(port, 4)[1] == COMM_SUCCESS

    emulator.inject_hardware_error(2, 0x20)
    model, comm, error = ph.ping(port, 2)
    assert comm == COMM_SUCCESS and error == ERR_ALERT
    assert ph.read1ByteTxRx(port, 2, 70) == (0x20, COMM_SUCCESS, ERR_ALERT)
    assert ph.reboot(port, 2) == (COMM_SUCCESS, ERR_ALERT)
    # Deaf for reboot_duration_s (50 ms); poll like a host waiting for the servo to boot, so
    # a loaded machine delaying the emulator thread does not fail the test.
    time.sleep(0.06)
    deadline = time.monotonic() + 1.0
    while (reply := ph.ping(port, 2))[1] != COMM_SUCCESS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reply[1:] == (COMM_SUCCESS, 0)

    emulator.corrupt_replies(2, servo_id=1)
    assert [ph.ping(port, 1)[1] for _ in range(3)] == [COMM_RX_CORRUPT, COMM_RX_CORRUPT, COMM_SUCCESS]

    emulator.set_reply_latency(0.015, servo_id=6)
    start = time.perf_counter()
    assert ph.ping(port, 6)[1] == COMM_SUCCESS
    assert time.perf_counter() - start >= 0.015


def test_wrong_baud_rate_gets_no_answer(config):
    with DynamixelBusEmulator(config) as emulator:
        port = _open(emulator, baud=1_000_000)
        ph = PacketHandler(2.0)
        assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
        port.setBaudRate(4_000_000)
        assert ph.ping(port, 1)[1] == COMM_SUCCESS
        port.closePort()


def test_wire_timing_holds_replies_for_the_physical_bus_time(config):
    # Factory Return Delay Time is 250 x 2 us: seven replies cannot arrive in under 3.5 ms.
    with DynamixelBusEmulator(config, EmulatorOptions(wire_timing=True)) as emulator:
        port = _open(emulator)
        reader = GroupSyncRead(port, PacketHandler(2.0), 132, 4)
        for servo_id in config.ids:
            reader.addParam(servo_id)
        wire_bytes = (14 + 7) + 7 * (11 + 4)
        floor = 7 * 500e-6 + wire_bytes * 10 / config.baudrate
        for _ in range(5):
            start = time.perf_counter()
            assert reader.txRxPacket() == COMM_SUCCESS
            assert time.perf_counter() - start >= floor
        port.closePort()


def test_symlink_and_stop_release_the_pty(config, tmp_path):
    link = tmp_path / "ttyDXL"
    emulator = DynamixelBusEmulator(config, EmulatorOptions(link_path=str(link))).start()
    assert emulator.port_path == str(link) and os.path.realpath(link).startswith("/dev/pts/")
    port = _open(emulator)
    assert PacketHandler(2.0).ping(port, 7)[1] == COMM_SUCCESS
    port.closePort()
    emulator.stop()
    assert not link.exists()


def test_options_are_validated():
    with pytest.raises(ValueError, match="poll_period_s"):
        EmulatorOptions(poll_period_s=0.05)
    with pytest.raises(ValueError, match="reboot_duration_s"):
        EmulatorOptions(reboot_duration_s=0)
