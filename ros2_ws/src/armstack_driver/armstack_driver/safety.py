"""The driver's safety layer: command checks, joint limits, a per-cycle step bound, the command
watchdog and the motion state machine (inactive / active / e-stop / fault).

Every goal the driver writes comes out of `MotionSupervisor.step`, so no command reaches the
servos without passing the limits and the step bound, and every stop holds the arm where it
comes to rest. A servo given a new goal while moving plans from its current velocity with its
profile acceleration (X-series e-manual, Profile Velocity): a goal at the measured position would
make it overshoot by v^2 / 2a and come back (0.26 rad at 2.4 rad/s, 11 rad/s^2). So the hold goal
is the measured position plus that braking distance (`rest_positions`): the joint decelerates
once and stays.

Plain module: no rclpy. Arrays are (J,) in the order of the bus configuration's joints.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from armstack_common.servo_config import TICKS_PER_REV, ServoBusConfig

logger = logging.getLogger(__name__)

# Hardware Error Status (address 70) bits of X-series servos.
HARDWARE_ERROR_BITS = {
    0x01: "input voltage", 0x04: "overheating", 0x08: "motor encoder",
    0x10: "electrical shock", 0x20: "overload",
}


PROFILE_ACCELERATION_UNIT_RPM2 = 214.577  # rev/min^2 per Profile Acceleration unit


def braking_deceleration(config: ServoBusConfig) -> np.ndarray:
    """(J,) deceleration of each joint's velocity-based profile in joint units/s^2 (inf: none)."""
    ticks_s2 = np.array([j.profile_acceleration for j in config.joints]) * (
        PROFILE_ACCELERATION_UNIT_RPM2 / 3600.0 * TICKS_PER_REV)
    per_unit = np.array([j.ticks_per_unit for j in config.joints])
    with np.errstate(divide="ignore"):
        return np.where(ticks_s2 > 0, ticks_s2 / per_unit, np.inf)


def rest_positions(positions: npt.ArrayLike, velocities: npt.ArrayLike,
                   deceleration: npt.ArrayLike) -> np.ndarray:
    """(J,) where each joint comes to rest braking at `deceleration`: p + v|v| / 2a."""
    v = np.asarray(velocities, dtype=np.float64)
    return np.asarray(positions, dtype=np.float64) + v * np.abs(v) / (2.0 * np.asarray(deceleration))


def describe_hardware_error(bits: int) -> str:
    """e.g. 0x24 -> '0x24 (overheating, overload)'."""
    names = [name for bit, name in HARDWARE_ERROR_BITS.items() if bits & bit]
    unknown = bits & ~sum(HARDWARE_ERROR_BITS)
    if unknown:
        names.append(f"unknown bits 0x{unknown:02x}")
    return f"0x{bits:02x} ({', '.join(names)})"


@dataclass(frozen=True)
class JointLimits:
    """The driven joints' names, limits and kinds; plus names a command may carry but the driver
    does not drive (URDF mimic joints, e.g. right_finger)."""

    names: tuple[str, ...]
    lower: np.ndarray  # (J,)
    upper: np.ndarray  # (J,)
    prismatic: np.ndarray  # (J,) bool
    ignored: frozenset[str] = frozenset()

    @classmethod
    def from_servo_config(cls, config: ServoBusConfig, ignored: Sequence[str] = ()) -> JointLimits:
        return cls(
            names=tuple(config.joint_names),
            lower=np.array([j.min_position for j in config.joints]),
            upper=np.array([j.max_position for j in config.joints]),
            prismatic=np.array([j.prismatic for j in config.joints]),
            ignored=frozenset(ignored),
        )


@dataclass(frozen=True)
class SafetyConfig:
    max_step_rad: float = 0.02  # largest goal change per cycle of a revolute joint
    max_step_m: float = 0.002  # ... of a prismatic joint
    command_timeout_s: float = 0.5  # no joint_command for this long: hold
    limit_tolerance_rad: float = 0.01  # a command this far past a limit is clipped, further rejected
    limit_tolerance_m: float = 0.001

    def __post_init__(self) -> None:
        for name in ("max_step_rad", "max_step_m", "command_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SafetyConfig.{name} must be a positive number, got {value!r}")
        for name in ("limit_tolerance_rad", "limit_tolerance_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SafetyConfig.{name} must be >= 0, got {value!r}")

    def step_bounds(self, limits: JointLimits) -> np.ndarray:
        """(J,) largest goal change per cycle."""
        return np.where(limits.prismatic, self.max_step_m, self.max_step_rad)

    def tolerances(self, limits: JointLimits) -> np.ndarray:
        return np.where(limits.prismatic, self.limit_tolerance_m, self.limit_tolerance_rad)


