"""Device-backed teleop sources: the gamepad and the leader arm, each behind a `RetryingDevice`.

Each `tick` polls its device once, returns what to command and lines worth logging ("notes"),
and never raises for a device that is missing or goes away: it reports it and tries again
every `retry_period`. Plain module: no rclpy. The node passes time in float seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from armstack_common.servo_config import ServoBusConfig
from armstack_teleop.device import RetryingDevice
from armstack_teleop.episode import Event, State
from armstack_teleop.evdev_gamepad import EvdevGamepad, GamepadDisconnected, GamepadNotFound
from armstack_teleop.gamepad import GamepadConfig, GamepadMapping, apply_to_target
from armstack_teleop.jog import EETarget
from armstack_teleop.leader import LeaderConfig, LeaderMapping
from armstack_teleop.leader_bus import LeaderBus, LeaderBusError

logger = logging.getLogger(__name__)

# Consecutive failed sync reads before the leader bus is closed and reopened: one lost
# packet is noise, three in a row (60 ms at 50 Hz) is a cable or power problem.
LEADER_READ_FAILURES = 3


@dataclass
class TickResult:
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the log
    warnings: list[str] = field(default_factory=list)  # for the log, at warning level


def _error_note(device: RetryingDevice) -> list[str]:
    """The device's error, once per distinct message."""
    error = device.new_error()
    return [f"{error} (retrying every {device.retry_period:g} s)"] if error else []


class GamepadSource:
    """Gamepad -> jog target and episode events."""

    def __init__(
        self,
        config: GamepadConfig,
        target: EETarget,
        retry_period: float,
        opener: Callable[[], Any] | None = None,
        device_path: str = "",
    ) -> None:
        self.target = target
        self.mapping = GamepadMapping(config, target.config.gripper_open, target.config.gripper_closed)
        self.device = RetryingDevice(
            opener or (lambda: EvdevGamepad.open(device_path)),
            lambda pad: pad.close(),
            retry_period,
            (GamepadNotFound,),
        )

    def tick(
        self, now: float, dt: float, episode_state: State, measured: tuple[np.ndarray, float] | None
    ) -> TickResult:
        """One poll; `measured` is the arm's (ee pose (4, 4), gripper opening), None before the
        first joint_states (buttons work then, the sticks do not)."""
        result = TickResult()
        pad = self.device.get(now)
        result.warnings += _error_note(self.device)
        if pad is None:
            return result
        if self.device.just_connected:
            # A new device starts from where the arm is, with no button counted as pressed.
            self.mapping.reset()
            if measured is not None:
                self.target.sync(*measured)
            self.device.acknowledge()
            result.notes.append(f"gamepad {pad.name!r} at {pad.path}")
        try:
            state = pad.poll()
        except GamepadDisconnected as exc:
            self.device.fail(now, str(exc))
            result.warnings += _error_note(self.device)
            return result
        command = self.mapping.update(state, episode_state)
        if self.target.synced:
            apply_to_target(command, self.target, dt)
        result.events += command.events
        return result

    def close(self) -> None:
        self.device.close()


class LeaderSource:
    """Leader arm bus -> follower joint commands."""

    def __init__(
        self,
        leader: ServoBusConfig,
        follower: ServoBusConfig,
        config: LeaderConfig,
        retry_period: float,
        port: str = "",
    ) -> None:
        self.mapping = LeaderMapping(leader, follower, config)
        self.port = port or leader.port
        self.device = RetryingDevice(
            lambda: self._connect(LeaderBus(leader, self.port)), LeaderBus.close, retry_period, (LeaderBusError,)
        )
        self.read_failures = 0
        self.reads = 0

    @staticmethod
    def _connect(bus: LeaderBus) -> LeaderBus:
        bus.connect()
        return bus

    @property
    def joint_names(self) -> list[str]:
        return self.mapping.joint_names

    def tick(self, now: float, dt: float, follower_q: np.ndarray | None) -> tuple[np.ndarray | None, TickResult]:
        """(the follower command (J,) or None, notes); `follower_q` (J,) is the follower's measured
        position of `joint_names` (None until known), where commands start after a connect."""
        result = TickResult()
        bus = self.device.get(now)
        result.warnings += _error_note(self.device)
        if bus is None:
            return None, result
        if self.device.just_connected:
            self.mapping.reset(follower_q)
            self.device.acknowledge()
            result.notes.append(f"leader arm on {self.port}: {len(self.joint_names)} joints")
        try:
            ticks = bus.read_ticks()
        except LeaderBusError as exc:
            self.read_failures += 1
            if self.read_failures >= LEADER_READ_FAILURES:
                self.read_failures = 0
                self.device.fail(now, str(exc))
                result.warnings += _error_note(self.device)
            return None, result
        self.read_failures = 0
        self.reads += 1
        return self.mapping.command(ticks, dt), result

    def close(self) -> None:
        self.device.close()
