"""X-series control tables (Protocol 2.0 layout) of the servo models the emulator knows.

Addresses, sizes, access, defaults and ranges follow the ROBOTIS e-manual pages of the XM430-W350
and XL430-W250. Range rules: a value outside a fixed range is a Data Range Error; a value beyond
another item's limit (e.g. Goal Velocity vs Velocity Limit) is a Data Limit Error.

Plain module: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from armstack_common.servo_config import SERVO_MODELS, ServoModel

EEPROM_END = 64  # addresses below are EEPROM: writable only with torque off
TABLE_SIZE = 662  # last address is Indirect Data 56 (661)
INDIRECT_RANGE = (64, TABLE_SIZE - 1)  # what an Indirect Address may point at (RAM only)
# (first Indirect Address, first Indirect Data, count) of the two indirect banks.
INDIRECT_BANKS = ((168, 224, 28), (578, 634, 28))
BAUD_RATES = {0: 9600, 1: 57600, 2: 115200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000,
              7: 4_500_000}
BAUD_INDEX = {rate: index for index, rate in BAUD_RATES.items()}


@dataclass(frozen=True)
class Item:
    name: str
    address: int
    size: int
    writable: bool
    default: int = 0
    signed: bool = False
    low: int | None = None  # fixed range -> Data Range Error
    high: int | None = None
    limit: str | None = None  # |value| <= this item's value -> Data Limit Error

    @property
    def eeprom(self) -> bool:
        return self.address < EEPROM_END


def _rw(name: str, address: int, size: int, default: int = 0, low: int | None = None,
        high: int | None = None, *, signed: bool = False, limit: str | None = None) -> Item:
    return Item(name, address, size, True, default, signed, low, high, limit)


def _ro(name: str, address: int, size: int, default: int = 0, *, signed: bool = False) -> Item:
    return Item(name, address, size, False, default, signed)


def _common_items(model: ServoModel) -> list[Item]:
    """Items shared by the X430 models; model-specific ones are added by the callers."""
    items = [
        _ro("model_number", 0, 2, model.model_number),
        _ro("model_information", 2, 4),
        _ro("firmware_version", 6, 1, model.firmware_version),
        _rw("id", 7, 1, 1, 0, 252),
        _rw("baud_rate", 8, 1, 1, 0, 7),
        _rw("return_delay_time", 9, 1, 250, 0, 254),
        _rw("drive_mode", 10, 1, 0),  # bitmask, checked by the servo
        _rw("operating_mode", 11, 1, 3),  # set of modes, checked by the servo
        _rw("secondary_id", 12, 1, 255, 0, 255),
        _rw("protocol_type", 13, 1, 2, 1, 2),
        _rw("homing_offset", 20, 4, 0, -1_044_479, 1_044_479, signed=True),
        _rw("moving_threshold", 24, 4, 10, 0, 1023),
        _rw("pwm_limit", 36, 2, 885, 0, 885),
        _rw("max_position_limit", 48, 4, 4095, 0, 4095),
        _rw("min_position_limit", 52, 4, 0, 0, 4095),
        _rw("shutdown", 63, 1, 52, 0, 255),
        _rw("torque_enable", 64, 1, 0, 0, 1),
        _rw("led", 65, 1, 0, 0, 1),
        _rw("status_return_level", 68, 1, 2, 0, 2),
        _ro("registered_instruction", 69, 1),
        _ro("hardware_error_status", 70, 1),
        _rw("velocity_p_gain", 78, 2, 100, 0, 16383),
        _rw("position_i_gain", 82, 2, 0, 0, 16383),
        _rw("feedforward_2nd_gain", 88, 2, 0, 0, 16383),
        _rw("feedforward_1st_gain", 90, 2, 0, 0, 16383),
        _rw("bus_watchdog", 98, 1, 0, 0, 127, signed=True),
        _rw("goal_pwm", 100, 2, 0, signed=True, limit="pwm_limit"),
        _rw("goal_velocity", 104, 4, 0, signed=True, limit="velocity_limit"),
        _rw("profile_acceleration", 108, 4, 0, 0, 32767),
        _rw("profile_velocity", 112, 4, 0, 0, 32767),
        _rw("goal_position", 116, 4, 0, signed=True),  # range depends on the mode
        _ro("realtime_tick", 120, 2),
        _ro("moving", 122, 1),
        _ro("moving_status", 123, 1),
        _ro("present_pwm", 124, 2, signed=True),
        _ro("present_velocity", 128, 4, signed=True),
        _ro("present_position", 132, 4, signed=True),
        _ro("velocity_trajectory", 136, 4, signed=True),
        _ro("position_trajectory", 140, 4, signed=True),
        _ro("present_input_voltage", 144, 2, 120),
        _ro("present_temperature", 146, 1, 36),
    ]
    for first_address, first_data, count in INDIRECT_BANKS:
        for k in range(count):
            number = k + 1 if first_address == 168 else k + 29
            items.append(_rw(f"indirect_address_{number}", first_address + 2 * k, 2, first_data + k,
                             *INDIRECT_RANGE))
            items.append(_rw(f"indirect_data_{number}", first_data + k, 1, 0, 0, 255))
    return items


def _xm430_w350() -> list[Item]:
    model = SERVO_MODELS["XM430-W350"]
    return _common_items(model) + [
        _rw("temperature_limit", 31, 1, 80, 0, 100),
        _rw("max_voltage_limit", 32, 2, 160, 95, 160),
        _rw("min_voltage_limit", 34, 2, 95, 95, 160),
        _rw("current_limit", 38, 2, 1193, 0, 1193),
        _rw("velocity_limit", 44, 4, 200, 0, 1023),
        _rw("velocity_i_gain", 76, 2, 1920, 0, 16383),
        _rw("position_d_gain", 80, 2, 0, 0, 16383),
        _rw("position_p_gain", 84, 2, 800, 0, 16383),
        _rw("goal_current", 102, 2, 0, signed=True, limit="current_limit"),
        _ro("present_current", 126, 2, signed=True),
    ]


def _xl430_w250() -> list[Item]:
    model = SERVO_MODELS["XL430-W250"]
    return _common_items(model) + [
        _rw("temperature_limit", 31, 1, 72, 0, 100),
        _rw("max_voltage_limit", 32, 2, 140, 60, 140),
        _rw("min_voltage_limit", 34, 2, 60, 60, 140),
        _rw("velocity_limit", 44, 4, 415, 0, 1023),
        _rw("velocity_i_gain", 76, 2, 1000, 0, 16383),
        _rw("position_d_gain", 80, 2, 4000, 0, 16383),
        _rw("position_p_gain", 84, 2, 640, 0, 16383),
        _ro("present_load", 126, 2, signed=True),  # 0.1 % of maximum output
    ]


class ControlTable:
    """Item lookup for one model: by name and by every byte address it covers."""

    def __init__(self, model: ServoModel, items: list[Item]) -> None:
        self.model = model
        self.items = {item.name: item for item in items}
        # name -> (start, end, signed, low bound, high bound): the hot path of register access.
        self.layout = {
            item.name: (item.address, item.address + item.size, item.signed,
                        -(1 << (8 * item.size - 1)) if item.signed else 0,
                        (1 << (8 * item.size - (1 if item.signed else 0))) - 1)
            for item in items
        }
        self.item_at: list[Item | None] = [None] * TABLE_SIZE
        for item in items:
            for address in range(item.address, item.address + item.size):
                if self.item_at[address] is not None:
                    raise ValueError(f"{model.name}: {item.name} overlaps {self.item_at[address].name}")
                self.item_at[address] = item
        # What EmulatedServo.set_present writes: read through get() only after it is encoded.
        self.present_items = frozenset(("present_position", "present_velocity",
                                        self.effort_item.name, "moving"))
        self.indirect_data_slot = {}  # Indirect Data address -> its Indirect Address item address
        for first_address, first_data, count in INDIRECT_BANKS:
            for k in range(count):
                self.indirect_data_slot[first_data + k] = first_address + 2 * k

    @property
    def effort_item(self) -> Item:
        """Address 126: Present Current, or Present Load on models without a current sensor."""
        return self.item_at[126]

    def defaults(self) -> bytearray:
        memory = bytearray(TABLE_SIZE)
        for item in self.items.values():
            memory[item.address:item.address + item.size] = encode(item, item.default)
        return memory


def encode(item: Item, value: int) -> bytes:
    return int(value).to_bytes(item.size, "little", signed=item.signed)


def decode(item: Item, raw: bytes | bytearray) -> int:
    return int.from_bytes(raw, "little", signed=item.signed)


CONTROL_TABLES: dict[int, ControlTable] = {
    table.model.model_number: table
    for table in (
        ControlTable(SERVO_MODELS["XM430-W350"], _xm430_w350()),
        ControlTable(SERVO_MODELS["XL430-W250"], _xl430_w250()),
    )
}
