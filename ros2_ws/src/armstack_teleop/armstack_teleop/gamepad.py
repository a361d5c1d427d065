"""Gamepad teleoperation: from the pad's state to end-effector velocities, gripper and episode events.

Names follow the Linux gamepad API (kernel Documentation/input/gamepad.rst), which the
kernel drivers of the common pads (xpad, hid-sony, hid-nintendo, hid-playstation) map to:
sticks `left_x/left_y/right_x/right_y` in [-1, 1] (y positive when pushed down, as the
kernel reports), triggers `left_trigger/right_trigger` in [0, 1], d-pad `hat_x/hat_y` in
{-1, 0, 1}; buttons `south east north west tl tr select start mode thumbl thumbr`.

Layout (Xbox names):

    left stick             x (push up: forward) and y (push left: +y)
    right stick            z (push up: up) and yaw (push left: counter-clockwise)
    d-pad up / down        pitch + / -
    d-pad left / right     roll + / -
    right trigger          gripper: released = open, pulled = closed (absolute)
    LB / RB                speed x0.5 / x2
    START                  start a take when idle, save it when recording
    BACK (select)          discard the take (redo)
    MODE (Xbox / PS)       end the session

Velocities are integrated by the caller into an `EETarget` over the tick's dt. Buttons
act on their press (rising edge) only. Plain module: no rclpy, no device access.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from armstack_teleop.episode import Event, State
from armstack_teleop.jog import EETarget

logger = logging.getLogger(__name__)

STICK_AXES = ("left_x", "left_y", "right_x", "right_y")
TRIGGER_AXES = ("left_trigger", "right_trigger")
HAT_AXES = ("hat_x", "hat_y")
BUTTONS = ("south", "east", "north", "west", "tl", "tr", "select", "start", "mode", "thumbl", "thumbr")


@dataclass
class GamepadState:
    """Latest value of each axis (absent until the pad first reported it) and pressed buttons."""

    axes: dict[str, float] = field(default_factory=dict)
    pressed: set[str] = field(default_factory=set)

    def axis(self, name: str) -> float:
        return self.axes.get(name, 0.0)


@dataclass(frozen=True)
class GamepadConfig:
    linear_speed: float = 0.10  # m/s at full stick
    angular_speed: float = 0.8  # rad/s at full stick / d-pad
    deadzone: float = 0.12  # of the stick range, where sticks rest and drift
    min_speed: float = 0.25  # bounds of the speed multiplier set with LB / RB
    max_speed: float = 2.0

    def __post_init__(self) -> None:
        for name in ("linear_speed", "angular_speed", "min_speed", "max_speed"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"GamepadConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"GamepadConfig.deadzone must be in [0, 1), got {self.deadzone}")
        if not self.min_speed <= 1.0 <= self.max_speed:
            raise ValueError("GamepadConfig: need min_speed <= 1 <= max_speed")


@dataclass(frozen=True)
class GamepadCommand:
    """One tick's output: velocities (base_link), gripper opening or None, episode events."""

    linear: np.ndarray  # (3,) m/s
    angular: np.ndarray  # (3,) rad/s: yaw (base z), pitch (gripper y), roll (gripper x)
    gripper: float | None  # m; None: the trigger has not reported yet, keep the target's
    events: tuple[Event, ...] = ()


def apply_deadzone(value: float, deadzone: float) -> float:
    """0 inside the deadzone, then rescaled so the output still spans [-1, 1] continuously."""
    magnitude = abs(value)
    if magnitude <= deadzone:
        return 0.0
    return float(np.sign(value) * min((magnitude - deadzone) / (1.0 - deadzone), 1.0))


class GamepadMapping:
    """Turns successive `GamepadState`s into `GamepadCommand`s (see the module layout)."""

    def __init__(self, config: GamepadConfig, gripper_open: float, gripper_closed: float) -> None:
        if not gripper_open > gripper_closed:
            raise ValueError("GamepadMapping: gripper_open must exceed gripper_closed")
        self.config = config
        self.gripper_open = gripper_open
        self.gripper_closed = gripper_closed
        self.speed = 1.0
        self._previous: set[str] = set()

    def reset(self) -> None:
        """Forget held buttons (after a reconnect, a button still held is not a new press)."""
        self._previous = set()

    def update(self, state: GamepadState, episode_state: State) -> GamepadCommand:
        pressed = state.pressed - self._previous
        self._previous = set(state.pressed)
        events: list[Event] = []
        for button in sorted(pressed):
            if button == "tl":
                self.speed = max(self.speed * 0.5, self.config.min_speed)
            elif button == "tr":
                self.speed = min(self.speed * 2.0, self.config.max_speed)
            elif button == "start":
                events.append(Event.SAVE if episode_state is State.RECORDING else Event.START)
            elif button == "select":
                events.append(Event.DISCARD)
            elif button == "mode":
                events.append(Event.END)
        dz = self.config.deadzone
        stick = {name: apply_deadzone(state.axis(name), dz) for name in STICK_AXES}
        v = self.config.linear_speed * self.speed
        w = self.config.angular_speed * self.speed
        # Stick y is positive pushed down; pushing up means forward / up.
        linear = v * np.array([-stick["left_y"], -stick["left_x"], -stick["right_y"]])
        angular = w * np.array([-stick["right_x"], -state.axis("hat_y"), -state.axis("hat_x")])
        gripper = None
        if "right_trigger" in state.axes:
            pull = min(max(state.axes["right_trigger"], 0.0), 1.0)
            gripper = self.gripper_open + pull * (self.gripper_closed - self.gripper_open)
        return GamepadCommand(linear, angular, gripper, tuple(events))


def apply_to_target(command: GamepadCommand, target: EETarget, dt: float) -> None:
    """Integrate one tick of `command` over `dt` seconds into the jog target."""
    if np.any(command.linear):
        target.translate(command.linear * dt)
    if np.any(command.angular):
        yaw, pitch, roll = command.angular * dt
        target.rotate(yaw, pitch, roll)
    if command.gripper is not None:
        target.set_gripper(command.gripper)