@dataclass(frozen=True)
class CommandCheck:
    """A joint_command after checking: positions (J,) (NaN where not commanded) and mask (J,)."""

    positions: np.ndarray
    mask: np.ndarray
    error: str = ""  # why the whole command was rejected; empty when accepted
    clipped: tuple[str, ...] = ()  # joints brought back inside their limits (within tolerance)

    @property
    def ok(self) -> bool:
        return not self.error


def check_command(names: Sequence[str], positions: Sequence[float], limits: JointLimits,
                  config: SafetyConfig) -> CommandCheck:
    """Validate a JointState-style command (names -> positions). A command with any problem
    is rejected whole: a partly applied command could move the arm into a pose nobody asked for."""
    n = len(limits.names)
    out = np.full(n, np.nan)
    mask = np.zeros(n, dtype=bool)

    def reject(reason: str) -> CommandCheck:
        return CommandCheck(out, np.zeros(n, dtype=bool), reason)

    if len(names) != len(positions):
        return reject(f"{len(names)} names but {len(positions)} positions")
    index = {name: k for k, name in enumerate(limits.names)}
    for name, value in zip(names, positions, strict=True):
        if name in limits.ignored:
            continue
        k = index.get(name)
        if k is None:
            return reject(f"unknown joint {name!r}")
        if mask[k]:
            return reject(f"joint {name!r} given twice")
        if not math.isfinite(value):
            return reject(f"{name} = {value} is not a finite number")
        out[k], mask[k] = value, True
    if not mask.any():
        return reject("no driven joint in the command")
    tolerance = config.tolerances(limits)
    below = mask & (out < limits.lower - tolerance)
    above = mask & (out > limits.upper + tolerance)
    for k in np.flatnonzero(below | above):
        unit = "m" if limits.prismatic[k] else "rad"
        return reject(f"{limits.names[k]} = {out[k]:.4f} {unit} outside "
                      f"[{limits.lower[k]:.4f}, {limits.upper[k]:.4f}] {unit}")
    outside = mask & ((out < limits.lower) | (out > limits.upper))
    out[mask] = np.clip(out[mask], limits.lower[mask], limits.upper[mask])
    return CommandCheck(out, mask, "", tuple(limits.names[k] for k in np.flatnonzero(outside)))


def servo_problems(ids: Sequence[int], names: Sequence[str], hardware_error: npt.ArrayLike,
                   torque_enabled: npt.ArrayLike, bus_watchdog: npt.ArrayLike,
                   torque_expected: bool) -> dict[int, str]:
    """Per servo id, what its state block says is wrong (empty when every servo is healthy)."""
    problems = {}
    for k, servo_id in enumerate(ids):
        error = int(np.asarray(hardware_error)[k])
        if error:
            problems[servo_id] = f"{names[k]}: hardware error {describe_hardware_error(error)}"
        elif int(np.asarray(bus_watchdog)[k]) == -1:
            problems[servo_id] = f"{names[k]}: Bus Watchdog expired (no instruction in time); goals refused"
        elif torque_expected and not bool(np.asarray(torque_enabled)[k]):
            problems[servo_id] = f"{names[k]}: torque went off (servo rebooted or lost power?)"
    return problems


class Mode(enum.Enum):
    INACTIVE = "inactive"  # motion not enabled; nothing is written
    ACTIVE = "active"  # following joint_command within the limits
    ESTOP = "estop"  # holding after an e-stop until re-enabled
    FAULT = "fault"  # holding after a fault until re-enabled


@dataclass(frozen=True)
class Goal:
    """What one cycle writes: (J,) goal positions, and the stamp of a command written for the
    first time in this cycle (None if none, or it carried no stamp)."""

    positions: np.ndarray
    new_command_stamp: float | None


