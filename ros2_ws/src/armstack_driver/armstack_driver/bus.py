"""The arm's Dynamixel bus as the driver uses it (LeRobot style), over the real dynamixel_sdk.

`DynamixelBus` wraps one serial port and the servos of one `ServoBusConfig`:

- `connect()` opens the port at the configured baud rate, pings every configured id and checks
  its model number; a missing or wrong servo raises `ServoSetupError` naming its id.
- `configure()` writes what the driver relies on: Return Delay Time, Drive Mode 0 and Homing
  Offset 0 (calibration lives in dynamixel.yaml), the operating mode, position limits where the
  mode uses them, profile velocity/acceleration, goal current, and the indirect state block.
- `read_state()` is one sync read per cycle of the indirect block (see `STATE_SOURCES`),
  returning a `ServoReading` that says per servo what went wrong, never raising on a bad packet.
- `send(positions)` is one sync write of goal positions and returns the command actually sent
  after clipping to the joint limits and rounding to ticks.
Every I/O method checks the connection first (`NotConnectedError`).

Status packets of the sync read are collected by servo id rather than with
GroupSyncRead.rxPacket: that one stops at the first missing reply (discarding the replies of
every later servo as foreign) and drops the status error byte. Reads wait in select() (a short
pyserial timeout) instead of the SDK's non-blocking poll, so a waiting driver neither spins a
core nor holds the GIL.

Plain module: no rclpy.
"""

from __future__ import annotations

import logging
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)
from dynamixel_sdk.port_handler import LATENCY_TIMER

from armstack_common.servo_config import JointServo, OperatingMode, ServoBusConfig

logger = logging.getLogger(__name__)

# X-series control table (Protocol 2.0) addresses the driver touches.
ADDR_RETURN_DELAY_TIME = 9
ADDR_DRIVE_MODE = 10
ADDR_OPERATING_MODE = 11
ADDR_HOMING_OFFSET = 20
ADDR_MAX_POSITION_LIMIT = 48  # followed by Min Position Limit (52)
ADDR_TORQUE_ENABLE = 64
ADDR_HARDWARE_ERROR_STATUS = 70
ADDR_BUS_WATCHDOG = 98
ADDR_GOAL_CURRENT = 102
ADDR_PROFILE_ACCELERATION = 108  # followed by Profile Velocity (112)
ADDR_GOAL_POSITION = 116
ADDR_INDIRECT_ADDRESS_1 = 168
ADDR_INDIRECT_DATA_1 = 224

# The per-cycle state block, mapped into Indirect Data 1..13 so one sync read returns it:
# Torque Enable and Bus Watchdog tell a rebooted (or browned-out) servo and a tripped watchdog
# from a healthy one; 126 is Present Current (Present Load on models without a current sensor).
STATE_SOURCES = (ADDR_TORQUE_ENABLE, ADDR_HARDWARE_ERROR_STATUS, ADDR_BUS_WATCHDOG, *range(126, 136))
STATE_LENGTH = len(STATE_SOURCES)
_STATE_DTYPE = np.dtype([
    ("torque", "u1"), ("error", "u1"), ("watchdog", "i1"),
    ("effort", "<i2"), ("velocity", "<i4"), ("position", "<i4"),
])
assert _STATE_DTYPE.itemsize == STATE_LENGTH

_PKT_ID, _PKT_ERROR, _PKT_DATA = 4, 8, 9  # byte offsets in a Protocol 2.0 status packet
_ALERT_BIT = 0x80
_STATUS_ERRORS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
                  5: "data length error", 6: "data limit error", 7: "access error"}
_WATCHDOG_UNIT_MS = 20
# How long the SDK waits for the status packet of a ping, register read or write (its
# setPacketTimeout: two USB latency timers and 2 ms, the few bytes' wire time aside).
_SETUP_REPLY_WAIT_MS = 2.0 * LATENCY_TIMER + 2.0
# What a vanished adapter (unplugged USB, closed pty) raises from pyserial and termios.
PORT_ERRORS = (OSError, termios.error)


