"""The arm's Dynamixel servo bus: a validated model of config/robot/dynamixel.yaml and unit conversions.

Both the driver (real bus) and the simulator (emulated bus) load this one file and convert
with the same functions, so a joint angle maps to the same servo ticks on both sides.

Joint <-> tick mapping (motor frame, as the servo's encoder counts with Homing Offset 0 and
Drive Mode 0; calibration lives here, not in servo EEPROM):

    ticks = offset_ticks + direction * ticks_per_unit * q

with ticks_per_unit = 4096 / (2 pi) ticks/rad for revolute joints and the stated
`ticks_per_metre` for the prismatic gripper joint (a linear map of the finger linkage).

Servo units (ROBOTIS X-series e-manual): velocity 0.229 rev/min per unit; current
2.69 mA per unit on current-sensing models (XM430); XL430 has no current sensor and reports
Present Load (126) in 0.1 % of its stall output, which is mapped to amperes through its stall
current so every joint has an effort channel in the same unit.

Plain module: no rclpy.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

logger = logging.getLogger(__name__)

TICKS_PER_REV = 4096
TICKS_PER_RAD = TICKS_PER_REV / (2.0 * math.pi)
VELOCITY_UNIT_RPM = 0.229
# Goal Position range in (current-based) extended position mode: +-256 rev.
EXTENDED_POSITION_RANGE = 1_048_575
PROFILE_MAX = 32_767
# X-series rates the dynamixel_sdk PortHandler can set (it refuses the servos' 4.5 Mbit/s).
SUPPORTED_BAUDRATES = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)


class OperatingMode(IntEnum):
    """Operating Mode (address 11) values of X-series servos."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


_MODE_BY_NAME = {mode.name.lower(): mode for mode in OperatingMode}


@dataclass(frozen=True)
class ServoModel:
    """Facts about one servo model that conversions and the emulator need."""

    name: str
    model_number: int
    firmware_version: int
    effort_unit_amps: float  # amperes per unit of address 126 (current, or load mapped via stall current)
    has_current_sensor: bool  # False: 126 is Present Load and Goal Current (102) does not exist
    operating_modes: frozenset[OperatingMode]


SERVO_MODELS: dict[str, ServoModel] = {
    model.name: model
    for model in (
        ServoModel(
            "XM430-W350", 1020, 46, 2.69e-3, True,
            frozenset(OperatingMode),
        ),
        # 0.1 % of the 1.4 A stall current at 12 V per unit of Present Load.
        ServoModel(
            "XL430-W250", 1060, 46, 1.4e-3, False,
            frozenset({OperatingMode.VELOCITY, OperatingMode.POSITION,
                       OperatingMode.EXTENDED_POSITION, OperatingMode.PWM}),
        ),
    )
}
SERVO_MODELS_BY_NUMBER = {model.model_number: model for model in SERVO_MODELS.values()}


