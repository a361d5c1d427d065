"""Keyboard teleop without a person: decoding bytes, the key map, and raw mode on a pseudo-terminal."""

from __future__ import annotations

import os
import termios

import numpy as np
import pytest

from armstack_teleop.episode import Event, State
from armstack_teleop.jog import EETarget, JogConfig
from armstack_teleop.keyboard import KEYMAP, KeyboardConfig, KeyboardTeleop, KeyDecoder, TerminalKeys


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (b"wasd", ["w", "a", "s", "d"]),
        (b" \r\n", ["space", "enter", "enter"]),
        (b"\x7f\x08\x03\x04", ["backspace", "backspace", "ctrl-c", "ctrl-d"]),
        (b"\x1b[A\x1b[B\x1b[C\x1b[D", ["up", "down", "right", "left"]),
        (b"\x1bOA\x1bOD", ["up", "left"]),  # application cursor mode
        (b"\x1b[15~w", ["w"]),  # F5: a complete sequence of no interest, then a key
        (b"\x1bw", ["esc", "w"]),
        (b"+=-[]?", ["+", "=", "-", "[", "]", "?"]),
    ],
)
def test_decoder(data: bytes, keys: list[str]) -> None:
    assert KeyDecoder().feed(data) == keys


def test_escape_sequences_split_across_reads() -> None:
    decoder = KeyDecoder()
    assert decoder.feed(b"w\x1b") == ["w"]
    assert decoder.feed(b"[") == []
    assert decoder.feed(b"Aq") == ["up", "q"]


def test_lone_escape_is_flushed() -> None:
    decoder = KeyDecoder()
    assert decoder.feed(b"\x1b") == []
    assert decoder.flush() == ["esc"]
    assert decoder.flush() == []


def synced_teleop() -> tuple[KeyboardTeleop, EETarget]:
    target = EETarget(JogConfig())
    pose = np.eye(4)
    pose[:3, 3] = (0.25, 0.0, 0.15)
    target.sync(pose, 0.02)
    return KeyboardTeleop(KeyboardConfig(), target), target


@pytest.mark.parametrize(
    ("key", "direction"),
    [("w", (1, 0, 0)), ("up", (1, 0, 0)), ("s", (-1, 0, 0)), ("a", (0, 1, 0)), ("left", (0, 1, 0)),
     ("d", (0, -1, 0)), ("r", (0, 0, 1)), ("f", (0, 0, -1))],
)
def test_translation_keys(key: str, direction) -> None:
    teleop, target = synced_teleop()
    before = target.pose[:3, 3]
    assert teleop.handle(key, State.IDLE).event is None
    np.testing.assert_allclose(target.pose[:3, 3] - before, np.array(direction) * KeyboardConfig().linear_step)


@pytest.mark.parametrize(("key", "axis", "sign"), [("q", 2, 1), ("e", 2, -1), ("t", 1, 1), ("g", 1, -1),
                                                   ("z", 0, 1), ("x", 0, -1)])
def test_rotation_keys(key: str, axis: int, sign: int) -> None:
    teleop, target = synced_teleop()  # identity orientation: gripper axes = base axes
    teleop.handle(key, State.IDLE)
    r = target.pose[:3, :3]
    angle = KeyboardConfig().angular_step
    # Rotation about a single axis by sign * angle: the skew part names it.
    skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2.0
    expected = np.zeros(3)
    expected[axis] = sign * np.sin(angle)
    np.testing.assert_allclose(skew, expected, atol=1e-12)


def test_gripper_keys() -> None:
    teleop, target = synced_teleop()
    teleop.handle("]", State.IDLE)
    assert target.gripper == pytest.approx(0.02 + KeyboardConfig().gripper_step)
    teleop.handle("[", State.IDLE)
    teleop.handle("[", State.IDLE)
    assert target.gripper == pytest.approx(0.02 - KeyboardConfig().gripper_step)
    teleop.handle("space", State.IDLE)  # more closed than half: opens fully
    assert target.gripper == JogConfig().gripper_open
    teleop.handle("space", State.IDLE)
    assert target.gripper == JogConfig().gripper_closed


@pytest.mark.parametrize(
    ("key", "state", "event"),
    [("enter", State.IDLE, Event.START), ("enter", State.RECORDING, Event.SAVE),
     ("backspace", State.RECORDING, Event.DISCARD), ("ctrl-c", State.IDLE, Event.END),
     ("ctrl-d", State.RECORDING, Event.END)],
)
def test_episode_keys(key: str, state: State, event: Event) -> None:
    teleop, _ = synced_teleop()
    assert teleop.handle(key, state).event is event


def test_episode_keys_work_without_a_jog_target() -> None:
    teleop = KeyboardTeleop(KeyboardConfig(), None)
    assert teleop.handle("enter", State.IDLE).event is Event.START
    assert teleop.handle("w", State.IDLE).event is None  # nothing to move


def test_speed_scales_the_step_within_bounds() -> None:
    teleop, target = synced_teleop()
    for _ in range(10):
        teleop.handle("+", State.IDLE)
    assert teleop.speed == KeyboardConfig().max_speed
    for _ in range(10):
        teleop.handle("-", State.IDLE)
    assert teleop.speed == KeyboardConfig().min_speed
    before = target.pose[:3, 3]
    teleop.handle("w", State.IDLE)
    assert target.pose[0, 3] - before[0] == pytest.approx(KeyboardConfig().linear_step * 0.25)


def test_unsynced_target_says_why_keys_do_nothing() -> None:
    teleop = KeyboardTeleop(KeyboardConfig(), EETarget(JogConfig()))
    result = teleop.handle("w", State.IDLE)
    assert result.event is None and "joint_states" in result.message


def test_help_and_unknown_keys() -> None:
    teleop, _ = synced_teleop()
    assert "enter" in teleop.handle("h", State.IDLE).message
    for key in ("k", "tab", "esc"):
        result = teleop.handle(key, State.IDLE)
        assert result.event is None and result.message is None


def test_every_keymap_entry_is_handled() -> None:
    teleop, _ = synced_teleop()
    for key in KEYMAP:
        teleop.handle(key, State.IDLE)  # raises on an action the teleop does not know


def test_raw_mode_on_a_pseudo_terminal() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        with TerminalKeys(slave) as keys:
            attrs = termios.tcgetattr(slave)
            assert not attrs[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
            assert attrs[1] == before[1]  # output processing untouched
            assert keys.read_keys() == []  # nothing typed: returns at once
            os.write(master, b"w\x1b[Ar\x03")  # ctrl-c arrives as a key, not SIGINT
            assert keys.read_keys() == ["w", "up", "r", "ctrl-c"]
            os.write(master, b"abc\r")  # no line buffering: available without waiting for a line
            assert keys.read_keys() == ["a", "b", "c", "enter"]
        assert termios.tcgetattr(slave) == before  # restored
    finally:
        os.close(master)
        os.close(slave)


def test_terminal_keys_refuses_a_non_terminal(tmp_path) -> None:
    with open(tmp_path / "f", "w") as f, pytest.raises(OSError, match="not a terminal"):
        TerminalKeys(f.fileno())
