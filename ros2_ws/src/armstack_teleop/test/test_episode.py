"""The episode state machine: every (state, event) pair, counters, summaries."""

from __future__ import annotations

import pytest

from armstack_teleop.episode import EpisodeController, Event, Outcome, State


def controller_in(state: State, target: int = 0) -> EpisodeController:
    """A controller brought into `state` through real transitions (one take saved before)."""
    c = EpisodeController("stack the cubes", "keyboard", target, now=0.0)
    c.apply(Event.START, 1.0)
    c.apply(Event.SAVE, 2.0)
    if state is State.RECORDING:
        c.apply(Event.START, 3.0)
    elif state is State.FINISHED:
        c.apply(Event.END, 3.0)
    assert c.state is state
    return c


# (state before, event) -> (accepted, state after, saved, discarded, take, episode_index, outcome)
TRANSITIONS = [
    (State.IDLE, Event.START, True, State.RECORDING, 1, 0, 2, 1, Outcome.NONE),
    (State.IDLE, Event.SAVE, False, State.IDLE, 1, 0, 1, 1, Outcome.SAVED),
    (State.IDLE, Event.DISCARD, False, State.IDLE, 1, 0, 1, 1, Outcome.SAVED),
    (State.IDLE, Event.END, True, State.FINISHED, 1, 0, 1, 1, Outcome.SAVED),
    (State.RECORDING, Event.START, False, State.RECORDING, 1, 0, 2, 1, Outcome.NONE),
    (State.RECORDING, Event.SAVE, True, State.IDLE, 2, 0, 2, 2, Outcome.SAVED),
    (State.RECORDING, Event.DISCARD, True, State.IDLE, 1, 1, 2, 1, Outcome.DISCARDED),
    (State.RECORDING, Event.END, True, State.FINISHED, 1, 1, 2, 1, Outcome.DISCARDED),
    (State.FINISHED, Event.START, False, State.FINISHED, 1, 0, 1, 1, Outcome.SAVED),
    (State.FINISHED, Event.SAVE, False, State.FINISHED, 1, 0, 1, 1, Outcome.SAVED),
    (State.FINISHED, Event.DISCARD, False, State.FINISHED, 1, 0, 1, 1, Outcome.SAVED),
    (State.FINISHED, Event.END, False, State.FINISHED, 1, 0, 1, 1, Outcome.SAVED),
]


@pytest.mark.parametrize(
    ("before", "event", "accepted", "after", "saved", "discarded", "take", "index", "outcome"), TRANSITIONS
)
def test_transition(before, event, accepted, after, saved, discarded, take, index, outcome) -> None:
    c = controller_in(before)
    previous = c.status
    result = c.apply(event, 10.0)
    s = c.status
    assert result.accepted is accepted
    assert result.status == s
    assert (s.state, s.saved, s.discarded, s.take, s.episode_index, s.outcome) == (
        after, saved, discarded, take, index, outcome)
    if accepted:
        assert s.since == 10.0
    else:
        assert s == previous  # a refused event changes nothing
        assert result.message  # and says why


def test_take_boundaries_are_stamped() -> None:
    c = EpisodeController("t", "expert")
    c.apply(Event.START, 5.0)
    assert (c.status.take_start, c.status.take_end) == (5.0, None)
    c.apply(Event.DISCARD, 7.5)
    assert (c.status.take_start, c.status.take_end) == (5.0, 7.5)
    c.apply(Event.START, 8.0)
    assert (c.status.take_start, c.status.take_end) == (8.0, None)


def test_discard_redoes_the_same_episode_index() -> None:
    c = EpisodeController("t", "keyboard")
    for event in (Event.START, Event.DISCARD, Event.START, Event.DISCARD, Event.START):
        c.apply(event, 0.0)
    assert (c.status.episode_index, c.status.take, c.status.discarded) == (0, 3, 2)
    c.apply(Event.SAVE, 0.0)
    assert (c.status.episode_index, c.status.saved) == (1, 1)


@pytest.mark.parametrize("target", [1, 3])
def test_session_finishes_after_target_episodes(target: int) -> None:
    c = EpisodeController("t", "expert", target_episodes=target)
    for k in range(target):
        assert c.state is State.IDLE
        c.apply(Event.START, float(k))
        c.apply(Event.DISCARD, float(k))  # discarded takes do not count
        c.apply(Event.START, float(k))
        c.apply(Event.SAVE, float(k))
    assert c.state is State.FINISHED
    assert (c.status.saved, c.status.discarded, c.status.outcome) == (target, target, Outcome.SAVED)
    assert not c.apply(Event.START, 99.0).accepted


def test_unlimited_session_never_finishes_by_itself() -> None:
    c = EpisodeController("t", "gamepad", target_episodes=0)
    for _ in range(50):
        c.apply(Event.START, 0.0)
        c.apply(Event.SAVE, 0.0)
    assert c.state is State.IDLE and c.status.saved == 50


@pytest.mark.parametrize(
    ("events", "summary"),
    [
        ((), "episode 1/3 idle (0 saved, 0 discarded)"),
        ((Event.START,), "episode 1/3 recording (take 1)"),
        ((Event.START, Event.DISCARD), "episode 1/3 idle; take 1 discarded (0 saved, 1 discarded)"),
        ((Event.START, Event.SAVE), "episode 2/3 idle; take 1 saved (1 saved, 0 discarded)"),
        ((Event.START, Event.END), "session finished: 0 saved, 1 discarded"),
    ],
)
def test_summary(events, summary: str) -> None:
    c = EpisodeController("t", "keyboard", target_episodes=3)
    for event in events:
        c.apply(event, 0.0)
    assert c.status.summary == summary


def test_task_changes_apply_to_the_status() -> None:
    c = EpisodeController("put the cubes in the bin", "keyboard")
    c.set_task("put the red cube in the bin")
    assert c.status.task == "put the red cube in the bin"
    with pytest.raises(ValueError, match="task"):
        c.set_task("  ")


@pytest.mark.parametrize(("task", "target", "field"), [("", 0, "task"), ("t", -1, "target_episodes")])
def test_invalid_construction_names_the_field(task: str, target: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EpisodeController(task, "keyboard", target)
