"""Keyboard teleoperation from a terminal: key decoding, the key map, and raw terminal input.

A terminal delivers no key-release events, only characters (repeated by the terminal's
auto-repeat while a key is held), so every key press is one jog step; holding a key jogs at
the auto-repeat rate. Key layout (`KEYMAP`, also printed by `h`):

    w / s, up / down       +x / -x (forward / back, base_link)
    a / d, left / right    +y / -y
    r / f                  +z / -z
    q / e                  yaw + / - (about base_link z)
    t / g                  pitch + / - (about the gripper's y axis)
    z / x                  roll + / - (about the gripper's x axis)
    space                  gripper: toggle fully open / closed
    [ / ]                  gripper: close / open one step
    + (=) / -              step size x2 / x0.5
    enter                  start a take when idle, save it when recording
    backspace              discard the take (it is redone under the same episode index)
    ctrl-c / ctrl-d        end the session
    h / ?                  help

`KeyDecoder` turns bytes into key names, `KeyboardTeleop` applies keys to an `EETarget` and
returns episode events, and `TerminalKeys` puts a TTY into raw input mode (termios) and reads
it without blocking. Only `TerminalKeys` needs a terminal, so the rest is tested by feeding
bytes. Plain module: no rclpy.
"""

from __future__ import annotations

import logging
import os
import select
import termios
from dataclasses import dataclass
from typing import Any

from armstack_teleop.episode import Event, State
from armstack_teleop.jog import EETarget

logger = logging.getLogger(__name__)

_ESC = 0x1B
# CSI and SS3 final bytes of the arrow keys (normal and application cursor mode).
_ARROWS = {ord("A"): "up", ord("B"): "down", ord("C"): "right", ord("D"): "left"}
_CONTROL = {
    0x0D: "enter", 0x0A: "enter", 0x7F: "backspace", 0x08: "backspace",
    0x03: "ctrl-c", 0x04: "ctrl-d", 0x09: "tab",
}


