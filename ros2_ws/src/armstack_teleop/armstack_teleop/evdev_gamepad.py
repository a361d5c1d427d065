"""A gamepad read through Linux evdev (/dev/input/event*), headless: no display, no SDL.

`GamepadEventDecoder` turns raw input events (type, code, value) into a `GamepadState`,
normalizing each axis with the range the device reports for it; it needs no device and is
tested with synthetic events. `EvdevGamepad` finds and opens the device with python-evdev
(`evdev` module; PyPI wheel `evdev-binary`, Debian/Ubuntu `python3-evdev`) and feeds the
decoder without blocking. When no device qualifies, `open` raises `GamepadNotFound` whose
message says what was looked at, so the node can report "no gamepad found" and retry.

Event codes are those of linux/input-event-codes.h (kernel ABI, stable).
Plain module: no rclpy.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from dataclasses import dataclass
from typing import Any

from armstack_teleop.gamepad import GamepadState

logger = logging.getLogger(__name__)

EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
SYN_REPORT, SYN_DROPPED = 0, 3

ABS_AXES: dict[int, str] = {
    0x00: "left_x", 0x01: "left_y", 0x03: "right_x", 0x04: "right_y",
    0x02: "left_trigger", 0x05: "right_trigger", 0x10: "hat_x", 0x11: "hat_y",
}
KEY_BUTTONS: dict[int, str] = {
    0x130: "south", 0x131: "east", 0x133: "north", 0x134: "west", 0x136: "tl", 0x137: "tr",
    0x13A: "select", 0x13B: "start", 0x13C: "mode", 0x13D: "thumbl", 0x13E: "thumbr",
}
BTN_SOUTH, ABS_X = 0x130, 0x00


class GamepadNotFound(RuntimeError):
    """No usable gamepad; the message says where it was looked for."""


class GamepadDisconnected(RuntimeError):
    """The open gamepad went away (unplugged, powered off)."""


@dataclass(frozen=True)
class AxisRange:
    minimum: int
    maximum: int


class GamepadEventDecoder:
    """Raw evdev events -> `GamepadState` (axes normalized; see armstack_teleop.gamepad)."""

    def __init__(self, ranges: dict[int, AxisRange]) -> None:
        self.ranges = dict(ranges)  # ABS code -> range the device reports
        self.state = GamepadState()
        self.dropping = False  # between SYN_DROPPED and the next SYN_REPORT

    def normalize(self, code: int, value: int) -> float:
        name = ABS_AXES[code]
        span = self.ranges.get(code)
        if name in ("hat_x", "hat_y") or span is None or span.maximum <= span.minimum:
            return float(max(-1, min(1, value)))
        fraction = (value - span.minimum) / (span.maximum - span.minimum)  # [0, 1]
        if name.endswith("trigger"):
            return float(min(max(fraction, 0.0), 1.0))
        return float(min(max(2.0 * fraction - 1.0, -1.0), 1.0))

    def handle(self, ev_type: int, code: int, value: int) -> bool:
        """Apply one event; True when the caller must now `load` a full snapshot.

        After SYN_DROPPED (the kernel's buffer overflowed) events up to the next SYN_REPORT
        are incomplete and ignored; then the device's state is read afresh
        (kernel Documentation/input/event-codes.rst).
        """
        if ev_type == EV_SYN:
            if code == SYN_DROPPED:
                self.dropping = True
            elif code == SYN_REPORT and self.dropping:
                return True
            return False
        if self.dropping:
            return False
        if ev_type == EV_ABS and code in ABS_AXES:
            self.state.axes[ABS_AXES[code]] = self.normalize(code, value)
        elif ev_type == EV_KEY and code in KEY_BUTTONS:
            # value 2 is auto-repeat of a held key: still pressed.
            if value:
                self.state.pressed.add(KEY_BUTTONS[code])
            else:
                self.state.pressed.discard(KEY_BUTTONS[code])
        return False

    def load(self, axis_values: dict[int, int], active_keys: list[int]) -> None:
        """Replace the state with a full snapshot (at open and after SYN_DROPPED)."""
        self.state = GamepadState()
        for code, value in axis_values.items():
            if code in ABS_AXES:
                self.state.axes[ABS_AXES[code]] = self.normalize(code, value)
        self.state.pressed = {KEY_BUTTONS[k] for k in active_keys if k in KEY_BUTTONS}
        self.dropping = False


def is_gamepad(capabilities: dict[int, list[Any]]) -> bool:
    """A device with the gamepad's south button and a left stick x axis."""
    keys = capabilities.get(EV_KEY, [])
    axes = [entry[0] if isinstance(entry, tuple) else entry for entry in capabilities.get(EV_ABS, [])]
    return BTN_SOUTH in keys and ABS_X in axes


def _evdev() -> Any:
    try:
        import evdev
    except ImportError as exc:
        raise GamepadNotFound(
            "no gamepad found: python evdev is not installed (pip install evdev-binary, or apt "
            "install python3-evdev)"
        ) from exc
    return evdev


class EvdevGamepad:
    """An open evdev gamepad; `poll()` drains its pending events into the state."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.name = str(device.name)
        self.path = str(device.path)
        caps = device.capabilities(absinfo=True)
        ranges = {code: AxisRange(info.min, info.max) for code, info in caps.get(EV_ABS, [])}
        self.decoder = GamepadEventDecoder(ranges)
        self._resync()

    @classmethod
    def open(cls, path: str = "") -> EvdevGamepad:
        """The device at `path`, or the first gamepad among /dev/input/event* when empty."""
        evdev = _evdev()
        if path:
            try:
                device = evdev.InputDevice(path)
            except OSError as exc:
                raise GamepadNotFound(f"no gamepad found at {path}: {exc.strerror or exc}") from exc
            if not is_gamepad(device.capabilities()):
                device.close()
                raise GamepadNotFound(f"no gamepad found at {path}: {device.name!r} has no gamepad buttons/sticks")
            return cls(device)
        paths = evdev.list_devices()
        for candidate in paths:
            try:
                device = evdev.InputDevice(candidate)
            except OSError:
                continue  # unreadable (permissions) or vanished between listing and opening
            if is_gamepad(device.capabilities()):
                return cls(device)
            device.close()
        raise GamepadNotFound(
            f"no gamepad found: {len(paths)} readable input device(s) under /dev/input, none with "
            "gamepad buttons and sticks (is it connected? is the user in the 'input' group?)"
        )

    def _resync(self) -> None:
        values = {code: self.device.absinfo(code).value for code in self.decoder.ranges}
        self.decoder.load(values, list(self.device.active_keys()))

    def poll(self) -> GamepadState:
        """Apply every event waiting on the device; never blocks."""
        try:
            while (event := self.device.read_one()) is not None:
                if self.decoder.handle(event.type, event.code, event.value):
                    self._resync()
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EIO, errno.EBADF):
                raise GamepadDisconnected(f"gamepad {self.name!r} at {self.path} disconnected") from exc
            raise
        return self.decoder.state

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already gone with the device
            self.device.close()
