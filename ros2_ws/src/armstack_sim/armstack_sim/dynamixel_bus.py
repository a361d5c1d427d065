"""The arm's Dynamixel bus, emulated on a pseudo-terminal.

`DynamixelBusEmulator` opens a pty and answers on its master side as a chain of X-series servos
(Protocol 2.0), so the real driver with the real dynamixel_sdk opens `port_path` (/dev/pts/N) as
it would open /dev/ttyUSB0. The simulator's physics glue reads what the servos were told
(`commands()`, profiled position references in motor ticks) and writes back what the motors do
(`set_present*`); the joint <-> tick map is armstack_common.servo_config, shared with the driver.

Wire timing (EmulatorOptions.wire_timing, on by default): a pty moves bytes in microseconds, a
real bus at B baud needs 10 bit times per byte plus each servo's Return Delay Time. With wire
timing on, no status packet reaches the host before the physical bus could have delivered it:
request bytes x 10 / baud, then per reply Return Delay Time + reply bytes x 10 / baud, in wire
order. It is a lower bound, not added on top of the emulator's own processing time, so cycle
times measured on the simulated bus are never better than the hardware's. Turn it off only to
measure the software alone.

Baud rate: the pty accepts every termios rate the SDK sets (4 Mbit/s included: pyserial uses
B4000000), and a servo only hears the host when its Baud Rate (8) matches the rate the host set
on the port (EmulatorOptions.check_baud), as on hardware. (4.5 Mbit/s has no termios constant;
a host at a rate the emulator cannot read back is heard by every servo.)

Threading: the serial loop is a Python thread, so it needs the GIL to answer. MuJoCo releases
the GIL while stepping and rendering, so a simulator that keeps its own Python work short does not
delay the bus; a process with CPU-bound Python threads should lower sys.setswitchinterval.

Use from the simulator:

    bus = DynamixelBusEmulator(load_default_servo_config()).start()   # driver opens bus.port_path
    every physics step:
        bus.step(dt)                                  # advance the servos' profiles
        commands = bus.commands()                     # {id: ServoCommand}, motor ticks
        ... drive the joints towards config.ticks_to_joint(position references) ...
        bus.set_present_array(ticks, velocity_units, current_units)    # (J,) in config order
"""

from __future__ import annotations

import logging
import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from armstack_common.servo_config import ServoBusConfig

from armstack_sim.dynamixel_chain import Reply, ServoChain
from armstack_sim.dynamixel_protocol import PacketParser
from armstack_sim.dynamixel_servo import EmulatedServo, ServoCommand
from armstack_sim.dynamixel_table import BAUD_INDEX, BAUD_RATES, CONTROL_TABLES

logger = logging.getLogger(__name__)

_TERMIOS_RATES = {
    getattr(termios, f"B{rate}"): rate for rate in BAUD_RATES.values() if hasattr(termios, f"B{rate}")
}


@dataclass(frozen=True)
class EmulatorOptions:
    """Behaviour of the emulated bus (not of the servos, which follow the control table)."""

    wire_timing: bool = True  # hold replies until the physical bus could have delivered them
    check_baud: bool = True  # servos ignore a host whose port baud differs from Baud Rate(8)
    reboot_duration_s: float = 0.05  # a servo is deaf this long after REBOOT / FACTORY RESET
    partial_packet_timeout_s: float = 0.005  # give up on a frame whose remaining bytes never come
    poll_period_s: float = 0.005  # how often the Bus Watchdog is checked while the bus is idle
    link_path: str | None = None  # optional stable symlink to the pty, e.g. /tmp/armstack_dxl

    def __post_init__(self) -> None:
        for name in ("reboot_duration_s", "partial_packet_timeout_s", "poll_period_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"EmulatorOptions.{name} must be a positive number of seconds, "
                                 f"got {value!r}")
        if self.poll_period_s > 0.02:
            raise ValueError("EmulatorOptions.poll_period_s must be <= 0.02 s, the Bus Watchdog unit")


@dataclass
class BusStats:
    """Counters for tests and diagnostics."""

    packets: int = 0
    crc_errors: int = 0
    replies: int = 0
    corrupted_replies: int = 0
    dropped_reply_bytes: int = 0
    discarded_bytes: int = 0


@dataclass
class _Faults:
    corrupt_remaining: int = 0
    corrupt_servo: int | None = None
    latency_s: dict[int | None, float] = field(default_factory=dict)  # None = every servo