class ServoConfigError(ValueError):
    """The bus configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class JointServo:
    """One joint driven by one servo."""

    joint: str
    servo_id: int
    model: ServoModel
    direction: int  # +1 or -1
    offset_ticks: int  # motor ticks at joint position 0
    ticks_per_unit: float  # ticks per rad (revolute) or per metre (prismatic)
    prismatic: bool
    operating_mode: OperatingMode
    profile_velocity: int  # servo units (0.229 rev/min), 0 = unlimited
    profile_acceleration: int  # servo units (214.577 rev/min^2), 0 = unlimited
    min_position: float  # joint units (rad or m)
    max_position: float
    goal_current_ma: float | None  # current bound in current-based position mode

    def to_ticks(self, position: float) -> int:
        return int(round(self.offset_ticks + self.direction * self.ticks_per_unit * position))

    def to_joint(self, ticks: float) -> float:
        return (ticks - self.offset_ticks) / (self.direction * self.ticks_per_unit)

    @property
    def goal_current_units(self) -> int | None:
        """goal_current_ma as Goal Current (102) units, for current-based position mode."""
        if self.goal_current_ma is None:
            return None
        return round(self.goal_current_ma / 1000.0 / self.model.effort_unit_amps)

    def position_limits_ticks(self) -> tuple[int, int]:
        """(min, max) motor ticks of the joint range; a reversed joint swaps the ends."""
        ends = sorted((self.to_ticks(self.min_position), self.to_ticks(self.max_position)))
        return ends[0], ends[1]


@dataclass(frozen=True)
class ServoBusConfig:
    """The whole bus: port settings and the joints in configuration order (J of them)."""

    port: str
    baudrate: int
    protocol_version: float
    return_delay_time_us: int
    joints: tuple[JointServo, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        _validate_bus(self)

    @property
    def joint_names(self) -> list[str]:
        return [j.joint for j in self.joints]

    @property
    def ids(self) -> list[int]:
        return [j.servo_id for j in self.joints]

    def by_joint(self, name: str) -> JointServo:
        for joint in self.joints:
            if joint.joint == name:
                return joint
        raise KeyError(f"{self.source}: no joint named {name!r}")

    def by_id(self, servo_id: int) -> JointServo:
        for joint in self.joints:
            if joint.servo_id == servo_id:
                return joint
        raise KeyError(f"{self.source}: no servo with id {servo_id}")

    # Vectorized conversions; arrays are (J,) in configuration order.
    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offsets = np.array([j.offset_ticks for j in self.joints], dtype=np.float64)
        scale = np.array([j.direction * j.ticks_per_unit for j in self.joints], dtype=np.float64)
        effort = np.array([j.direction * j.model.effort_unit_amps for j in self.joints])
        return offsets, scale, effort

    def _check(self, values: npt.ArrayLike, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (len(self.joints),):
            raise ValueError(f"{what} must have shape ({len(self.joints)},), got {array.shape}")
        return array

    def joint_to_ticks(self, positions: npt.ArrayLike) -> np.ndarray:
        """(J,) joint positions (rad / m) -> (J,) int64 motor ticks."""
        offsets, scale, _ = self._arrays
        return np.rint(offsets + scale * self._check(positions, "positions")).astype(np.int64)

    def ticks_to_joint(self, ticks: npt.ArrayLike) -> np.ndarray:
        """(J,) motor ticks -> (J,) joint positions (rad / m)."""
        offsets, scale, _ = self._arrays
        return (self._check(ticks, "ticks") - offsets) / scale

    def velocity_units_to_joint(self, units: npt.ArrayLike) -> np.ndarray:
        """(J,) Present Velocity units (0.229 rev/min) -> (J,) joint velocity (rad/s or m/s)."""
        _, scale, _ = self._arrays
        ticks_per_s = self._check(units, "velocity units") * VELOCITY_UNIT_RPM / 60.0 * TICKS_PER_REV
        return ticks_per_s / scale

    def joint_velocity_to_units(self, velocities: npt.ArrayLike) -> np.ndarray:
        """(J,) joint velocity -> (J,) velocity units (float; round before writing)."""
        _, scale, _ = self._arrays
        ticks_per_s = self._check(velocities, "velocities") * scale
        return ticks_per_s * 60.0 / (TICKS_PER_REV * VELOCITY_UNIT_RPM)

    def current_units_to_amps(self, units: npt.ArrayLike) -> np.ndarray:
        """(J,) address-126 units -> (J,) joint-frame motor current in amperes."""
        _, _, effort = self._arrays
        return self._check(units, "current units") * effort

    def amps_to_current_units(self, amps: npt.ArrayLike) -> np.ndarray:
        """(J,) joint-frame current in amperes -> (J,) address-126 units (float)."""
        _, _, effort = self._arrays
        return self._check(amps, "amps") / effort

    def clip_joint(self, positions: npt.ArrayLike) -> np.ndarray:
        """(J,) joint positions clipped to the configured joint limits."""
        lower = np.array([j.min_position for j in self.joints])
        upper = np.array([j.max_position for j in self.joints])
        return np.clip(self._check(positions, "positions"), lower, upper)


def velocity_units_to_rad_s(units: float) -> float:
    """Servo velocity units (0.229 rev/min) -> motor shaft rad/s."""
    return units * VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0


def _validate_bus(bus: ServoBusConfig) -> None:
    where = bus.source

    def fail(key: str, problem: str) -> None:
        raise ServoConfigError(f"{where}: {key}: {problem}")

    if bus.protocol_version != 2.0:
        fail("protocol_version", f"only 2.0 is supported, got {bus.protocol_version}")
    if bus.baudrate not in SUPPORTED_BAUDRATES:
        fail("baudrate", f"{bus.baudrate} is not an X-series rate {SUPPORTED_BAUDRATES}")
    if not 0 <= bus.return_delay_time_us <= 508 or bus.return_delay_time_us % 2:
        fail("return_delay_time_us", "must be an even number of microseconds in 0..508")
    if not bus.joints:
        fail("joints", "no joints configured")
    seen_ids: dict[int, str] = {}
    for joint in bus.joints:
        key = f"joints.{joint.joint}"
        if joint.servo_id in seen_ids:
            fail(f"{key}.id", f"id {joint.servo_id} already used by {seen_ids[joint.servo_id]}")
        seen_ids[joint.servo_id] = joint.joint
        _validate_joint(joint, lambda sub, problem, key=key: fail(f"{key}.{sub}", problem))
    if len({j.joint for j in bus.joints}) != len(bus.joints):
        fail("joints", "joint names must be unique")


def _validate_joint(joint: JointServo, fail) -> None:
    if not 0 <= joint.servo_id <= 252:
        fail("id", f"{joint.servo_id} outside 0..252")
    if joint.direction not in (1, -1):
        fail("direction", f"must be 1 or -1, got {joint.direction}")
    if not joint.ticks_per_unit > 0:
        fail("ticks_per_metre" if joint.prismatic else "ticks_per_unit", "must be positive")
    if joint.operating_mode not in joint.model.operating_modes:
        fail("operating_mode", f"{joint.operating_mode.name.lower()} not supported by {joint.model.name}")
    for name in ("profile_velocity", "profile_acceleration"):
        if not 0 <= getattr(joint, name) <= PROFILE_MAX:
            fail(name, f"{getattr(joint, name)} outside 0..{PROFILE_MAX}")
    if not joint.min_position < joint.max_position:
        fail("min_position", f"{joint.min_position} must be below max_position {joint.max_position}")
    low, high = joint.position_limits_ticks()
    if joint.operating_mode == OperatingMode.POSITION:
        bounds = (0, TICKS_PER_REV - 1)
    else:
        bounds = (-EXTENDED_POSITION_RANGE, EXTENDED_POSITION_RANGE)
    if low < bounds[0] or high > bounds[1]:
        fail("offset_ticks", f"joint range maps to ticks {low}..{high}, outside {bounds[0]}..{bounds[1]}"
             f" of {joint.operating_mode.name.lower()} mode")
    if joint.goal_current_ma is not None:
        if not joint.model.has_current_sensor:
            fail("goal_current_ma", f"{joint.model.name} has no current control")
        if not joint.goal_current_ma > 0:
            fail("goal_current_ma", "must be positive")


def _urdf_joints(urdf: Path) -> dict[str, tuple[str, float | None, float | None]]:
    """name -> (type, lower, upper) of every joint in the URDF."""
    root = ET.parse(urdf).getroot()
    joints = {}
    for element in root.iter("joint"):
        limit = element.find("limit")
        lower = upper = None
        if limit is not None and "lower" in limit.attrib and "upper" in limit.attrib:
            lower, upper = float(limit.attrib["lower"]), float(limit.attrib["upper"])
        joints[element.attrib["name"]] = (element.attrib.get("type", ""), lower, upper)
    return joints


_JOINT_KEYS = {
    "id", "model", "direction", "offset_ticks", "ticks_per_metre", "operating_mode",
    "profile_velocity", "profile_acceleration", "min_position", "max_position", "goal_current_ma",
}


def _joint_from_yaml(name: str, raw: dict, urdf_joints: dict | None, where: str) -> JointServo:
    key = f"joints.{name}"

    def fail(sub: str, problem: str) -> ServoConfigError:
        return ServoConfigError(f"{where}: {key}.{sub}: {problem}")

    if not isinstance(raw, dict):
        raise ServoConfigError(f"{where}: {key}: expected a mapping")
    unknown = set(raw) - _JOINT_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], "unknown key")
    for required in ("id", "model", "offset_ticks", "operating_mode"):
        if required not in raw:
            raise fail(required, "missing")
    model = SERVO_MODELS.get(raw["model"])
    if model is None:
        raise fail("model", f"unknown model {raw['model']!r}; known: {sorted(SERVO_MODELS)}")
    mode = _MODE_BY_NAME.get(str(raw["operating_mode"]))
    if mode is None:
        raise fail("operating_mode", f"{raw['operating_mode']!r} not one of {sorted(_MODE_BY_NAME)}")

    urdf_type, lower, upper = (urdf_joints or {}).get(name, (None, None, None))
    if urdf_joints is not None and urdf_type is None:
        raise ServoConfigError(f"{where}: {key}: no joint {name!r} in the URDF")
    prismatic = "ticks_per_metre" in raw
    if urdf_type is not None and (urdf_type == "prismatic") != prismatic:
        raise fail("ticks_per_metre", f"URDF joint is {urdf_type}: ticks_per_metre is required for "
                   "prismatic joints and not allowed otherwise")
    lower = raw.get("min_position", lower)
    upper = raw.get("max_position", upper)
    if lower is None or upper is None:
        raise fail("min_position", "not stated and no URDF <limit> to derive it from")
    goal_current = raw.get("goal_current_ma")
    return JointServo(
        joint=name,
        servo_id=_as_int(raw["id"], lambda p: fail("id", p)),
        model=model,
        direction=_as_int(raw.get("direction", 1), lambda p: fail("direction", p)),
        offset_ticks=_as_int(raw["offset_ticks"], lambda p: fail("offset_ticks", p)),
        ticks_per_unit=(_as_float(raw["ticks_per_metre"], lambda p: fail("ticks_per_metre", p))
                        if prismatic else TICKS_PER_RAD),
        prismatic=prismatic,
        operating_mode=mode,
        profile_velocity=_as_int(raw.get("profile_velocity", 0), lambda p: fail("profile_velocity", p)),
        profile_acceleration=_as_int(raw.get("profile_acceleration", 0),
                                     lambda p: fail("profile_acceleration", p)),
        min_position=_as_float(lower, lambda p: fail("min_position", p)),
        max_position=_as_float(upper, lambda p: fail("max_position", p)),
        goal_current_ma=None if goal_current is None else _as_float(
            goal_current, lambda p: fail("goal_current_ma", p)),
    )


def _as_int(value: object, fail) -> int:
    # bool is an int subclass and a float like 2.5 would silently truncate: refuse both.
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"expected an integer, got {value!r}")
    return value


def _as_float(value: object, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"expected a number, got {value!r}")
    return float(value)


def load_servo_config(path: str | Path, urdf: str | Path | None = None) -> ServoBusConfig:
    """Load and validate a bus configuration.

    Joint limits not stated in the file come from the URDF's <limit> elements (the one home of
    the kinematics); with `urdf` given, joint names and types are checked against it too.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ServoConfigError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ServoConfigError(f"{where}: expected a mapping at the top level")
    for required in ("port", "baudrate", "joints"):
        if required not in raw:
            raise ServoConfigError(f"{where}: {required}: missing")
    unknown = set(raw) - {"port", "baudrate", "protocol_version", "return_delay_time_us", "joints"}
    if unknown:
        raise ServoConfigError(f"{where}: {sorted(unknown)[0]}: unknown key")
    if not isinstance(raw["joints"], dict):
        raise ServoConfigError(f"{where}: joints: expected a mapping joint name -> servo")
    urdf_joints = _urdf_joints(Path(urdf)) if urdf is not None else None
    joints = tuple(
        _joint_from_yaml(str(name), entry, urdf_joints, where) for name, entry in raw["joints"].items()
    )
    def fail(key: str):
        return lambda problem: ServoConfigError(f"{where}: {key}: {problem}")

    return ServoBusConfig(
        port=str(raw["port"]),
        baudrate=_as_int(raw["baudrate"], fail("baudrate")),
        protocol_version=_as_float(raw.get("protocol_version", 2.0), fail("protocol_version")),
        return_delay_time_us=_as_int(raw.get("return_delay_time_us", 0), fail("return_delay_time_us")),
        joints=joints,
        source=where,
    )


def load_default_servo_config() -> ServoBusConfig:
    """config/robot/dynamixel.yaml with limits from config/robot/arm.urdf."""
    from armstack_common import paths

    return load_servo_config(paths.config_file("robot/dynamixel.yaml"), paths.urdf_path())