class KeyDecoder:
    """Bytes from a terminal -> key names ("w", "enter", "up", "esc", ...).

    Escape sequences may be split across reads, so an incomplete one is kept until the next
    `feed`; `flush()` (called when a read brought nothing new) turns a lone ESC into "esc".
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        buffer = self._pending + data
        self._pending = b""
        keys: list[str] = []
        i = 0
        while i < len(buffer):
            byte = buffer[i]
            if byte == _ESC:
                consumed, key = self._escape(buffer[i:])
                if consumed == 0:  # incomplete: wait for the rest
                    self._pending = buffer[i:]
                    break
                if key is not None:
                    keys.append(key)
                i += consumed
                continue
            if byte in _CONTROL:
                keys.append(_CONTROL[byte])
            elif 0x20 <= byte < 0x7F:
                keys.append("space" if byte == 0x20 else chr(byte))
            i += 1
        return keys

    def flush(self) -> list[str]:
        """Keys held back waiting for the rest of an escape sequence that never came."""
        pending, self._pending = self._pending, b""
        return ["esc"] if pending[:1] == bytes([_ESC]) else []

    @staticmethod
    def _escape(seq: bytes) -> tuple[int, str | None]:
        """(bytes consumed, key) for a sequence starting with ESC; (0, None) if incomplete."""
        if len(seq) < 2:
            return 0, None
        if seq[1] not in (ord("["), ord("O")):
            return 1, "esc"  # ESC then an ordinary key: both count
        # CSI / SS3: parameter bytes, then a final byte in 0x40..0x7E.
        for j in range(2, len(seq)):
            if 0x40 <= seq[j] <= 0x7E:
                return j + 1, _ARROWS.get(seq[j]) if j == 2 else None
        return 0, None


@dataclass(frozen=True)
class Jog:
    """Unit jog: a step along base_link axes and (yaw, pitch, roll) step directions."""

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)


KEYMAP: dict[str, Any] = {
    "w": Jog((1, 0, 0)), "up": Jog((1, 0, 0)),
    "s": Jog((-1, 0, 0)), "down": Jog((-1, 0, 0)),
    "a": Jog((0, 1, 0)), "left": Jog((0, 1, 0)),
    "d": Jog((0, -1, 0)), "right": Jog((0, -1, 0)),
    "r": Jog((0, 0, 1)), "f": Jog((0, 0, -1)),
    "q": Jog(rotation=(1, 0, 0)), "e": Jog(rotation=(-1, 0, 0)),
    "t": Jog(rotation=(0, 1, 0)), "g": Jog(rotation=(0, -1, 0)),
    "z": Jog(rotation=(0, 0, 1)), "x": Jog(rotation=(0, 0, -1)),
    "space": "gripper_toggle", "[": "gripper_close", "]": "gripper_open",
    "+": "faster", "=": "faster", "-": "slower",
    "enter": "start_or_save", "backspace": Event.DISCARD,
    "ctrl-c": Event.END, "ctrl-d": Event.END,
    "h": "help", "?": "help",
}

HELP = (
    "keys: w/s a/d (or arrows) r/f: move x y z | q/e t/g z/x: yaw pitch roll | "
    "space: gripper open/close, [ ]: gripper step | + -: step size | "
    "enter: start/save take | backspace: discard take | ctrl-c: end session | h: help"
)


@dataclass(frozen=True)
class KeyboardConfig:
    """Step sizes of one key press (at speed 1)."""

    linear_step: float = 0.005  # m
    angular_step: float = 0.05  # rad
    gripper_step: float = 0.004  # m
    min_speed: float = 0.25  # bounds of the step multiplier set with + / -
    max_speed: float = 4.0

    def __post_init__(self) -> None:
        for name in ("linear_step", "angular_step", "gripper_step", "min_speed", "max_speed"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"KeyboardConfig.{name} must be > 0, got {getattr(self, name)}")
        if not self.min_speed <= 1.0 <= self.max_speed:
            raise ValueError("KeyboardConfig: need min_speed <= 1 <= max_speed")


@dataclass(frozen=True)
class KeyResult:
    """What a key did: an episode event to apply, and/or a line to show the operator."""

    event: Event | None = None
    message: str | None = None


class KeyboardTeleop:
    """Applies keys to the jog target (`target` None: episode keys only)."""

    def __init__(self, config: KeyboardConfig, target: EETarget | None) -> None:
        self.config = config
        self.target = target
        self.speed = 1.0

    def handle(self, key: str, state: State) -> KeyResult:
        action = KEYMAP.get(key)
        if action is None:
            return KeyResult()
        if isinstance(action, Event):
            return KeyResult(event=action)
        if action == "start_or_save":
            return KeyResult(event=Event.SAVE if state is State.RECORDING else Event.START)
        if action == "help":
            return KeyResult(message=HELP)
        if action in ("faster", "slower"):
            factor = 2.0 if action == "faster" else 0.5
            self.speed = min(max(self.speed * factor, self.config.min_speed), self.config.max_speed)
            return KeyResult(message=f"step x{self.speed:g}: {self.config.linear_step * self.speed * 1000:.1f} mm, "
                                     f"{self.config.angular_step * self.speed:.3f} rad")
        return self._move(action)

    def _move(self, action: Jog | str) -> KeyResult:
        if self.target is None:
            return KeyResult()
        if not self.target.synced:
            return KeyResult(message="no measured arm pose yet (joint_states): key ignored")
        if isinstance(action, Jog):
            self.target.translate([v * self.config.linear_step * self.speed for v in action.translation])
            yaw, pitch, roll = (v * self.config.angular_step * self.speed for v in action.rotation)
            if yaw or pitch or roll:
                self.target.rotate(yaw, pitch, roll)
        elif action == "gripper_toggle":
            self.target.toggle_gripper()
        else:
            sign = 1.0 if action == "gripper_open" else -1.0
            self.target.move_gripper(sign * self.config.gripper_step * self.speed)
        return KeyResult()


class TerminalKeys:
    """A terminal in raw input mode, read without blocking; restored on close.

    Raw input: no line buffering, no echo, and ctrl-c / ctrl-s arrive as keys rather than
    signals, so ending the session by key is graceful. Output processing stays on, so log
    lines printed to the same terminal still start at the left margin.
    """

    def __init__(self, fd: int) -> None:
        if not os.isatty(fd):
            raise OSError(f"file descriptor {fd} is not a terminal")
        self.fd = fd
        self._saved: list[Any] | None = None
        self.decoder = KeyDecoder()

    def __enter__(self) -> TerminalKeys:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        self._saved = termios.tcgetattr(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[0] &= ~(termios.IXON | termios.ICRNL | termios.INLCR | termios.IGNCR)  # iflag
        attrs[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)  # lflag
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def close(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
            self._saved = None

    def read_keys(self) -> list[str]:
        """Every key typed since the last call (never blocks)."""
        data = b""
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 1024)
            if not chunk:  # end of file: the terminal went away
                break
            data += chunk
        return self.decoder.feed(data) if data else self.decoder.flush()