class MotionSupervisor:
    """Turns accepted commands into bounded per-cycle goals; holds on every stop.

    `rest` arguments are (J,) positions where the arm would come to rest if told to stop now
    (`rest_positions` of the latest reading); a stop holds there. Not thread-safe: one thread
    (the driver loop) calls everything.
    """

    def __init__(self, limits: JointLimits, config: SafetyConfig) -> None:
        self.limits = limits
        self.config = config
        self.mode = Mode.INACTIVE
        self.faults: list[str] = []
        self.hold_reason = "motion not enabled"
        self._target: np.ndarray | None = None
        self._last_sent: np.ndarray | None = None  # None: nothing to write (torque not ours)
        self._holding = True
        self._activated_at = -math.inf
        self._last_command_at: float | None = None
        self._unwritten_stamp: float | None = None
        self._unwritten = False

    # --------------------------------------------------------------------- transitions
    def activate(self, rest: npt.ArrayLike, now: float) -> None:
        """Enable motion from the arm's pose; commands received before `now` are ignored."""
        self.mode = Mode.ACTIVE
        self.faults = []
        self._activated_at = now
        self._last_command_at = None
        self._unwritten = False
        self._last_sent = np.asarray(rest, dtype=np.float64).copy()
        self._hold(rest, "waiting for joint_command")

    def deactivate(self) -> None:
        """Stop writing; the servos keep their last goal."""
        self.mode = Mode.INACTIVE
        self.hold_reason = "motion not enabled"
        self._last_sent = self._target = None
        self._holding = True

    def estop(self, rest: npt.ArrayLike | None) -> None:
        if self.mode == Mode.FAULT:
            return  # already holding; the fault stays the reason
        self.mode = Mode.ESTOP
        self._hold(rest, "e-stop")

    def fault(self, reasons: Sequence[str], rest: npt.ArrayLike | None) -> None:
        """Latch faults and hold (at `rest`, else at the last goal) until re-enabled."""
        new = [r for r in reasons if r not in self.faults]
        self.faults.extend(new)
        if new:
            logger.error("motion stopped: %s", "; ".join(new))
        if self.mode != Mode.FAULT:
            self.mode = Mode.FAULT
            self._hold(rest, "fault")

    def _hold(self, rest: npt.ArrayLike | None, reason: str) -> None:
        """Hold at `rest` (else at the last goal); nothing to do while not writing."""
        self.hold_reason = reason
        self._holding = True
        if self._last_sent is None:
            return
        if rest is not None:
            self._last_sent = np.clip(np.asarray(rest, dtype=np.float64), self.limits.lower,
                                      self.limits.upper)
        self._target = self._last_sent.copy()

    # ------------------------------------------------------------------------ commands
    def submit(self, check: CommandCheck, received_at: float, stamp: float | None) -> bool:
        """Take an accepted command; False when motion is not enabled or it predates enabling."""
        if not check.ok or self.mode != Mode.ACTIVE or received_at < self._activated_at:
            return False
        self._target[check.mask] = check.positions[check.mask]
        self._last_command_at = received_at
        self._holding = False
        self.hold_reason = ""
        self._unwritten = True
        self._unwritten_stamp = stamp
        return True

    @property
    def holding(self) -> bool:
        return self._holding

    def step(self, rest: npt.ArrayLike, now: float) -> Goal | None:
        """The goal of this cycle, or None when nothing must be written."""
        if self._last_sent is None:
            return None
        if self.mode == Mode.ACTIVE:
            timed_out = (self._last_command_at is not None
                         and now - self._last_command_at > self.config.command_timeout_s)
            if timed_out and not self._holding:
                self._hold(rest, f"command watchdog: no joint_command for "
                                     f"{self.config.command_timeout_s:g} s")
                logger.warning("command watchdog: holding position")
            bound = self.config.step_bounds(self.limits)
            change = np.clip(self._target - self._last_sent, -bound, bound)
            self._last_sent = np.clip(self._last_sent + change, self.limits.lower, self.limits.upper)
        stamp = None
        if self._unwritten and self.mode == Mode.ACTIVE:
            stamp, self._unwritten = self._unwritten_stamp, False
        return Goal(self._last_sent.copy(), stamp)
