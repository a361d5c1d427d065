"""Gamepad teleop with synthetic input: the mapping, the evdev event decoder, device handling."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from armstack_teleop.episode import Event, State
from armstack_teleop.evdev_gamepad import (
    EV_ABS, EV_KEY, EV_SYN, SYN_DROPPED, SYN_REPORT, AxisRange, EvdevGamepad, GamepadDisconnected,
    GamepadEventDecoder, GamepadNotFound, is_gamepad,
)
from armstack_teleop.gamepad import GamepadConfig, GamepadMapping, GamepadState, apply_deadzone, apply_to_target
from armstack_teleop.jog import EETarget, JogConfig
from armstack_teleop.sources import GamepadSource

OPEN, CLOSED = 0.034, 0.0
ABS_X, ABS_Y, ABS_Z, ABS_RX, ABS_RY, ABS_RZ, HAT_X, HAT_Y = 0, 1, 2, 3, 4, 5, 0x10, 0x11
BTN_SOUTH, BTN_TL, BTN_TR, BTN_SELECT, BTN_START, BTN_MODE = 0x130, 0x136, 0x137, 0x13A, 0x13B, 0x13C


def mapping() -> GamepadMapping:
    return GamepadMapping(GamepadConfig(deadzone=0.1), OPEN, CLOSED)


@pytest.mark.parametrize(
    ("value", "expected"), [(0.05, 0.0), (-0.1, 0.0), (0.55, 0.5), (-1.0, -1.0), (1.0, 1.0), (-0.325, -0.25)]
)
def test_deadzone(value: float, expected: float) -> None:
    assert apply_deadzone(value, 0.1) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("axes", "linear", "angular"),
    [
        ({"left_y": -1.0}, (1, 0, 0), (0, 0, 0)),  # left stick up: forward
        ({"left_x": -1.0}, (0, 1, 0), (0, 0, 0)),  # left stick left: +y
        ({"right_y": -1.0}, (0, 0, 1), (0, 0, 0)),  # right stick up: up
        ({"right_x": -1.0}, (0, 0, 0), (1, 0, 0)),  # right stick left: yaw +
        ({"hat_y": -1.0}, (0, 0, 0), (0, 1, 0)),  # d-pad up: pitch +
        ({"hat_x": 1.0}, (0, 0, 0), (0, 0, -1)),  # d-pad right: roll -
        ({"left_x": 0.05, "right_y": -0.08}, (0, 0, 0), (0, 0, 0)),  # drift inside the deadzone
    ],
)
def test_stick_and_dpad_directions(axes, linear, angular) -> None:
    cfg = GamepadConfig(deadzone=0.1)
    command = mapping().update(GamepadState(axes=axes), State.IDLE)
    np.testing.assert_allclose(command.linear, np.array(linear) * cfg.linear_speed)
    np.testing.assert_allclose(command.angular, np.array(angular) * cfg.angular_speed)


@pytest.mark.parametrize(("pull", "gripper"), [(0.0, OPEN), (1.0, CLOSED), (0.5, OPEN / 2), (1.3, CLOSED)])
def test_right_trigger_sets_the_gripper(pull: float, gripper: float) -> None:
    command = mapping().update(GamepadState(axes={"right_trigger": pull}), State.IDLE)
    assert command.gripper == pytest.approx(gripper)


def test_gripper_untouched_until_the_trigger_reports() -> None:
    assert mapping().update(GamepadState(axes={"left_x": 0.5}), State.IDLE).gripper is None


@pytest.mark.parametrize(
    ("button", "state", "event"),
    [("start", State.IDLE, Event.START), ("start", State.RECORDING, Event.SAVE),
     ("select", State.RECORDING, Event.DISCARD), ("mode", State.IDLE, Event.END)],
)
def test_buttons_fire_once_per_press(button: str, state: State, event: Event) -> None:
    m = mapping()
    assert m.update(GamepadState(pressed={button}), state).events == (event,)
    assert m.update(GamepadState(pressed={button}), state).events == ()  # still held
    assert m.update(GamepadState(), state).events == ()  # released
    assert m.update(GamepadState(pressed={button}), state).events == (event,)  # pressed again


def test_reset_forgets_held_buttons() -> None:
    m = mapping()
    m.update(GamepadState(pressed={"start"}), State.IDLE)
    m.reset()
    assert m.update(GamepadState(pressed={"start"}), State.IDLE).events == (Event.START,)


def test_shoulder_buttons_scale_speed_within_bounds() -> None:
    m = mapping()
    for k in range(6):
        m.update(GamepadState(pressed={"tr"} if k % 2 == 0 else set()), State.IDLE)
    assert m.speed == GamepadConfig().max_speed
    command = m.update(GamepadState(axes={"left_y": -1.0}), State.IDLE)
    assert command.linear[0] == pytest.approx(GamepadConfig().linear_speed * GamepadConfig().max_speed)
    for k in range(8):
        m.update(GamepadState(pressed={"tl"} if k % 2 == 0 else set()), State.IDLE)
    assert m.speed == GamepadConfig().min_speed


def test_velocities_integrate_into_the_target() -> None:
    target = EETarget(JogConfig())
    pose = np.eye(4)
    pose[:3, 3] = (0.25, 0.0, 0.15)
    target.sync(pose, 0.02)
    command = mapping().update(GamepadState(axes={"left_y": -1.0, "right_trigger": 1.0}), State.IDLE)
    apply_to_target(command, target, 0.02)
    assert target.pose[0, 3] == pytest.approx(0.25 + GamepadConfig().linear_speed * 0.02)
    assert target.gripper == CLOSED


# ---------------------------------------------------------------- evdev events -> state
RANGES = {ABS_X: AxisRange(-32768, 32767), ABS_Y: AxisRange(-32768, 32767), ABS_RZ: AxisRange(0, 1023),
          ABS_RX: AxisRange(0, 255), HAT_X: AxisRange(-1, 1)}


@pytest.mark.parametrize(
    ("code", "value", "name", "expected"),
    [(ABS_X, -32768, "left_x", -1.0), (ABS_X, 32767, "left_x", 1.0), (ABS_Y, 0, "left_y", 0.0),
     (ABS_RZ, 1023, "right_trigger", 1.0), (ABS_RZ, 0, "right_trigger", 0.0),
     (ABS_RX, 128, "right_x", 0.0039), (HAT_X, -1, "hat_x", -1.0)],
)
def test_axis_normalization(code: int, value: int, name: str, expected: float) -> None:
    decoder = GamepadEventDecoder(RANGES)
    decoder.handle(EV_ABS, code, value)
    assert decoder.state.axes[name] == pytest.approx(expected, abs=1e-3)


def test_buttons_press_release_and_repeat() -> None:
    decoder = GamepadEventDecoder(RANGES)
    decoder.handle(EV_KEY, BTN_START, 1)
    decoder.handle(EV_KEY, BTN_SOUTH, 2)  # auto-repeat value: held
    assert decoder.state.pressed == {"start", "south"}
    decoder.handle(EV_KEY, BTN_START, 0)
    decoder.handle(EV_KEY, 0x2C0, 1)  # a key that is not a gamepad button
    assert decoder.state.pressed == {"south"}


def test_dropped_events_are_ignored_until_the_next_report() -> None:
    decoder = GamepadEventDecoder(RANGES)
    decoder.handle(EV_ABS, ABS_X, 32767)
    assert not decoder.handle(EV_SYN, SYN_DROPPED, 0)
    assert not decoder.handle(EV_ABS, ABS_X, -32768)  # incomplete: ignored
    assert decoder.state.axes["left_x"] == pytest.approx(1.0)
    assert decoder.handle(EV_SYN, SYN_REPORT, 0)  # now the caller must load a snapshot
    decoder.load({ABS_X: 0, ABS_RZ: 1023}, [BTN_MODE])
    assert not decoder.dropping
    assert decoder.state.axes == {"left_x": pytest.approx(0.0, abs=1e-4), "right_trigger": 1.0}
    assert decoder.state.pressed == {"mode"}


@pytest.mark.parametrize(
    ("caps", "expected"),
    [({EV_KEY: [BTN_SOUTH, BTN_START], EV_ABS: [(ABS_X, None), (ABS_Y, None)]}, True),
     ({EV_KEY: [BTN_SOUTH], EV_ABS: [ABS_X]}, True),
     ({EV_KEY: [30, 31, 32]}, False),  # a keyboard
     ({EV_KEY: [0x110], EV_ABS: [(ABS_X, None)]}, False)],  # a mouse-like device
)
def test_is_gamepad(caps, expected: bool) -> None:
    assert is_gamepad(caps) is expected


Info = namedtuple("Info", "value min max")
InputEvent = namedtuple("InputEvent", "type code value")


class FakeDevice:
    """What EvdevGamepad uses of evdev.InputDevice."""

    name, path = "Fake Pad", "/dev/input/event42"

    def __init__(self, events: list[InputEvent], unplug_after: bool = False) -> None:
        self.values = {ABS_X: 0, ABS_Y: 0, ABS_RZ: 0}
        self.keys: list[int] = []
        self.events = list(events)
        self.unplug_after = unplug_after
        self.closed = False

    def capabilities(self, absinfo: bool = False):
        ranges = {ABS_X: (-32768, 32767), ABS_Y: (-32768, 32767), ABS_RZ: (0, 1023)}
        return {EV_KEY: [BTN_SOUTH, BTN_START], EV_ABS: [(c, Info(0, lo, hi)) for c, (lo, hi) in ranges.items()]}

    def absinfo(self, code: int) -> Info:
        return Info(self.values[code], 0, 0)

    def active_keys(self) -> list[int]:
        return self.keys

    def read_one(self):
        if self.events:
            return self.events.pop(0)
        if self.unplug_after:
            raise OSError(19, "No such device")
        return None

    def close(self) -> None:
        self.closed = True


def test_evdev_gamepad_polls_and_resynchronizes() -> None:
    device = FakeDevice([InputEvent(EV_ABS, ABS_X, 32767), InputEvent(EV_KEY, BTN_START, 1),
                         InputEvent(EV_SYN, SYN_REPORT, 0)])
    device.values[ABS_RZ] = 1023  # trigger held when the pad is opened
    pad = EvdevGamepad(device)
    assert pad.decoder.state.axes["right_trigger"] == 1.0
    state = pad.poll()
    assert state.axes["left_x"] == pytest.approx(1.0) and state.pressed == {"start"}
    # The kernel's buffer overflowed: the state is read afresh from the device.
    device.values[ABS_X], device.keys = -32768, []
    device.events = [InputEvent(EV_SYN, SYN_DROPPED, 0), InputEvent(EV_ABS, ABS_Y, 500),
                     InputEvent(EV_SYN, SYN_REPORT, 0)]
    state = pad.poll()
    assert state.axes["left_x"] == pytest.approx(-1.0) and state.pressed == set()


def test_evdev_gamepad_reports_unplugging() -> None:
    pad = EvdevGamepad(FakeDevice([], unplug_after=True))
    with pytest.raises(GamepadDisconnected, match="Fake Pad"):
        pad.poll()


def test_no_gamepad_at_a_missing_path() -> None:
    pytest.importorskip("evdev")
    with pytest.raises(GamepadNotFound, match="no gamepad found at /dev/input/event-missing"):
        EvdevGamepad.open("/dev/input/event-missing")


def test_no_gamepad_at_a_path_that_is_not_an_input_device(tmp_path) -> None:
    pytest.importorskip("evdev")
    path = tmp_path / "event0"
    path.write_bytes(b"")
    with pytest.raises(GamepadNotFound, match="no gamepad found at"):
        EvdevGamepad.open(str(path))


def test_no_gamepad_found_among_the_devices() -> None:
    evdev = pytest.importorskip("evdev")
    for path in evdev.list_devices():
        try:
            if is_gamepad(evdev.InputDevice(path).capabilities()):
                pytest.skip(f"a real gamepad is connected ({path})")
        except OSError:
            continue
    with pytest.raises(GamepadNotFound, match="no gamepad found"):
        EvdevGamepad.open("")


# ---------------------------------------------------------------- GamepadSource: retries, reconnects
class FakePad:
    def __init__(self, states: list[GamepadState | Exception]) -> None:
        self.name, self.path = "Fake Pad", "/dev/input/event7"
        self.states = states
        self.closed = False

    def poll(self) -> GamepadState:
        item = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def test_gamepad_source_retries_and_resyncs_on_reconnect() -> None:
    pads: list[FakePad | None] = [None, FakePad([GamepadState(axes={"left_y": -1.0}),
                                                 GamepadDisconnected("gamepad 'Fake Pad' disconnected")]),
                                  FakePad([GamepadState(pressed={"start"})])]
    opened = []

    def opener() -> FakePad:
        pad = pads.pop(0)
        if pad is None:
            raise GamepadNotFound("no gamepad found: 0 readable input device(s)")
        opened.append(pad)
        return pad

    target = EETarget(JogConfig())
    arm = np.eye(4)
    arm[:3, 3] = (0.25, 0.0, 0.15)
    source = GamepadSource(GamepadConfig(), target, retry_period=1.0, opener=opener)
    result = source.tick(0.0, 0.02, State.IDLE, (arm, 0.02))
    assert result.warnings == ["no gamepad found: 0 readable input device(s) (retrying every 1 s)"]
    assert source.tick(0.5, 0.02, State.IDLE, (arm, 0.02)).warnings == []  # not due yet, said once
    result = source.tick(1.0, 0.02, State.IDLE, (arm, 0.02))
    assert result.notes == ["gamepad 'Fake Pad' at /dev/input/event7"]
    assert target.pose[0, 3] == pytest.approx(0.25 + GamepadConfig().linear_speed * 0.02)
    result = source.tick(1.02, 0.02, State.IDLE, (arm, 0.02))
    assert "disconnected" in result.warnings[0] and opened[0].closed
    # Reopened one retry period later, starting again from the measured arm pose.
    assert source.tick(1.5, 0.02, State.IDLE, (arm, 0.02)).events == []
    result = source.tick(2.1, 0.02, State.IDLE, (arm, 0.02))
    assert result.events == [Event.START]
    np.testing.assert_allclose(target.pose, arm)


def test_gamepad_buttons_work_before_joint_states() -> None:
    target = EETarget(JogConfig())
    source = GamepadSource(GamepadConfig(), target, 1.0,
                           opener=lambda: FakePad([GamepadState(axes={"left_y": -1.0}, pressed={"mode"})]))
    result = source.tick(0.0, 0.02, State.IDLE, None)
    assert result.events == [Event.END] and not target.synced
