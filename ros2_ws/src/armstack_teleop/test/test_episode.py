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


def _take(c: EpisodeController, t: float) -> int:
    c.apply(Event.START, t)
    c.apply(Event.SAVE, t + 0.5)
    return c.status.take


def test_with_confirm_saves_a_take_the_recorder_dropped_is_redone() -> None:
    c = EpisodeController("t", "expert", target_episodes=2, confirm_saves=True)
    first = _take(c, 0.0)
    assert (c.status.saved, c.status.unconfirmed, c.state) == (1, 1, State.IDLE)
    assert "1 awaiting the recorder" in c.status.summary
    assert c.recorder_verdict(first, kept=True, now=1.0).startswith("the recorder saved take 1")
    second = _take(c, 2.0)
    # the target is reached but not confirmed: no new take starts meanwhile
    assert c.state is State.IDLE and c.status.target_saved
    refused = c.apply(Event.START, 3.0)
    assert not refused.accepted and "waiting for the recorder" in refused.message
    line = c.recorder_verdict(second, kept=False, now=4.0)
    assert line.startswith("the recorder did not keep take 2")
    s = c.status
    assert (s.state, s.saved, s.discarded, s.episode_index, s.unconfirmed) == \
        (State.IDLE, 1, 1, 1, 0)
    third = _take(c, 5.0)
    assert c.state is State.IDLE  # saved 2 again, awaiting the verdict on take 3
    c.recorder_verdict(third, kept=True, now=6.0)
    assert c.state is State.FINISHED and (c.status.saved, c.status.discarded) == (2, 1)
    assert c.status.since == 6.0


def test_verdicts_on_takes_not_awaiting_one_change_nothing() -> None:
    c = EpisodeController("t", "expert", target_episodes=3, confirm_saves=True)
    take = _take(c, 0.0)
    before = c.status
    assert c.recorder_verdict(take + 5, kept=False, now=1.0) is None  # e.g. a replayed report
    assert c.recorder_verdict(take, kept=True, now=1.0) is not None
    assert c.recorder_verdict(take, kept=False, now=2.0) is None  # already decided
    assert c.status.saved == before.saved == 1
    # without confirm_saves nothing awaits a verdict
    plain = EpisodeController("t", "expert", target_episodes=1)
    assert plain.recorder_verdict(_take(plain, 0.0), kept=False, now=1.0) is None
    assert plain.state is State.FINISHED and plain.status.unconfirmed == 0


def test_recorder_reports_parse_to_take_and_verdict() -> None:
    import json

    from armstack_recorder.teleop_follow import owner_of
    from armstack_teleop.episode import recorder_verdict_of

    report = {"outcome": "saved", "owner": owner_of(7), "episode_index": 3}
    assert recorder_verdict_of(json.dumps(report)) == (7, True)
    assert recorder_verdict_of(json.dumps({**report, "outcome": "discarded"})) == (7, False)
    assert recorder_verdict_of(json.dumps({**report, "owner": "service"})) is None
    with pytest.raises(ValueError, match="not a recorder episode report"):
        recorder_verdict_of("take 7 saved")