class DynamixelBusEmulator:
    """A chain of emulated servos behind a pseudo-terminal, served by a background thread."""

    def __init__(self, config: ServoBusConfig, options: EmulatorOptions | None = None) -> None:
        self.config = config
        self.options = options or EmulatorOptions()
        baud_index = BAUD_INDEX[config.baudrate]
        servos = [
            EmulatedServo(CONTROL_TABLES[joint.model.model_number], joint.servo_id, baud_index,
                          motor_ticks=joint.offset_ticks)
            for joint in config.joints
        ]
        self._chain = ServoChain(servos, self.options.reboot_duration_s)
        self._servo_by_config_id = {
            joint.servo_id: servo for joint, servo in zip(config.joints, servos, strict=True)}
        self._lock = threading.Lock()
        self._faults = _Faults()
        self.stats = BusStats()
        self._parser = PacketParser()
        self._wire_free_at = 0.0  # monotonic time the simulated wire finishes what it carries
        self._master_fd = self._slave_fd = -1
        self._wake_r = self._wake_w = -1
        self._port_path = ""
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------------- lifecycle
    @property
    def port_path(self) -> str:
        """The pty the driver opens (the symlink when EmulatorOptions.link_path is set)."""
        if not self._port_path:
            raise RuntimeError("emulator not started")
        return self.options.link_path or self._port_path

    def start(self) -> DynamixelBusEmulator:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._master_fd, self._slave_fd = os.openpty()
        # Raw on the slave: no echo of the host's bytes, no newline translation either way.
        tty.setraw(self._slave_fd)
        os.set_blocking(self._master_fd, False)
        self._port_path = os.ttyname(self._slave_fd)
        self._wake_r, self._wake_w = os.pipe()
        if self.options.link_path:
            self._make_link(Path(self.options.link_path))
        self._thread = threading.Thread(target=self._serve_forever, name="dynamixel-bus", daemon=True)
        self._thread.start()
        logger.info("Dynamixel bus emulator on %s (%d servos, %d baud)", self.port_path,
                    len(self.config.joints), self.config.baudrate)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2.0)
        for fd in (self._master_fd, self._slave_fd, self._wake_r, self._wake_w):
            os.close(fd)
        if self.options.link_path and Path(self.options.link_path).is_symlink():
            Path(self.options.link_path).unlink()
        self._thread = None

    def __enter__(self) -> DynamixelBusEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _make_link(self, link: Path) -> None:
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise FileExistsError(f"EmulatorOptions.link_path {link} exists and is not a symlink")
        link.symlink_to(self._port_path)

    # ------------------------------------------------------------------------ serial loop
    def _serve_forever(self) -> None:
        last_rx = time.monotonic()
        while not self._stopping.is_set():
            timeout = self.options.poll_period_s
            if self._parser.pending:
                timeout = min(timeout, self.options.partial_packet_timeout_s)
            ready, _, _ = select.select([self._master_fd, self._wake_r], [], [], timeout)
            now = time.monotonic()
            packets = []
            if self._master_fd in ready:
                try:
                    chunk = os.read(self._master_fd, 4096)
                except (BlockingIOError, InterruptedError):
                    chunk = b""
                if chunk:
                    last_rx = now
                    packets = self._parser.feed(chunk)
            elif self._parser.pending and now - last_rx > self.options.partial_packet_timeout_s:
                packets = self._parser.abandon_partial()
            self.stats.discarded_bytes = self._parser.discarded_bytes
            for packet in packets:
                self.stats.packets += 1
                self.stats.crc_errors += not packet.crc_ok
                with self._lock:
                    replies = self._chain.handle(packet, now, self._host_baud())
                self._send(replies, now, len(packet.raw))
            with self._lock:
                self._chain.check_watchdogs(time.monotonic())

    def _host_baud(self) -> int | None:
        if not self.options.check_baud:
            return None
        return _TERMIOS_RATES.get(termios.tcgetattr(self._slave_fd)[4])

    def _wire_time(self, n_bytes: int) -> float:
        return n_bytes * 10.0 / self.config.baudrate if self.options.wire_timing else 0.0

    def _send(self, replies: list[Reply], received_at: float, request_bytes: int) -> None:
        # The wire is a queue: a request that came in right behind another (one pty read holding
        # both) was still being transmitted while the first one finished.
        self._wire_free_at = max(self._wire_free_at, received_at) + self._wire_time(request_bytes)
        for reply in replies:
            with self._lock:
                latency = self._faults.latency_s.get(reply.servo_id, self._faults.latency_s.get(None, 0.0))
                data = self._maybe_corrupt(reply)
            self._wire_free_at += latency + self._wire_time(len(data))
            if self.options.wire_timing:
                self._wire_free_at += reply.delay_s
            wait = self._wire_free_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._write(data)
            self.stats.replies += 1

    def _maybe_corrupt(self, reply: Reply) -> bytes:
        faults = self._faults
        if faults.corrupt_remaining <= 0 or faults.corrupt_servo not in (None, reply.servo_id):
            return reply.data
        faults.corrupt_remaining -= 1
        self.stats.corrupted_replies += 1
        # Flip the CRC's high byte: the frame stays well formed, the host sees RX_CORRUPT.
        return reply.data[:-1] + bytes((reply.data[-1] ^ 0xFF,))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master_fd, view)
            except BlockingIOError:
                # Nobody reads the port and its buffer is full: the bytes are lost, as on a wire.
                self.stats.dropped_reply_bytes += len(view)
                return
            view = view[written:]

    # --------------------------------------------------------------------- physics glue
    def _servo(self, servo_id: int) -> EmulatedServo:
        servo = self._servo_by_config_id.get(servo_id)
        if servo is None:
            raise KeyError(f"no servo with id {servo_id} in {self.config.source}")
        return servo

    def step(self, dt: float) -> None:
        """Advance every servo's trajectory generator by dt seconds of simulated time."""
        with self._lock:
            now = time.monotonic()
            self._chain.check_watchdogs(now)
            for servo in self._servo_by_config_id.values():
                servo.step(dt)

    def commands(self) -> dict[int, ServoCommand]:
        """Per configured servo id: what the motor is told to do (motor frame)."""
        with self._lock:
            return {servo_id: servo.command() for servo_id, servo in self._servo_by_config_id.items()}

    def position_references(self) -> list[tuple[bool, float]]:
        """Per servo in configuration order: (torque enabled, profiled position reference in
        the motor frame); the per-physics-step subset of commands()."""
        with self._lock:
            return [self._servo_by_config_id[joint.servo_id].position_reference()
                    for joint in self.config.joints]

    def command(self, servo_id: int) -> ServoCommand:
        with self._lock:
            return self._servo(servo_id).command()

    def goal_position_ticks(self, servo_id: int) -> int:
        return self.command(servo_id).goal_position_ticks

    def torque_enabled(self, servo_id: int) -> bool:
        with self._lock:
            return self._servo(servo_id).torque_enabled

    def operating_mode(self, servo_id: int) -> int:
        with self._lock:
            return self._servo(servo_id).operating_mode

    def profile_velocity(self, servo_id: int) -> int:
        return self.register(servo_id, "profile_velocity")

    def profile_acceleration(self, servo_id: int) -> int:
        return self.register(servo_id, "profile_acceleration")

    def register(self, servo_id: int, name: str) -> int:
        """Any control table item by name, e.g. "bus_watchdog" (for diagnostics and tests)."""
        with self._lock:
            return self._servo(servo_id).get(name)

    def set_present(self, servo_id: int, position_ticks: float, velocity_units: float,
                    current_units: float) -> None:
        """What the motor does, in the motor frame: encoder ticks, 0.229 rev/min units, and
        address-126 units (current, or load on models without a current sensor)."""
        with self._lock:
            self._servo(servo_id).set_present(position_ticks, velocity_units, current_units)

    def set_present_array(self, position_ticks: npt.ArrayLike, velocity_units: npt.ArrayLike,
                          current_units: npt.ArrayLike) -> None:
        """(J,) arrays in configuration order (ServoBusConfig.joints), one lock for all servos."""
        rows = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in
                                     (position_ticks, velocity_units, current_units)))
        if rows[0].shape != (len(self.config.joints),):
            raise ValueError(f"arrays must have shape ({len(self.config.joints)},), got {rows[0].shape}")
        with self._lock:
            for k, joint in enumerate(self.config.joints):
                self._servo_by_config_id[joint.servo_id].set_present(rows[0][k], rows[1][k], rows[2][k])

    # -------------------------------------------------------------------- fault injection
    def inject_hardware_error(self, servo_id: int, bits: int) -> None:
        """Set Hardware Error Status bits (0x01 voltage, 0x04 overheating, 0x08 encoder,
        0x10 electrical shock, 0x20 overload). Bits in Shutdown(63) turn the torque off until
        REBOOT; every status packet then carries the Alert bit."""
        with self._lock:
            self._servo(servo_id).inject_hardware_error(bits)

    def clear_hardware_error(self, servo_id: int) -> None:
        with self._lock:
            self._servo(servo_id).clear_hardware_error()

    def power_cycle(self, servo_id: int) -> None:
        """A brown-out: the servo restarts as after REBOOT (RAM back to defaults: torque off,
        indirect map, profiles, Bus Watchdog; the turn count lost) and is deaf meanwhile."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.power_on()
            self._chain.slot_of(servo).offline_until = time.monotonic() + self.options.reboot_duration_s

    def set_connected(self, servo_id: int, connected: bool) -> None:
        """A disconnected servo hears nothing and answers nothing (its watchdog keeps running)."""
        with self._lock:
            self._chain.slot_of(self._servo(servo_id)).connected = connected

    def corrupt_replies(self, count: int, servo_id: int | None = None) -> None:
        """Damage the CRC of the next `count` status packets (of one servo, or any)."""
        with self._lock:
            self._faults.corrupt_remaining = count
            self._faults.corrupt_servo = servo_id

    def set_reply_latency(self, seconds: float, servo_id: int | None = None) -> None:
        """Delay every reply (of one servo, or of all with servo_id None) by `seconds` more."""
        if seconds < 0:
            raise ValueError("reply latency must be >= 0")
        with self._lock:
            self._faults.latency_s[servo_id] = seconds
