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

With confirm_saves (a recorder follows the session and reports each take it kept or not,
`recorder_verdict`), a saved take is unconfirmed until the recorder's verdict. A take the
recorder did not keep turns from saved into discarded and its episode is redone; the session
finishes once target_episodes takes are saved *and* confirmed, and no take starts while the
saved ones already reach the target.

Times are float seconds of whatever clock the caller uses (the node passes ROS time).
Plain module: no rclpy.
"""

from __future__ import annotations

import enum
import json
import logging
import re
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
    unconfirmed: int = 0  # saved takes the recorder has not confirmed yet (confirm_saves)

    @property
    def target_saved(self) -> bool:
        """As many takes saved as the session wants (confirmed or not)."""
        return self.target_episodes > 0 and self.saved >= self.target_episodes

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
        waiting = f", {self.unconfirmed} awaiting the recorder" if self.unconfirmed else ""
        return f"{text}{last} ({self.saved} saved, {self.discarded} discarded{waiting})"


@dataclass(frozen=True)
class Transition:
    """Result of one event: `accepted` and why not; `status` is the state afterwards."""

    event: Event
    accepted: bool
    message: str
    status: EpisodeStatus


# The recorder's report of a take it followed names it "teleop take N" in `owner`
# (armstack_recorder.teleop_follow.owner_of); `outcome` "saved" means kept.
_RECORDER_OWNER = re.compile(r"teleop take (\d+)")


def recorder_verdict_of(report: str) -> tuple[int, bool] | None:
    """(take, kept) from a recorder/episode_report JSON text; None for a report of an episode
    that no teleop take started (e.g. one started by the recorder/start service)."""
    try:
        fields = json.loads(report)
        match = _RECORDER_OWNER.fullmatch(str(fields.get("owner", "")))
    except (ValueError, AttributeError):
        raise ValueError(f"not a recorder episode report: {report[:80]!r}") from None
    if match is None:
        return None
    return int(match.group(1)), fields.get("outcome") == "saved"


class EpisodeController:
    """The session's episode state machine (see the module docstring)."""

    def __init__(self, task: str, source: str, target_episodes: int = 0, now: float = 0.0,
                 confirm_saves: bool = False) -> None:
        if not task.strip():
            raise ValueError("EpisodeController.task must be a non-empty string")
        if target_episodes < 0:
            raise ValueError(f"EpisodeController.target_episodes must be >= 0, got {target_episodes}")
        self._status = EpisodeStatus(
            state=State.IDLE, task=task, source=source, episode_index=0, take=0,
            outcome=Outcome.NONE, since=now, take_start=None, take_end=None,
            saved=0, discarded=0, target_episodes=target_episodes,
        )
        self._confirm_saves = confirm_saves
        self._unconfirmed: set[int] = set()  # takes saved here, not yet confirmed

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
        if event is Event.START and self._status.target_saved:
            return (f"{self._status.saved} takes saved already; waiting for the recorder to "
                    f"confirm take(s) {sorted(self._unconfirmed)}")
        if event in (Event.SAVE, Event.DISCARD) and state is not State.RECORDING:
            return "no take is recording"
        return None

    def recorder_verdict(self, take: int, kept: bool, now: float) -> str | None:
        """The recorder kept (saved) take `take`, or did not. A line for the log when that
        changes anything; None for a take that is not awaiting a verdict (e.g. one of an
        earlier session, replayed by the recorder's latched reports)."""
        if take not in self._unconfirmed:
            return None
        self._unconfirmed.discard(take)
        s = self._status
        if kept:
            s = replace(s, unconfirmed=len(self._unconfirmed))
            line = f"the recorder saved take {take}"
        else:
            s = replace(s, saved=s.saved - 1, discarded=s.discarded + 1,
                        episode_index=s.episode_index - 1, unconfirmed=len(self._unconfirmed))
            line = f"the recorder did not keep take {take}: its episode is redone"
        self._status = self._finished_when_confirmed(s, now)
        return f"{line}; {self._status.summary}"

    def _finished_when_confirmed(self, s: EpisodeStatus, now: float) -> EpisodeStatus:
        """`s`, or the session finished when it is idle with the target saved and no saved
        take awaits the recorder's verdict."""
        if s.state is State.IDLE and s.target_saved and not self._unconfirmed:
            return replace(s, state=State.FINISHED, since=now)
        return s

    def _start(self, now: float) -> EpisodeStatus:
        s = self._status
        return replace(s, state=State.RECORDING, take=s.take + 1, outcome=Outcome.NONE, since=now,
                       take_start=now, take_end=None)

    def _save(self, now: float) -> EpisodeStatus:
        s = self._status
        if self._confirm_saves:
            self._unconfirmed.add(s.take)
        return self._finished_when_confirmed(replace(
            s, state=State.IDLE, outcome=Outcome.SAVED, since=now, take_end=now,
            saved=s.saved + 1, episode_index=s.episode_index + 1,
            unconfirmed=len(self._unconfirmed)), now)

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
