"""One emulated X-series servo: its control table and the behaviour behind it.

Models what a driver can observe on a real bus:
- reads/writes with the status errors of the e-manual (access, range, limit, length), EEPROM
  locked while torque is on, writes applied all-or-nothing, Indirect Address/Data;
- Torque Enable latching Goal Position to Present Position; Shutdown on hardware errors;
- the velocity- and time-based trapezoidal profiles (Position/Velocity Trajectory);
- Bus Watchdog: torque on and no instruction for N x 20 ms -> stop, Bus Watchdog reads -1 and the
  goal items answer Data Range Error until the watchdog is written 0;
- multi-turn count lost at power-on/reboot and on CLEAR (Present Position back into one turn).

Two frames: the *register* frame is what the bus reads and writes (Homing Offset and the Drive
Mode reverse bit applied); the *motor* frame is the physical encoder count the simulator uses.

Plain module: no rclpy, no I/O, not thread-safe (the bus serialises access).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from armstack_common.servo_config import TICKS_PER_REV, VELOCITY_UNIT_RPM, OperatingMode

from armstack_sim.dynamixel_protocol import StatusError
from armstack_sim.dynamixel_table import TABLE_SIZE, ControlTable, Item, decode, encode

logger = logging.getLogger(__name__)

WATCHDOG_UNIT_S = 0.020
PROFILE_ACCEL_UNIT_RPM2 = 214.577  # rev/min^2 per Profile Acceleration unit (velocity-based)
_TICKS_PER_S_PER_VELOCITY_UNIT = VELOCITY_UNIT_RPM / 60.0 * TICKS_PER_REV
_TICKS_PER_S2_PER_ACCEL_UNIT = PROFILE_ACCEL_UNIT_RPM2 / 3600.0 * TICKS_PER_REV
_DRIVE_MODE_REVERSE = 0x01
_DRIVE_MODE_TIME_BASED = 0x04
_GOAL_ITEMS = ("goal_pwm", "goal_current", "goal_velocity", "goal_position")
_POSITION_MODES = (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION,
                   OperatingMode.CURRENT_BASED_POSITION)
_EXTENDED_RANGE = 1_048_575


@dataclass(frozen=True)
class WriteOutcome:
    """Result of a write: the status error, and EEPROM changes the bus applies after replying."""

    error: StatusError
    new_id: int | None = None
    new_baud_index: int | None = None


@dataclass(frozen=True)
class ServoCommand:
    """What the simulator should make the motor do (motor frame).

    Torque off: the motor is limp. Position modes (3, 4, 5): track position_ticks, which the
    servo's profile moves towards the goal; in current-based position mode (5) with at most
    |goal_current_units|. Velocity mode (1): track velocity_units. Current mode (0): apply
    goal_current_units. PWM mode (16): goal_pwm (0.113 % units).
    """

    servo_id: int
    torque_enabled: bool
    operating_mode: int
    position_ticks: float  # profiled position reference (Position Trajectory)
    velocity_units: float  # profiled velocity reference, 0.229 rev/min units
    goal_position_ticks: int  # raw goal, or the hold position after a watchdog stop
    goal_current_units: int | None  # None on models without current control
    current_limit_units: int | None
    goal_pwm: int


class TrapezoidProfile:
    """Trapezoidal trajectory generator in the register frame (ticks, ticks/s)."""

    def __init__(self) -> None:
        self.position = 0.0
        self.velocity = 0.0
        self.target = 0.0
        # Time-based profiles fix their limits when a goal arrives; None = use the registers.
        self.fixed_limits: tuple[float, float] | None = None

    def reset(self, position: float, velocity: float = 0.0) -> None:
        self.position = self.target = position
        self.velocity = velocity
        self.fixed_limits = None

    def step(self, dt: float, vmax: float, amax: float) -> None:
        """Move towards target with |v| <= vmax and |a| <= amax (math.inf = unlimited)."""
        error = self.target - self.position
        if math.isinf(vmax) or error == 0.0:
            self.position, self.velocity = self.target, 0.0
            return
        cap = vmax if math.isinf(amax) else min(vmax, math.sqrt(2.0 * amax * abs(error)))
        desired = math.copysign(cap, error)
        if math.isinf(amax):
            self.velocity = desired
        else:
            self.velocity += max(-amax * dt, min(amax * dt, desired - self.velocity))
        position = self.position + self.velocity * dt
        if (self.target - position) * error <= 0.0:
            self.position, self.velocity = self.target, 0.0
        else:
            self.position = position


def velocity_based_limits(profile_velocity: int, profile_acceleration: int) -> tuple[float, float]:
    """(vmax ticks/s, amax ticks/s^2) of a velocity-based profile from its registers (0 = none)."""
    vmax = math.inf if profile_velocity == 0 else profile_velocity * _TICKS_PER_S_PER_VELOCITY_UNIT
    amax = (math.inf if profile_acceleration == 0
            else profile_acceleration * _TICKS_PER_S2_PER_ACCEL_UNIT)
    return vmax, amax


class EmulatedServo:
    def __init__(self, table: ControlTable, servo_id: int, baud_index: int, motor_ticks: float) -> None:
        self.table = table
        self._memory = table.defaults()
        self._motor_position = float(motor_ticks)
        self._motor_velocity = 0.0  # velocity units
        self._motor_effort = 0.0  # address-126 units
        # set_present only stores the motor's values (the simulator calls it every physics
        # step, ~5x as often as a driver reads); the present registers are encoded from them
        # when something looks at the table (_sync_present).
        self._present_stale = False
        self._turn_offset = 0  # subtracts whole turns the encoder forgot (power-on, CLEAR)
        self._profile = TrapezoidProfile()
        self._pending_write: tuple[int, bytes] | None = None
        self._last_instruction_time: float | None = None
        self._injected_errors = 0
        self._set("id", servo_id)
        self._set("baud_rate", baud_index)
        self.power_on()
        # Powered on where the simulator first puts the motor, not at the configured guess.
        self._power_on_pending = True

    # ----------------------------------------------------------------- register helpers
    def get(self, name: str) -> int:
        if self._present_stale and name in self.table.present_items:
            self._sync_present()
        start, end, signed, _, _ = self.table.layout[name]
        return int.from_bytes(self._memory[start:end], "little", signed=signed)

    def _set(self, name: str, value: int, memory: bytearray | None = None) -> None:
        """Store a value, saturated to the item's size (present values from the simulator)."""
        start, end, signed, low, high = self.table.layout[name]
        target = self._memory if memory is None else memory
        target[start:end] = max(low, min(high, int(value))).to_bytes(end - start, "little", signed=signed)

    def has(self, name: str) -> bool:
        return name in self.table.items

    @property
    def servo_id(self) -> int:
        return self.get("id")

    @property
    def torque_enabled(self) -> bool:
        return self.get("torque_enable") == 1

    @property
    def operating_mode(self) -> int:
        return self.get("operating_mode")

    @property
    def hardware_error(self) -> int:
        return self.get("hardware_error_status")

    @property
    def watchdog_tripped(self) -> bool:
        return self.get("bus_watchdog") == -1

    @property
    def return_delay_s(self) -> float:
        return self.get("return_delay_time") * 2e-6

    # ------------------------------------------------------------- frames and present values
    def _sign(self) -> int:
        return -1 if self.get("drive_mode") & _DRIVE_MODE_REVERSE else 1

    def _to_register(self, motor_ticks: float) -> float:
        return self._sign() * motor_ticks + self.get("homing_offset") + self._turn_offset

    def _to_motor(self, register_ticks: float) -> float:
        return self._sign() * (register_ticks - self.get("homing_offset") - self._turn_offset)

    def _latch_turns(self) -> None:
        """Forget whole turns, as the single-turn absolute encoder does at power-on."""
        raw = self._sign() * self._motor_position
        self._turn_offset = -TICKS_PER_REV * math.floor(raw / TICKS_PER_REV)

    def set_present(self, motor_ticks: float, velocity_units: float, effort_units: float) -> None:
        self._motor_position = float(motor_ticks)
        self._motor_velocity = float(velocity_units)
        self._motor_effort = float(effort_units)
        if self._power_on_pending:
            self._power_on_pending = False
            self._latch_turns()
            self._refresh_present()
            self._hold_present()
            return
        self._present_stale = True

    def _sync_present(self) -> None:
        """Encode the present registers from the latest set_present, if not done yet."""
        if self._present_stale:
            self._refresh_present()

    def _refresh_present(self) -> None:
        self._present_stale = False
        sign = self._sign()
        self._set("present_position", round(self._to_register(self._motor_position)))
        self._set("present_velocity", round(sign * self._motor_velocity))
        self._set(self.table.effort_item.name, round(sign * self._motor_effort))
        self._set("moving", int(abs(self.get("present_velocity")) > self.get("moving_threshold")))

    def power_on(self) -> None:
        """Cold start / REBOOT: RAM to defaults, turn count forgotten, goal = present."""
        eeprom = bytes(self._memory[:64])
        self._memory = self.table.defaults()
        self._memory[:64] = eeprom
        self._injected_errors = 0
        self._pending_write = None
        self._last_instruction_time = None
        self._latch_turns()
        self._refresh_present()
        self._hold_present()

    def _hold_present(self) -> None:
        present = self.get("present_position")
        self._set("goal_position", present)
        self._profile.reset(float(present))
        self._set("position_trajectory", present)
        self._set("velocity_trajectory", 0)

    def factory_reset(self, option: int) -> None:
        """FACTORY RESET: 0xFF all, 0x01 all but ID, 0x02 all but ID and baud rate."""
        keep_id, keep_baud = self.servo_id, self.get("baud_rate")
        self._memory = self.table.defaults()
        if option in (0x01, 0x02):
            self._set("id", keep_id)
        if option == 0x02:
            self._set("baud_rate", keep_baud)
        self.power_on()

    def clear_multi_turn(self) -> StatusError:
        """CLEAR 0x01: Present Position back into 0..4095 (refused while moving)."""
        if self.get("moving"):
            return StatusError.RESULT_FAIL
        self._latch_turns()
        self._refresh_present()
        self._hold_present()
        return StatusError.NONE

    # --------------------------------------------------------------------- reads and writes
    def _resolve(self, address: int) -> int:
        """Indirect Data bytes stand for the byte their Indirect Address points at."""
        slot = self.table.indirect_data_slot.get(address)
        if slot is None:
            return address
        target = int.from_bytes(self._memory[slot:slot + 2], "little")
        # An Indirect Address left pointing at an Indirect Data byte makes it a plain byte.
        return address if target in self.table.indirect_data_slot else target

    def read(self, address: int, length: int, now: float) -> tuple[StatusError, bytes]:
        if length == 0 or address + length > TABLE_SIZE:
            return StatusError.ACCESS, b""
        self._sync_present()
        self._set("realtime_tick", int(now * 1000.0) % 32768)
        # Gaps between items read as 0, as a block read over the whole table does.
        data = bytes(self._memory[self._resolve(a)] for a in range(address, address + length))
        return StatusError.NONE, data

    def check_write(self, address: int, data: bytes) -> StatusError:
        """Validate a write without applying it (REG WRITE)."""
        error, _, _ = self._stage(address, data)
        return error

    def write(self, address: int, data: bytes, now: float) -> WriteOutcome:
        error, staged, written = self._stage(address, data)
        if error != StatusError.NONE:
            return WriteOutcome(error)
        new_id = new_baud = None
        if "id" in written and written["id"] != self.servo_id:
            new_id = written.pop("id")
            self._set("id", self.servo_id, staged)  # the reply still comes from the old ID
        if "baud_rate" in written and written["baud_rate"] != self.get("baud_rate"):
            new_baud = written.pop("baud_rate")
            self._set("baud_rate", self.get("baud_rate"), staged)
        before = {name: self.get(name) for name in ("torque_enable", "operating_mode", "bus_watchdog")}
        self._memory = staged
        self._apply_side_effects(written, before, now)
        return WriteOutcome(StatusError.NONE, new_id, new_baud)

    def apply_new_id(self, servo_id: int) -> None:
        self._set("id", servo_id)

    def apply_new_baud(self, baud_index: int) -> None:
        self._set("baud_rate", baud_index)

    def _stage(self, address: int, data: bytes) -> tuple[StatusError, bytearray, dict[str, int]]:
        """Check a write item by item on a copy of the table; the copy is applied only if all pass."""
        if not data or address + len(data) > TABLE_SIZE:
            return StatusError.ACCESS, self._memory, {}
        self._sync_present()  # the staged copy carries them
        covered: dict[str, dict[int, int]] = {}
        for offset, byte in enumerate(data):
            target = self._resolve(address + offset)
            item = self.table.item_at[target] if target < TABLE_SIZE else None
            if item is None:
                return StatusError.ACCESS, self._memory, {}
            covered.setdefault(item.name, {})[target - item.address] = byte
        staged = bytearray(self._memory)
        written: dict[str, int] = {}
        for name, parts in covered.items():
            item = self.table.items[name]
            if len(parts) != item.size:
                return StatusError.DATA_LENGTH, self._memory, {}
            value = decode(item, bytes(parts[k] for k in range(item.size)))
            error = self._check_item(item, value, staged)
            if error != StatusError.NONE:
                return error, self._memory, {}
            staged[item.address:item.address + item.size] = encode(item, value)
            written[name] = value
        return StatusError.NONE, staged, written

    def _check_item(self, item: Item, value: int, staged: bytearray) -> StatusError:
        def staged_value(name: str) -> int:
            other = self.table.items[name]
            return decode(other, staged[other.address:other.address + other.size])

        if not item.writable or (item.eeprom and self.torque_enabled):
            return StatusError.ACCESS
        if item.name in _GOAL_ITEMS and self.watchdog_tripped:
            return StatusError.DATA_RANGE
        if item.name == "operating_mode":
            modes = {int(mode) for mode in self.table.model.operating_modes}
            return StatusError.NONE if value in modes else StatusError.DATA_RANGE
        if item.name == "drive_mode":
            allowed = _DRIVE_MODE_REVERSE | _DRIVE_MODE_TIME_BASED
            return StatusError.DATA_RANGE if value & ~allowed else StatusError.NONE
        if item.name == "goal_position":
            return self._check_goal_position(value, staged_value)
        if item.low is not None and not item.low <= value <= item.high:
            return StatusError.DATA_RANGE
        if item.limit is not None and abs(value) > staged_value(item.limit):
            return StatusError.DATA_LIMIT
        return StatusError.NONE

    @staticmethod
    def _check_goal_position(value: int, staged_value) -> StatusError:
        if staged_value("operating_mode") == OperatingMode.POSITION:
            low, high = staged_value("min_position_limit"), staged_value("max_position_limit")
            return StatusError.NONE if low <= value <= high else StatusError.DATA_LIMIT
        return StatusError.NONE if abs(value) <= _EXTENDED_RANGE else StatusError.DATA_RANGE

    def _apply_side_effects(self, written: dict[str, int], before: dict[str, int], now: float) -> None:
        if "torque_enable" in written and written["torque_enable"] != before["torque_enable"]:
            if written["torque_enable"] == 1 and self._in_shutdown():
                # After a shutdown only REBOOT re-enables torque; the write itself is not an error.
                self._set("torque_enable", 0)
            elif written["torque_enable"] == 1:
                self._last_instruction_time = now
                if "goal_position" not in written:
                    self._hold_present()
            else:
                self._hold_present()
        if "operating_mode" in written and written["operating_mode"] != before["operating_mode"]:
            self._hold_present()
        if "bus_watchdog" in written:
            self._last_instruction_time = now
        if "goal_position" in written:
            self._profile.target = float(written["goal_position"])
            self._profile.fixed_limits = self._time_based_limits()

    # ----------------------------------------------------------------- pending (REG WRITE)
    def register_write(self, address: int, data: bytes) -> StatusError:
        error = self.check_write(address, data)
        if error == StatusError.NONE:
            self._pending_write = (address, bytes(data))
            self._set("registered_instruction", 1)
        return error

    def take_registered(self) -> tuple[int, bytes] | None:
        pending, self._pending_write = self._pending_write, None
        self._set("registered_instruction", 0)
        return pending

    # ------------------------------------------------------------ errors and the watchdog
    def _in_shutdown(self) -> bool:
        return bool(self.hardware_error & self.get("shutdown"))

    def inject_hardware_error(self, bits: int) -> None:
        """Set Hardware Error Status bits (e.g. 0x20 overload); Shutdown bits cut the torque."""
        self._injected_errors |= bits & 0x3F
        self._set("hardware_error_status", self._injected_errors)
        if self._in_shutdown() and self.torque_enabled:
            self._set("torque_enable", 0)
            self._hold_present()

    def clear_hardware_error(self) -> None:
        self._injected_errors = 0
        self._set("hardware_error_status", 0)

    def note_instruction(self, now: float) -> None:
        self._last_instruction_time = now

    def check_watchdog(self, now: float) -> bool:
        """Trip the Bus Watchdog if due; True when it tripped now."""
        period = self.get("bus_watchdog")
        if period <= 0 or not self.torque_enabled or self._last_instruction_time is None:
            return False
        if now - self._last_instruction_time <= period * WATCHDOG_UNIT_S:
            return False
        logger.info("servo %d: bus watchdog expired after %d ms", self.servo_id, period * 20)
        self._set("bus_watchdog", -1)
        # The stop applies Profile Velocity/Acceleration as 0: hold where the trajectory is.
        held = round(self._profile.position)
        self._profile.reset(float(held))
        self._set("goal_position", held)
        self._set("goal_velocity", 0)
        return True

    # ------------------------------------------------------------------------ profiles
    def _velocity_based_limits(self) -> tuple[float, float]:
        return velocity_based_limits(self.get("profile_velocity"), self.get("profile_acceleration"))

    def _time_based_limits(self) -> tuple[float, float] | None:
        """Time-based profile: arrive after Profile Velocity ms, accelerating for Profile Acceleration ms."""
        if not self.get("drive_mode") & _DRIVE_MODE_TIME_BASED:
            return None
        total_ms = self.get("profile_velocity")
        if total_ms == 0:
            return math.inf, math.inf
        accel_ms = min(self.get("profile_acceleration"), total_ms / 2)
        distance = abs(self._profile.target - self._profile.position)
        vmax = distance / ((total_ms - accel_ms) / 1000.0)
        amax = math.inf if accel_ms == 0 else vmax / (accel_ms / 1000.0)
        return max(vmax, 1e-9), amax

    def step(self, dt: float) -> None:
        """Advance the trajectory generator by dt seconds (simulation time)."""
        mode = self.operating_mode
        profile = self._profile
        if not self.torque_enabled or mode not in (*_POSITION_MODES, OperatingMode.VELOCITY):
            profile.reset(float(self.get("present_position")), self.get("present_velocity")
                          * _TICKS_PER_S_PER_VELOCITY_UNIT)
        elif mode == OperatingMode.VELOCITY:
            goal = self.get("goal_velocity") * _TICKS_PER_S_PER_VELOCITY_UNIT
            _, amax = self._velocity_based_limits()
            change = goal - profile.velocity
            if not math.isinf(amax):
                change = max(-amax * dt, min(amax * dt, change))
            profile.velocity += change
            profile.position += profile.velocity * dt
            profile.target = profile.position
        else:
            vmax, amax = profile.fixed_limits or self._velocity_based_limits()
            profile.step(dt, vmax, amax)
        self._set("position_trajectory", round(profile.position))
        self._set("velocity_trajectory", round(profile.velocity / _TICKS_PER_S_PER_VELOCITY_UNIT))

    def position_reference(self) -> tuple[bool, float]:
        """(torque enabled, profiled position reference in the motor frame): what the
        simulator's position-controlled joints need each physics step, without the rest of
        command()."""
        return self.torque_enabled, self._to_motor(self._profile.position)

    def command(self) -> ServoCommand:
        sign = self._sign()
        current = self.has("goal_current")
        torque_enabled, position_ticks = self.position_reference()
        return ServoCommand(
            servo_id=self.servo_id,
            torque_enabled=torque_enabled,
            operating_mode=self.operating_mode,
            position_ticks=position_ticks,
            velocity_units=sign * self._profile.velocity / _TICKS_PER_S_PER_VELOCITY_UNIT,
            goal_position_ticks=round(self._to_motor(self.get("goal_position"))),
            goal_current_units=sign * self.get("goal_current") if current else None,
            current_limit_units=self.get("current_limit") if current else None,
            goal_pwm=sign * self.get("goal_pwm"),
        )
