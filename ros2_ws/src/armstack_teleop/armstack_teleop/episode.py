"""Episode control of a demonstration session: start, save, discard-and-redo, end.

`EpisodeController` is the one state machine every input drives (keyboard keys, gamepad
buttons, the teleop/* services, the scripted expert). Its `EpisodeStatus` is what the node
publishes on `teleop/episode` (armstack_interfaces/EpisodeStatus), field for field.

States and transitions (anything else is refused with a reason, state unchanged):

    idle      --start-->    recording   take += 1
    recording --save-->     idle        saved += 1, episode_index += 1
                            finished    ... when saved reaches target_episodes (> 0)
    recording --discard-->  idle        discarded += 1; the same episode_index is redone
    recording --end-->      finished    the unfinished take counts as discarded
    idle      --end-->      finished

Times are float seconds of whatever clock the caller uses (the node passes ROS time).
Plain module: no rclpy.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

logger = logging.getLogger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"
    FINISHED = "finished"


class Event(enum.Enum):
    START = "start"
    SAVE = "save"
    DISCARD = "discard"
    END = "end"


class Outcome(enum.Enum):
    NONE = ""
    SAVED = "saved"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class EpisodeStatus:
    """The session's state after the last accepted event (mirrors EpisodeStatus.msg)."""

    state: State
    task: str
    source: str
    episode_index: int  # saved takes before the current / next one
    take: int  # 1-based number of the current or last take; 0 before the first
    outcome: Outcome  # of take `take` when not recording
    since: float  # s, when `state` began
    take_start: float | None  # s
    take_end: float | None  # s, None while recording
    saved: int
    discarded: int
    target_episodes: int  # 0: unlimited

    @property
    def summary(self) -> str:
        """One line for logs and people, e.g. "episode 3/50 recording (take 4)"."""
        of = f"/{self.target_episodes}" if self.target_episodes else ""
        if self.state is State.FINISHED:
            return f"session finished: {self.saved} saved, {self.discarded} discarded"
        # People count episodes from 1; episode_index stays 0-based as in LeRobot datasets.
        text = f"episode {self.episode_index + 1}{of} {self.state.value}"
        if self.state is State.RECORDING:
            return f"{text} (take {self.take})"
        last = f"; take {self.take} {self.outcome.value}" if self.take else ""
        return f"{text}{last} ({self.saved} saved, {self.discarded} discarded)"


@dataclass(frozen=True)
class Transition:
    """Result of one event: `accepted` and why not; `status` is the state afterwards."""

    event: Event
    accepted: bool
    message: str
    status: EpisodeStatus


class EpisodeController:
    """The session's episode state machine (see the module docstring)."""

    def __init__(self, task: str, source: str, target_episodes: int = 0, now: float = 0.0) -> None:
        if not task.strip():
            raise ValueError("EpisodeController.task must be a non-empty string")
        if target_episodes < 0:
            raise ValueError(f"EpisodeController.target_episodes must be >= 0, got {target_episodes}")
        self._status = EpisodeStatus(
            state=State.IDLE, task=task, source=source, episode_index=0, take=0,
            outcome=Outcome.NONE, since=now, take_start=None, take_end=None,
            saved=0, discarded=0, target_episodes=target_episodes,
        )

    @property
    def status(self) -> EpisodeStatus:
        return self._status

    @property
    def state(self) -> State:
        return self._status.state

    def set_task(self, task: str) -> None:
        """Change the task of the next takes (the current one keeps the task it started with
        in any recorder that read it at its start)."""
        if not task.strip():
            raise ValueError("task must be a non-empty string")
        self._status = replace(self._status, task=task)

    def apply(self, event: Event, now: float) -> Transition:
        """Apply `event` at time `now`; a refused event leaves the state unchanged."""
        handler = {
            Event.START: self._start,
            Event.SAVE: self._save,
            Event.DISCARD: self._discard,
            Event.END: self._end,
        }[event]
        refusal = self._refusal(event)
        if refusal is not None:
            return Transition(event, False, refusal, self._status)
        self._status = handler(now)
        logger.debug("%s: %s", event.value, self._status.summary)
        return Transition(event, True, self._status.summary, self._status)

    def _refusal(self, event: Event) -> str | None:
        state = self._status.state
        if state is State.FINISHED:
            return "the session has ended"
        if event is Event.START and state is State.RECORDING:
            return f"take {self._status.take} is already recording"
        if event in (Event.SAVE, Event.DISCARD) and state is not State.RECORDING:
            return "no take is recording"
        return None

    def _start(self, now: float) -> EpisodeStatus:
        s = self._status
        return replace(s, state=State.RECORDING, take=s.take + 1, outcome=Outcome.NONE, since=now,
                       take_start=now, take_end=None)

    def _save(self, now: float) -> EpisodeStatus:
        s = self._status
        saved = s.saved + 1
        done = s.target_episodes > 0 and saved >= s.target_episodes
        return replace(s, state=State.FINISHED if done else State.IDLE, outcome=Outcome.SAVED,
                       since=now, take_end=now, saved=saved, episode_index=s.episode_index + 1)

    def _discard(self, now: float) -> EpisodeStatus:
        s = self._status
        return replace(s, state=State.IDLE, outcome=Outcome.DISCARDED, since=now, take_end=now,
                       discarded=s.discarded + 1)

    def _end(self, now: float) -> EpisodeStatus:
        s = self._status
        if s.state is State.RECORDING:
            # An unfinished take is not a demonstration: it ends discarded.
            return replace(s, state=State.FINISHED, outcome=Outcome.DISCARDED, since=now, take_end=now,
                           discarded=s.discarded + 1)
        return replace(s, state=State.FINISHED, since=now)