class BusError(RuntimeError):
    """A bus operation failed; the message names the servo and what happened."""


class NotConnectedError(BusError):
    """I/O attempted on a bus that is not connected."""


class ServoSetupError(BusError):
    """Servos missing, of the wrong model, or refusing their setup: `problems` by servo id,
    each a message that names the servo."""

    def __init__(self, summary: str, problems: dict[int, str]) -> None:
        self.problems = dict(problems)
        super().__init__(f"{summary}: {'; '.join(text for _, text in sorted(problems.items()))}")


@dataclass(frozen=True)
class BusOptions:
    """Timing of the driver's side of the bus."""

    reply_margin_ms: float = 20.0  # how long past the wire time of all replies a sync read waits
    read_block_s: float = 0.001  # longest single wait in select() while a reply is incomplete
    reboot_timeout_s: float = 1.0  # how long a rebooting servo may stay silent
    io_attempts: int = 3  # tries of a setup read/write/ping whose status packet is lost or damaged

    def __post_init__(self) -> None:
        if not 0.5 <= self.reply_margin_ms <= 100.0:
            raise ValueError(f"BusOptions.reply_margin_ms must be in [0.5, 100], got {self.reply_margin_ms}")
        if not 0.0001 <= self.read_block_s <= 0.01:
            raise ValueError(f"BusOptions.read_block_s must be in [0.0001, 0.01], got {self.read_block_s}")
        if not 1 <= self.io_attempts <= 10:
            raise ValueError(f"BusOptions.io_attempts must be in 1..10, got {self.io_attempts}")
        if not 0.05 <= self.reboot_timeout_s <= 10.0:
            raise ValueError(f"BusOptions.reboot_timeout_s must be in [0.05, 10], "
                             f"got {self.reboot_timeout_s}")


@dataclass
class ServoReading:
    """One sync read. Arrays are (J,) in configuration order; a servo that failed keeps zeros."""

    ticks: np.ndarray  # int64 Present Position, motor ticks
    velocity_units: np.ndarray  # int64 Present Velocity, 0.229 rev/min
    effort_units: np.ndarray  # int64 address 126 (current or load)
    torque_enabled: np.ndarray  # bool
    hardware_error: np.ndarray  # uint8 Hardware Error Status bits
    bus_watchdog: np.ndarray  # int8, -1 = tripped
    completed_at: float  # wall clock (time.time()) when the last status packet was in
    duration_s: float  # from sending the instruction to the last reply (or the timeout)
    failures: dict[int, str] = field(default_factory=dict)  # servo id -> what went wrong

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class SentCommand:
    """What one sync write put on the bus."""

    positions: np.ndarray  # (J,) joint units, after clipping and rounding to ticks
    ticks: np.ndarray  # (J,) int64 Goal Position
    clipped: np.ndarray  # (J,) bool, the request was outside the joint limits
    written_at: float  # wall clock (time.time()) when the packet was handed to the port
    duration_s: float


