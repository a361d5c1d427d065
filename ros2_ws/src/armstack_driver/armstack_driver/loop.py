"""The driver's bus loop: its own thread, one sync read and one sync write per cycle.

Each cycle: serve pending requests (enable, e-stop, disable), take the latest command, read
the servos' state (retrying a failed sync read up to `read_retries` times), publish it, check
every servo's flags, let the `MotionSupervisor` compute the goal, write it, and measure:
sync read and write times, cycle time, period jitter, missed cycles, and the latency from each
command's header stamp (the camera frame it came from) to the moment it was written.

Only this thread touches the bus once the loop runs; other threads post commands and requests.
Nothing that happens on the bus stops the thread: faults stop the motion instead.

Plain module: no rclpy (the node passes callbacks that publish).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from armstack_common.stats import RollingStats

from armstack_driver.bus import BusError, DynamixelBus, ServoReading
from armstack_driver.safety import (
    CommandCheck,
    Goal,
    Mode,
    MotionSupervisor,
    braking_deceleration,
    rest_positions,
    servo_problems,
)

logger = logging.getLogger(__name__)

REQUESTS = ("enable", "estop", "disable")


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float = 200.0
    read_retries: int = 3  # extra sync reads after a failed one before motion stops
    bus_watchdog_ms: int = 0  # servos' own Bus Watchdog, armed at enable (0 = off)
    estop_torque_off: bool = False  # after an e-stop or deactivate: torque off (the arm goes limp)
    estop_torque_off_delay_s: float = 0.5  # hold this long first, so the arm is at rest
    reboot_on_enable: bool = True  # enable reboots servos that report a hardware error
    stats_window: int = 2000  # samples in each rolling statistic (10 s at 200 Hz)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and 50.0 <= self.rate_hz <= 1000.0):
            raise ValueError(f"LoopConfig.rate_hz must be in [50, 1000], got {self.rate_hz}")
        if not 0 <= self.read_retries <= 10:
            raise ValueError(f"LoopConfig.read_retries must be in 0..10, got {self.read_retries}")
        if self.bus_watchdog_ms % 20 or not 0 <= self.bus_watchdog_ms <= 2540:
            raise ValueError("LoopConfig.bus_watchdog_ms must be a multiple of 20 in 0..2540, "
                             f"got {self.bus_watchdog_ms}")
        if self.bus_watchdog_ms and self.bus_watchdog_ms < 3000.0 / self.rate_hz:
            raise ValueError(f"LoopConfig.bus_watchdog_ms {self.bus_watchdog_ms} would trip between "
                             f"cycles at {self.rate_hz} Hz: use 0 or >= 3 periods")
        if not 0.0 <= self.estop_torque_off_delay_s <= 10.0:
            raise ValueError("LoopConfig.estop_torque_off_delay_s must be in [0, 10], "
                             f"got {self.estop_torque_off_delay_s}")
        if self.stats_window < 10:
            raise ValueError(f"LoopConfig.stats_window must be >= 10, got {self.stats_window}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class JointSample:
    """One successful read in joint units: (J,) arrays in configuration order."""

    stamp: float  # wall clock when the sync read completed
    positions: np.ndarray  # rad / m
    velocities: np.ndarray  # rad/s / m/s
    efforts: np.ndarray  # motor current, A


@dataclass(frozen=True)
class LoopStatus:
    """A snapshot for diagnostics."""

    mode: str
    hold_reason: str
    faults: tuple[str, ...]
    servo_problems: dict[int, str]
    last_read_failure: str
    torque_on: bool
    cycles: int
    missed_cycles: int
    read_failures: int  # failed sync reads, retries included
    reads_recovered: int  # cycles whose read succeeded on a retry
    commands_taken: int
    commands_ignored: int  # arrived while motion was not enabled
    clipped_goals: int  # cycles where the bus clipped a goal to the joint limits
    read_ms: dict[str, float]
    write_ms: dict[str, float]
    cycle_ms: dict[str, float]
    period_ms: dict[str, float]
    jitter_ms: dict[str, float]  # |period - nominal|
    latency_ms: dict[str, float]  # command header stamp -> written to the bus
    last_sample_age_s: float | None


@dataclass
class _Request:
    kind: str
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[bool, str] = (False, "not served")


class DriverLoop:
    def __init__(
        self,
        bus: DynamixelBus,
        supervisor: MotionSupervisor,
        config: LoopConfig,
        publish_state: Callable[[JointSample], None],
        publish_latency: Callable[[float], None],
        on_event: Callable[[], None] = lambda: None,
    ) -> None:
        self.bus = bus
        self.supervisor = supervisor
        self.config = config
        self._publish_state = publish_state
        self._publish_latency = publish_latency
        self._on_event = on_event
        self._servo = bus.config
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._command_lock = threading.Lock()
        self._command: tuple[CommandCheck, float, float | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        window = config.stats_window
        self._read_ms, self._write_ms, self._cycle_ms = (RollingStats(window) for _ in range(3))
        self._period_ms, self._jitter_ms = RollingStats(window), RollingStats(window)
        self._latency_ms = RollingStats(window)
        self._counts = dict.fromkeys(("cycles", "missed_cycles", "read_failures", "reads_recovered",
                                      "commands_taken", "commands_ignored", "clipped_goals"), 0)
        self._deceleration = braking_deceleration(self._servo)  # (J,)
        self._rest: np.ndarray | None = None  # (J,) where the arm stops if told to now (last read)
        self._last_sample_mono: float | None = None
        self._last_read_ok = True
        self._last_read_failure = ""
        self._problems: dict[int, str] = {}
        self._torque_on = False
        self._estop_at: float | None = None
        self._event_key: tuple = ()

    # ------------------------------------------------------------------ other threads
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("driver loop already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="driver-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        while not self._requests.empty():
            request = self._requests.get_nowait()
            request.result = (False, "driver loop stopped")
            request.done.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def post_command(self, check: CommandCheck, received_at: float, stamp: float | None) -> None:
        """Hand over an accepted command (monotonic receive time, header stamp in wall seconds)."""
        with self._command_lock:
            self._command = (check, received_at, stamp)

    def request(self, kind: str, timeout: float = 3.0) -> tuple[bool, str]:
        """Run enable / estop / disable in the loop thread; (success, message)."""
        if kind not in REQUESTS:
            raise ValueError(f"unknown request {kind!r}; one of {REQUESTS}")
        if not self.running:
            return False, "driver loop is not running"
        request = _Request(kind)
        self._requests.put(request)
        if not request.done.wait(timeout):
            return False, f"{kind}: no answer from the driver loop within {timeout} s"
        return request.result

    def update_config(self, config: LoopConfig) -> None:
        self.config = config  # read once per cycle; an attribute swap is atomic

    def status(self) -> LoopStatus:
        sup = self.supervisor
        age = None if self._last_sample_mono is None else time.monotonic() - self._last_sample_mono
        return LoopStatus(
            mode=sup.mode.value, hold_reason=sup.hold_reason, faults=tuple(sup.faults),
            servo_problems=dict(self._problems), last_read_failure=self._last_read_failure,
            torque_on=self._torque_on, **self._counts,
            read_ms=self._read_ms.summary(), write_ms=self._write_ms.summary(),
            cycle_ms=self._cycle_ms.summary(), period_ms=self._period_ms.summary(),
            jitter_ms=self._jitter_ms.summary(), latency_ms=self._latency_ms.summary(),
            last_sample_age_s=age,
        )

    # ----------------------------------------------------------------------- the thread
    def _run(self) -> None:
        next_due = time.monotonic()
        last_start: float | None = None
        while not self._stop.is_set():
            config = self.config
            start = time.monotonic()
            if last_start is not None:
                period = start - last_start
                self._period_ms.add(period * 1e3)
                self._jitter_ms.add(abs(period - config.period_s) * 1e3)
            last_start = start
            served = self._serve_requests()
            try:
                self._cycle()
            except Exception:  # the loop must outlive any bug in a cycle
                logger.exception("driver cycle failed")
                self.supervisor.fault(["driver cycle raised an exception (see log)"], self._rest)
            self._counts["cycles"] += 1
            self._cycle_ms.add((time.monotonic() - start) * 1e3)
            self._notify_if_changed()
            now = time.monotonic()
            if served:
                # Enable/e-stop work (reboots, register writes) is not a missed cycle.
                next_due, last_start = now, None
            next_due += config.period_s
            if now > next_due:
                skipped = int((now - next_due) / config.period_s) + 1
                self._counts["missed_cycles"] += skipped
                next_due += skipped * config.period_s
            time.sleep(max(0.0, next_due - time.monotonic()))

    def _cycle(self) -> None:
        sup = self.supervisor
        self._take_command()
        reading = self._read()
        if reading.ok:
            self._accept_reading(reading)
        elif sup.mode != Mode.INACTIVE:
            sup.fault([f"bus read failed: {self._last_read_failure}"], self._rest)
        goal = sup.step(self._rest, time.monotonic()) if self._rest is not None else None
        if goal is not None:
            self._write(goal)
        self._maybe_release_torque()

    def _write(self, goal: Goal) -> None:
        try:
            sent = self.bus.send(goal.positions)
        except BusError as exc:  # the port went away; the next reads name the servos
            self.supervisor.fault([str(exc)], self._rest)
            return
        self._write_ms.add(sent.duration_s * 1e3)
        self._counts["clipped_goals"] += bool(sent.clipped.any())
        if goal.new_command_stamp:
            latency = sent.written_at - goal.new_command_stamp
            self._latency_ms.add(latency * 1e3)
            self._publish_latency(latency)

    def _take_command(self) -> None:
        with self._command_lock:
            command, self._command = self._command, None
        if command is None:
            return
        if self.supervisor.submit(*command):
            self._counts["commands_taken"] += 1
        else:
            self._counts["commands_ignored"] += 1

    def _read(self) -> ServoReading:
        # After a failed read (motion already stopped) one attempt per cycle keeps the loop
        # responsive while the bus is down.
        attempts = 1 + self.config.read_retries if self._last_read_ok else 1
        for attempt in range(attempts):
            reading = self.bus.read_state()
            self._read_ms.add(reading.duration_s * 1e3)
            if reading.ok:
                self._counts["reads_recovered"] += attempt > 0 and self._last_read_ok
                self._last_read_ok = True
                return reading
            self._counts["read_failures"] += 1
        self._last_read_ok = False
        self._last_read_failure = f"{attempts} attempt(s): {self._describe(reading.failures)}"
        self._problems = {sid: f"{self._servo.by_id(sid).joint}: {text}"
                          for sid, text in reading.failures.items()}
        return reading

    def _accept_reading(self, reading: ServoReading) -> None:
        servo = self._servo
        sample = JointSample(
            stamp=reading.completed_at,
            positions=servo.ticks_to_joint(reading.ticks),
            velocities=servo.velocity_units_to_joint(reading.velocity_units),
            efforts=servo.current_units_to_amps(reading.effort_units),
        )
        self._rest = rest_positions(sample.positions, sample.velocities, self._deceleration)
        self._last_sample_mono = time.monotonic()
        self._publish_state(sample)
        self._problems = servo_problems(servo.ids, servo.joint_names, reading.hardware_error,
                                        reading.torque_enabled, reading.bus_watchdog, self._torque_on)
        if self._problems and self.supervisor.mode != Mode.INACTIVE:
            self.supervisor.fault([f"servo {sid} ({text})" for sid, text in sorted(self._problems.items())],
                                  self._rest)

    def _maybe_release_torque(self) -> None:
        config = self.config
        if (self.supervisor.mode == Mode.ESTOP and config.estop_torque_off and self._torque_on
                and self._estop_at is not None
                and time.monotonic() - self._estop_at >= config.estop_torque_off_delay_s):
            self._release_torque("e-stop")

    def _release_torque(self, why: str) -> None:
        failed = self.bus.disable_torque()
        self._torque_on = False
        if failed:
            logger.error("%s: torque off not confirmed by %s", why, "; ".join(failed.values()))
        else:
            logger.warning("%s: torque off", why)

    def _notify_if_changed(self) -> None:
        sup = self.supervisor
        key = (sup.mode, sup.hold_reason, len(sup.faults), tuple(sorted(self._problems)), self._torque_on)
        if key != self._event_key:
            self._event_key = key
            self._on_event()

    # ------------------------------------------------------------------------ requests
    def _serve_requests(self) -> bool:
        served = False
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return served
            served = True
            handler = {"enable": self._enable, "estop": self._estop, "disable": self._disable}[request.kind]
            try:
                request.result = handler()
            except BusError as exc:
                request.result = (False, f"{request.kind} failed: {exc}")
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a request's bug
                # Raised out of here it would end this thread, and with it every bus read and
                # state message, while the servos hold their last goal unwatched.
                logger.exception("%s raised", request.kind)
                request.result = (False, f"{request.kind} failed: {type(exc).__name__}: {exc}")
            logger.info("%s: %s", request.kind, request.result[1])
            request.done.set()

    def _estop(self) -> tuple[bool, str]:
        if self.supervisor.mode == Mode.INACTIVE:
            return True, "e-stop: motion was not enabled"
        self.supervisor.estop(self._rest)
        self._estop_at = time.monotonic()
        detail = ""
        if self.config.estop_torque_off and self._torque_on:
            detail = f"; torque off in {self.config.estop_torque_off_delay_s:g} s"
        return True, f"e-stop: holding position{detail}"

    def _disable(self) -> tuple[bool, str]:
        self.supervisor.deactivate()
        if self.config.estop_torque_off and self._torque_on:
            self._release_torque("disable")
            return True, "motion disabled, torque off"
        return True, "motion disabled, servos hold their last goal"

    def _enable(self) -> tuple[bool, str]:
        """Re-check the bus, reboot servos in error, arm the watchdog, torque on, then accept
        commands (only ones received from now on)."""
        if self.supervisor.mode == Mode.ACTIVE:
            return True, "motion already enabled"
        # A servo that power-cycled reads zeros through its lost indirect map: map it again
        # before its "present position" becomes the goal.
        restored = self.bus.restore_ram_setup()
        reading = self._read_retrying()
        if not reading.ok:
            return False, f"cannot enable: {self._describe(reading.failures)}"
        in_error = self._ids_where(reading.hardware_error != 0)
        if in_error:
            if not self.config.reboot_on_enable:
                return False, (f"cannot enable: hardware error on servo(s) {in_error} "
                               "(reboot_on_enable is off)")
            self.bus.reboot(in_error)
            reading = self._read_retrying()
            still = sorted(reading.failures) or self._ids_where(reading.hardware_error != 0)
            if still:
                return False, f"cannot enable: servo(s) {still} still failing after reboot"
        self.bus.set_bus_watchdog(self.config.bus_watchdog_ms)
        self.bus.enable_torque(reading)
        self._torque_on = True
        check = self._read_retrying()
        off = sorted(check.failures) or self._ids_where(~check.torque_enabled)
        if off:
            self._release_torque("enable failed")
            return False, f"cannot enable: torque did not come on for servo(s) {off}"
        with self._command_lock:
            self._command = None
        self._accept_reading(check)
        self._last_read_ok = True
        self.supervisor.activate(self._rest, time.monotonic())
        self._estop_at = None
        notes = [f"rebooted servo(s) {in_error}"] if in_error else []
        notes += [f"set up servo(s) {restored} again"] if restored else []
        return True, "motion enabled" + (f" ({'; '.join(notes)})" if notes else "")

    def _read_retrying(self) -> ServoReading:
        """A sync read with the cycle's retries (for enable; the cycle statistics stay as they are)."""
        for _ in range(self.config.read_retries):
            reading = self.bus.read_state()
            if reading.ok:
                return reading
        return self.bus.read_state()

    def _ids_where(self, mask: np.ndarray) -> list[int]:
        """Servo ids where the (J,) mask is true."""
        return [self._servo.ids[k] for k in np.flatnonzero(mask)]

    def _describe(self, failures: dict[int, str]) -> str:
        return "; ".join(f"servo {sid} ({self._servo.by_id(sid).joint}): {text}"
                         for sid, text in sorted(failures.items()))
