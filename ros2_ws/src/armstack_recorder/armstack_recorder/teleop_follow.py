"""Following teleop's episode state (armstack_interfaces/EpisodeStatus on teleop/episode).

Contract, as the recorder implements it (teleop publishes the topic latched, once per change):
- state "recording" with a take not seen yet: start an episode whose dataset clock begins at
  take_start, with the message's task. A take is identified by its take_start stamp, so take
  numbers restarting in a new teleop session cannot be confused.
- state "idle" or "finished" about the take being recorded: outcome "saved" -> save it up to
  take_end; anything else ("discarded", e.g. the session ended mid-take) -> discard it.
- a message about another take while one is open means the open take's end was missed (the
  subscription keeps 10 messages, so this takes a stalled recorder): its outcome is not known
  for sure, so it is discarded with a warning rather than saved with a guessed end.
- a recorder started mid-take receives the latched "recording" state; the session refuses to
  start a take older than its buffers reach, so that take is not recorded (and says so).
No ROS here: the node converts the message into `TeleopStatus`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

RECORDING = "recording"
SAVED = "saved"


@dataclass(frozen=True)
class TeleopStatus:
    """The fields of EpisodeStatus the recorder uses; times in integer ns."""

    state: str  # idle | recording | finished
    task: str
    take: int
    outcome: str  # saved | discarded | "" (while recording)
    take_start_ns: int
    take_end_ns: int


@dataclass(frozen=True)
class Command:
    kind: str  # start | save | discard
    owner: str  # "teleop take N": the session only lets this owner save/discard it
    time_ns: int = 0  # start: grid origin; save: last sample time
    task: str = ""
    reason: str = ""


def owner_of(take: int) -> str:
    return f"teleop take {take}"


class TeleopFollower:
    """Turns the sequence of EpisodeStatus messages into start/save/discard commands."""

    def __init__(self) -> None:
        self._open: TeleopStatus | None = None  # the take we were told is recording

    def update(self, status: TeleopStatus) -> list[Command]:
        commands: list[Command] = []
        current = self._open
        same_take = current is not None and current.take_start_ns == status.take_start_ns
        if status.state == RECORDING:
            if same_take:
                return []
            if current is not None:
                commands.append(self._missed(current))
            self._open = status
            commands.append(Command("start", owner_of(status.take), status.take_start_ns,
                                    status.task))
            return commands
        if current is None:
            return []
        self._open = None
        if not same_take:
            return [self._missed(current)]
        if status.outcome == SAVED:
            return [Command("save", owner_of(current.take), status.take_end_ns)]
        why = status.outcome or "ended without an outcome"
        return [Command("discard", owner_of(current.take), reason=f"teleop: take {why}")]

    @staticmethod
    def _missed(current: TeleopStatus) -> Command:
        logger.warning("missed the end of teleop take %d; discarding it", current.take)
        return Command("discard", owner_of(current.take),
                       reason=f"missed the end of take {current.take} on teleop/episode")