class DynamixelBus:
    """The configured servos behind one serial port."""

    def __init__(self, config: ServoBusConfig, port: str | None = None,
                 options: BusOptions | None = None) -> None:
        self.config = config
        self.port_name = port or config.port
        self.options = options or BusOptions()
        self._port: PortHandler | None = None
        self._ph = PacketHandler(config.protocol_version)
        self._reader: GroupSyncRead | None = None
        self._writer: GroupSyncWrite | None = None
        self._ids = np.array(config.ids, dtype=np.int64)
        self._index = {servo_id: k for k, servo_id in enumerate(config.ids)}
        self._lower = np.array([j.min_position for j in config.joints])
        self._upper = np.array([j.max_position for j in config.joints])
        # Sync read on the wire: instruction 14 + J bytes, then per servo a status packet of
        # 11 + block bytes after its Return Delay Time (10 bit times per byte).
        n = len(config.joints)
        wire_bytes = 14 + n + n * (11 + STATE_LENGTH)
        self._read_wire_s = wire_bytes * 10.0 / config.baudrate + n * config.return_delay_time_us * 1e-6
        self._reply_margin_ms = self.options.reply_margin_ms

    # --------------------------------------------------------------------- connection
    @property
    def is_connected(self) -> bool:
        return self._port is not None and self._port.is_open

    @property
    def port_handler(self) -> PortHandler:
        """The open port, for a reader of registers this bus does not read itself (the leader
        arm's Present Position); NotConnectedError before connect()."""
        return self._require_connected()

    def _require_connected(self) -> PortHandler:
        if not self.is_connected:
            raise NotConnectedError(f"bus on {self.port_name} is not connected; call connect() first")
        return self._port

    def connect(self) -> None:
        """Open the port at the configured baud rate and find every configured servo.

        Raises ServoSetupError (ids of the missing or wrong servos) and leaves the port closed.
        """
        if self.is_connected:
            raise BusError(f"bus on {self.port_name} is already connected")
        if not Path(self.port_name).exists():
            raise BusError(f"serial port {self.port_name} does not exist")
        port = PortHandler(self.port_name)
        try:
            opened = port.openPort() and port.setBaudRate(self.config.baudrate)
        except PORT_ERRORS as exc:
            raise BusError(f"cannot open {self.port_name}: {exc}") from exc
        if not opened:
            raise BusError(f"cannot open {self.port_name} at {self.config.baudrate} baud")
        # The SDK opens the port non-blocking and polls it; a short timeout makes each read
        # wait in select() instead.
        port.ser.timeout = self.options.read_block_s
        # A USB adapter holds received bytes up to its latency timer (FTDI default 16 ms): wait
        # at least two of them, as the SDK does, or an untuned adapter looks like silent servos.
        timer = usb_latency_timer(self.port_name)
        if timer is not None:
            self._reply_margin_ms = max(self.options.reply_margin_ms, 2.0 * timer[1] + 2.0)
        self._port = port
        try:
            self._check_models()
        except BusError:
            self.disconnect()
            raise
        self._reader = GroupSyncRead(port, self._ph, ADDR_INDIRECT_DATA_1, STATE_LENGTH)
        for servo_id in self.config.ids:
            self._reader.addParam(servo_id)
        self._writer = GroupSyncWrite(port, self._ph, ADDR_GOAL_POSITION, 4)
        logger.info("bus on %s: %d servos found at %d baud", self.port_name, len(self.config.ids),
                    self.config.baudrate)

    def disconnect(self) -> None:
        if self._port is not None and self._port.is_open:
            self._port.closePort()
        self._port = None
        self._reader = self._writer = None

    def _transact(self, servo_id: int, what: str, exchange):
        """Run one instruction/status exchange (an SDK call returning (..., result, error)),
        repeating it after a lost or damaged status packet (`io_attempts` in all): setup
        writes and reads are idempotent, and one bad packet on a noisy bus is no reason to
        give up. Port errors raise BusError at once."""
        port = self._require_connected()
        for _ in range(self.options.io_attempts):
            try:
                outcome = exchange(port)
            except PORT_ERRORS as exc:  # the adapter went away
                port.is_using = False
                raise BusError(f"servo {servo_id}: {what}: port error: {exc}") from exc
            if outcome[-2] == COMM_SUCCESS:
                break
            self._await_quiet(port)
        return outcome

    def _await_quiet(self, port: PortHandler) -> None:
        """Drop what arrives until the line has been quiet for as long as a setup exchange
        waits for its reply. A request that failed may still be answered (a starved bus
        replies late), and a status packet does not say which request it answers: a late
        reply with the length the next read expects would be taken for that read's data."""
        quiet_s = max(self._reply_margin_ms, _SETUP_REPLY_WAIT_MS) * 1e-3
        start = last_byte = time.perf_counter()
        give_up = start + self.options.reboot_timeout_s  # a line that never falls quiet (noise)
        while (now := time.perf_counter()) - last_byte < quiet_s and now < give_up:
            if port.getBytesAvailable():
                port.clearPort()
                last_byte = time.perf_counter()
            else:
                time.sleep(self.options.read_block_s)

    def ping(self, servo_id: int) -> tuple[int | None, str]:
        """(model number, "") or (None, what went wrong)."""
        try:
            model, result, _ = self._transact(servo_id, "ping", lambda port: self._ph.ping(port, servo_id))
        except BusError as exc:
            return None, str(exc)
        if result != COMM_SUCCESS:
            return None, self._describe(result)
        return model, ""

    def _check_models(self) -> None:
        problems: dict[int, str] = {}
        for joint in self.config.joints:
            model, failure = self.ping(joint.servo_id)
            where = f"servo {joint.servo_id} ({joint.joint})"
            if model is None:
                problems[joint.servo_id] = f"{where} does not answer ping ({failure})"
            elif model != joint.model.model_number:
                problems[joint.servo_id] = (f"{where} is model number {model}, configured "
                                            f"{joint.model.name} ({joint.model.model_number})")
        if len(problems) == len(self.config.joints) and all("ping" in p for p in problems.values()):
            raise ServoSetupError(f"no servo answers on {self.port_name} at {self.config.baudrate} baud "
                                  "(power, cable, baud rate?)", problems)
        if problems:
            raise ServoSetupError("servo check failed", problems)

    # ------------------------------------------------------------------ register access
    def _joint(self, servo_id: int) -> JointServo:
        return self.config.joints[self._index[servo_id]]

    def read_block(self, servo_id: int, address: int, length: int) -> bytes:
        """`length` bytes from `address`, raising BusError naming the servo."""
        def exchange(port: PortHandler) -> tuple[list[int], int, int]:
            data, result, error = self._ph.readTxRx(port, servo_id, address, length)
            if result == COMM_SUCCESS and len(data) != length:
                # A reply of another length: a late one, to a request that timed out while the
                # bus was starved, taken for this one. Failed, so _transact waits for quiet
                # and asks again.
                return data, COMM_RX_CORRUPT, error
            return data, result, error

        data, result, error = self._transact(servo_id, f"read {address}", exchange)
        self._check(servo_id, f"read {address}", result, error)
        return bytes(data)

    def read_register(self, servo_id: int, address: int, size: int, signed: bool = False) -> int:
        """One register (1, 2 or 4 bytes), raising BusError naming the servo."""
        return int.from_bytes(self.read_block(servo_id, address, size), "little", signed=signed)

    def write_register(self, servo_id: int, address: int, size: int, value: int) -> None:
        """Write one register of `size` bytes, raising BusError naming the servo."""
        self._write_block(servo_id, address, [value], size)

    def _write_block(self, servo_id: int, address: int, values: list[int], size: int) -> None:
        data = [b for v in values for b in int(v).to_bytes(size, "little", signed=v < 0)]
        result, error = self._transact(servo_id, f"write {address}", lambda port: self._ph.writeTxRx(
            port, servo_id, address, len(data), data))
        self._check(servo_id, f"write {address}..{address + len(data) - 1}", result, error)

    def _describe(self, result: int) -> str:
        """The SDK's text for a communication result, without its "[TxRxResult] " tag."""
        return self._ph.getTxRxResult(result).removeprefix("[TxRxResult] ").rstrip("!")

    def _check(self, servo_id: int, what: str, result: int, error: int) -> None:
        joint = self._joint(servo_id).joint
        if result != COMM_SUCCESS:
            raise BusError(f"servo {servo_id} ({joint}): {what}: {self._describe(result)}")
        if error & ~_ALERT_BIT:
            text = _STATUS_ERRORS.get(error & ~_ALERT_BIT, f"status error {error & ~_ALERT_BIT}")
            raise BusError(f"servo {servo_id} ({joint}): {what}: {text}")

    # ------------------------------------------------------------------------ setup
    def configure(self) -> list[str]:
        """Write the driver's settings into every servo; returns notes worth a warning.

        EEPROM items are written only where they differ, and need the torque off: a servo
        found holding with torque on is released only if one of them has to change.
        """
        notes: list[str] = []
        problems: dict[int, str] = {}
        for joint in self.config.joints:
            try:
                notes.extend(self._configure_eeprom(joint))
                self.write_ram_setup(joint.servo_id)
            except BusError as exc:
                problems[joint.servo_id] = str(exc)
        if problems:
            raise ServoSetupError("servo setup failed", problems)
        return notes

    def _desired_eeprom(self, joint: JointServo) -> list[tuple[int, int, int, str]]:
        """[(address, size, value, name)] the driver needs in EEPROM."""
        items = [
            (ADDR_RETURN_DELAY_TIME, 1, self.config.return_delay_time_us // 2, "Return Delay Time"),
            (ADDR_DRIVE_MODE, 1, 0, "Drive Mode"),
            (ADDR_OPERATING_MODE, 1, int(joint.operating_mode), "Operating Mode"),
            (ADDR_HOMING_OFFSET, 4, 0, "Homing Offset"),
        ]
        # (address, size, value, name); 4-byte items are signed.
        # Position limits only bound Position mode; extended modes ignore them (the driver's
        # own limits apply there).
        if joint.operating_mode == OperatingMode.POSITION:
            low, high = joint.position_limits_ticks()
            items += [(ADDR_MAX_POSITION_LIMIT, 4, high, "Max Position Limit"),
                      (ADDR_MAX_POSITION_LIMIT + 4, 4, low, "Min Position Limit")]
        return items

    def _configure_eeprom(self, joint: JointServo) -> list[str]:
        sid = joint.servo_id
        changes = [(address, size, value, name) for address, size, value, name in self._desired_eeprom(joint)
                   if self.read_register(sid, address, size, signed=size == 4) != value]
        if not changes:
            return []
        notes = []
        if self.read_register(sid, ADDR_TORQUE_ENABLE, 1):
            notes.append(f"servo {sid} ({joint.joint}): torque turned off to change "
                         f"{', '.join(c[3] for c in changes)}")
            self.write_register(sid, ADDR_TORQUE_ENABLE, 1, 0)
        for address, size, value, _ in changes:
            self.write_register(sid, address, size, value)
        return notes

    def write_ram_setup(self, servo_id: int) -> None:
        """RAM settings, lost at every reboot: the indirect state block, profiles, goal current.

        The Bus Watchdog is disarmed first: a servo left tripped by an earlier run refuses goal
        writes (Goal Current included) until it is written 0. `set_bus_watchdog` arms it again.
        """
        joint = self._joint(servo_id)
        self.write_register(servo_id, ADDR_BUS_WATCHDOG, 1, 0)
        self._write_block(servo_id, ADDR_INDIRECT_ADDRESS_1, list(STATE_SOURCES), 2)
        if not self._state_block_mapped(servo_id):
            raise BusError(f"servo {servo_id} ({joint.joint}): indirect addresses do not read back")
        self._write_block(servo_id, ADDR_PROFILE_ACCELERATION,
                          [joint.profile_acceleration, joint.profile_velocity], 4)
        if joint.operating_mode == OperatingMode.CURRENT_BASED_POSITION and joint.goal_current_units:
            self.write_register(servo_id, ADDR_GOAL_CURRENT, 2, joint.goal_current_units)

    def _state_block_mapped(self, servo_id: int) -> bool:
        data = self.read_block(servo_id, ADDR_INDIRECT_ADDRESS_1, 2 * STATE_LENGTH)
        return [data[2 * k] | data[2 * k + 1] << 8 for k in range(STATE_LENGTH)] == list(STATE_SOURCES)

    def restore_ram_setup(self) -> list[int]:
        """Set up again every servo whose indirect map is gone (it rebooted or lost power: its
        state block would read as zeros, i.e. a bogus position); returns their ids."""
        lost = [sid for sid in self.config.ids if not self._state_block_mapped(sid)]
        for servo_id in lost:
            logger.warning("servo %d (%s) lost its RAM settings (power loss or reboot): setting up again",
                           servo_id, self._joint(servo_id).joint)
            self.write_ram_setup(servo_id)
        return lost

    # ---------------------------------------------------------------- cyclic I/O
    def read_state(self) -> ServoReading:
        """One sync read of every servo's state block; failures are reported, not raised."""
        port = self._require_connected()
        n = len(self.config.joints)
        records = np.zeros(n, dtype=_STATE_DTYPE)
        failures: dict[int, str] = {}
        t0 = time.perf_counter()
        try:
            result = self._reader.txPacket()
            if result != COMM_SUCCESS:
                failures = {sid: f"sync read not sent ({self._describe(result)})"
                            for sid in self.config.ids}
            else:
                port.setPacketTimeoutMillis(self._read_wire_s * 1e3 + self._reply_margin_ms)
                failures = self._collect_replies(port, records)
            completed_at = time.time()
            duration = time.perf_counter() - t0
            if failures:
                self._drain(port)
        except PORT_ERRORS as exc:  # the adapter went away: every servo is unreachable
            port.is_using = False
            failures = {sid: f"port error: {exc}" for sid in self.config.ids}
            completed_at, duration = time.time(), time.perf_counter() - t0
        return ServoReading(
            ticks=records["position"].astype(np.int64),
            velocity_units=records["velocity"].astype(np.int64),
            effort_units=records["effort"].astype(np.int64),
            torque_enabled=records["torque"] == 1,
            hardware_error=records["error"].copy(),
            bus_watchdog=records["watchdog"].copy(),
            completed_at=completed_at,
            duration_s=duration,
            failures=failures,
        )

    def _collect_replies(self, port: PortHandler, records: np.ndarray) -> dict[int, str]:
        pending = {sid: "no status packet (timeout)" for sid in self.config.ids}
        failures: dict[int, str] = {}
        while pending:
            packet, result = self._ph.rxPacket(port, False)
            if result != COMM_SUCCESS and len(packet) <= _PKT_ID:
                break  # timeout: nothing more is coming
            sid = packet[_PKT_ID]
            if sid not in pending:
                continue  # a stray packet (e.g. the rest of an earlier exchange)
            del pending[sid]
            if result != COMM_SUCCESS:
                failures[sid] = f"{self._describe(result)} (bad CRC or truncated)"
                continue
            status = packet[_PKT_ERROR] & ~_ALERT_BIT
            block = bytes(packet[_PKT_DATA:_PKT_DATA + STATE_LENGTH])
            if status or len(block) != STATE_LENGTH:
                failures[sid] = _STATUS_ERRORS.get(status, f"short reply ({len(block)} bytes)")
                continue
            records[self._index[sid]] = np.frombuffer(block, dtype=_STATE_DTYPE)[0]
        failures.update(pending)
        return failures

    def _drain(self, port: PortHandler) -> None:
        # Replies still on their way would be taken for the next cycle's: wait out the wire
        # time of a whole reply set, then drop whatever arrived.
        time.sleep(self._read_wire_s + 0.0005)
        port.clearPort()

    def send(self, positions: npt.ArrayLike) -> SentCommand:
        """Sync-write Goal Position for every servo: (J,) joint positions, clipped to the limits."""
        port = self._require_connected()
        requested = np.asarray(positions, dtype=np.float64)
        if requested.shape != self._ids.shape or not np.all(np.isfinite(requested)):
            raise ValueError(f"send needs {self._ids.shape[0]} finite joint positions, got {requested!r}")
        clipped_positions = np.clip(requested, self._lower, self._upper)
        ticks = self.config.joint_to_ticks(clipped_positions)
        t0 = time.perf_counter()
        self._writer.clearParam()
        for servo_id, tick in zip(self.config.ids, ticks.tolist(), strict=True):
            self._writer.addParam(servo_id, list(int(tick).to_bytes(4, "little", signed=True)))
        try:
            result = self._writer.txPacket()
        except PORT_ERRORS as exc:
            port.is_using = False
            raise BusError(f"sync write of goal positions failed: port error: {exc}") from exc
        written_at = time.time()
        if result != COMM_SUCCESS:
            raise BusError(f"sync write of goal positions failed: {self._describe(result)}")
        return SentCommand(
            positions=self.config.ticks_to_joint(ticks),
            ticks=ticks,
            clipped=clipped_positions != requested,
            written_at=written_at,
            duration_s=time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ torque, reboot
    def enable_torque(self, reading: ServoReading) -> None:
        """Goal Position := Present Position, then torque on, servo by servo (no jump)."""
        for k, servo_id in enumerate(self.config.ids):
            self.write_register(servo_id, ADDR_GOAL_POSITION, 4, int(reading.ticks[k]))
            self.write_register(servo_id, ADDR_TORQUE_ENABLE, 1, 1)

    def disable_torque(self) -> dict[int, str]:
        """Torque off on every servo; returns the servos that did not confirm (id -> why)."""
        failed = {}
        for servo_id in self.config.ids:
            try:
                self.write_register(servo_id, ADDR_TORQUE_ENABLE, 1, 0)
            except BusError as exc:
                failed[servo_id] = str(exc)
        return failed

    def set_bus_watchdog(self, period_ms: int) -> None:
        """Arm every servo's Bus Watchdog (0 disables it); a tripped one is cleared first."""
        if period_ms % _WATCHDOG_UNIT_MS or not 0 <= period_ms <= 127 * _WATCHDOG_UNIT_MS:
            raise ValueError(f"bus watchdog period must be a multiple of 20 ms in 0..2540, got {period_ms}")
        for servo_id in self.config.ids:
            # Writing 0 is what clears a tripped watchdog (it reads -1 until then).
            self.write_register(servo_id, ADDR_BUS_WATCHDOG, 1, 0)
            if period_ms:
                self.write_register(servo_id, ADDR_BUS_WATCHDOG, 1, period_ms // _WATCHDOG_UNIT_MS)

    def reboot(self, servo_ids: list[int]) -> None:
        """REBOOT the servos (clears Hardware Error Status), wait for them, redo their RAM setup."""
        port = self._require_connected()
        for servo_id in servo_ids:
            try:
                result, error = self._ph.reboot(port, servo_id)
            except PORT_ERRORS as exc:
                port.is_using = False
                raise BusError(f"servo {servo_id}: reboot: port error: {exc}") from exc
            # A lost status packet may still mean a reboot (not repeated: the servo is deaf
            # while it restarts); whether it comes back decides below.
            if result == COMM_SUCCESS:
                self._check(servo_id, "reboot", result, error)
        for servo_id in servo_ids:
            deadline = time.monotonic() + self.options.reboot_timeout_s
            while self.ping(servo_id)[0] is None:
                if time.monotonic() > deadline:
                    raise BusError(f"servo {servo_id} ({self._joint(servo_id).joint}): silent "
                                   f"{self.options.reboot_timeout_s} s after reboot")
                time.sleep(0.01)
            self.write_ram_setup(servo_id)
            logger.info("servo %d (%s) rebooted and set up again", servo_id, self._joint(servo_id).joint)


# ------------------------------------------------------------------- USB latency timer
USB_SERIAL_SYSFS = Path("/sys/bus/usb-serial/devices")


def usb_latency_timer(port: str, sysfs: Path = USB_SERIAL_SYSFS) -> tuple[Path, int] | None:
    """(sysfs file, latency in ms) of a USB serial adapter's port, None for other devices."""
    device = Path(port).resolve().name  # /dev/serial/by-id/... -> ttyUSB0
    path = sysfs / device / "latency_timer"
    try:
        return path, int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def latency_timer_warning(port: str, sysfs: Path = USB_SERIAL_SYSFS) -> str | None:
    """The exact fix when the port's USB latency timer is not 1 ms (FTDI default: 16 ms)."""
    found = usb_latency_timer(port, sysfs)
    if found is None or found[1] == 1:
        return None
    path, value = found
    return (f"USB latency timer of {port} is {value} ms: every status packet can wait that long. "
            f"Set it to 1 ms now: `echo 1 | sudo tee {path}`; for good: a udev rule "
            '`ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1"` '
            "in /etc/udev/rules.d/99-dynamixel-latency.rules")
