import itertools

import numpy as np
import pytest

from armstack_localization.tracker import Tracker, TrackerConfig, linear_assignment


def _brute_force(cost):
    n, m = cost.shape
    if n <= m:
        return min(cost[range(n), list(p)].sum() for p in itertools.permutations(range(m), n))
    return _brute_force(cost.T)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 4), (2, 5), (5, 2), (5, 5), (3, 6)])
@pytest.mark.parametrize("seed", range(4))
def test_assignment_is_optimal(shape, seed):
    cost = np.random.default_rng(seed).uniform(0.0, 10.0, shape)
    rows, cols = linear_assignment(cost)
    assert len(rows) == min(shape)
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert list(rows) == sorted(rows)
    assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost))


def test_assignment_prefers_global_optimum_over_greedy():
    # Greedy takes (0, 0) = 1 and is then forced into (1, 1) = 100; optimum is 2 + 3.
    cost = np.array([[1.0, 2.0], [3.0, 100.0]])
    rows, cols = linear_assignment(cost)
    np.testing.assert_array_equal(cols, [1, 0])


def test_assignment_empty():
    rows, cols = linear_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0


def _step(tracker, positions, classes=None, scores=None):
    n = len(positions)
    return tracker.update(
        np.array(positions, float).reshape(-1, 3), classes or [0] * n, scores or [0.9] * n
    )


def test_ids_stay_stable_when_order_changes():
    tracker = Tracker(TrackerConfig(gate_m=0.05, min_hits=1))
    a, b = [0.1, 0.2, 0.0], [0.3, 0.1, 0.0]
    ids = _step(tracker, [a, b])
    assert ids == [1, 2]
    # Same objects, jittered and listed in the other order.
    assert _step(tracker, [[0.31, 0.1, 0.0], [0.1, 0.21, 0.0]]) == [2, 1]


def test_gate_and_class_prevent_matches():
    tracker = Tracker(TrackerConfig(gate_m=0.05, min_hits=1))
    _step(tracker, [[0.0, 0.0, 0.0]], classes=["cube"])
    # Too far: a new track.
    assert _step(tracker, [[0.2, 0.0, 0.0]], classes=["cube"]) == [2]
    # Close but another class: a new track as well.
    assert _step(tracker, [[0.2, 0.01, 0.0]], classes=["ball"]) == [3]


def test_birth_needs_min_hits_and_death_after_max_misses():
    tracker = Tracker(TrackerConfig(gate_m=0.05, min_hits=3, max_misses=2, smoothing=1.0))
    p = [[0.2, 0.0, 0.05]]
    _step(tracker, p)
    _step(tracker, p)
    assert tracker.confirmed_tracks() == []
    _step(tracker, p)
    assert [t.track_id for t in tracker.confirmed_tracks()] == [1]
    _step(tracker, [])
    _step(tracker, [])
    assert [t.misses for t in tracker.confirmed_tracks()] == [2]  # still coasting
    assert _step(tracker, p) == [1]  # seen again within max_misses: same id
    for _ in range(3):
        _step(tracker, [])
    assert tracker.tracks == []
    assert _step(tracker, p) == [2]  # a new object now


def test_confirmation_needs_consecutive_hits():
    tracker = Tracker(TrackerConfig(gate_m=0.05, min_hits=3, max_misses=3))
    p = [[0.2, 0.0, 0.05]]
    for frame in (p, p, [], p):  # a tentative track interrupted by a miss
        _step(tracker, frame)
    assert tracker.confirmed_tracks() == []
    _step(tracker, p)
    _step(tracker, p)
    assert [t.track_id for t in tracker.confirmed_tracks()] == [1]


def test_smoothing_moves_towards_measurement():
    tracker = Tracker(TrackerConfig(gate_m=0.1, min_hits=1, smoothing=0.5))
    _step(tracker, [[0.0, 0.0, 0.0]])
    _step(tracker, [[0.02, 0.0, 0.0]])
    np.testing.assert_allclose(tracker.tracks[0].position, [0.01, 0.0, 0.0])


def test_one_track_two_candidates_takes_the_nearer():
    tracker = Tracker(TrackerConfig(gate_m=0.05, min_hits=1))
    _step(tracker, [[0.0, 0.0, 0.0]])
    assert _step(tracker, [[0.04, 0.0, 0.0], [0.01, 0.0, 0.0]]) == [2, 1]


@pytest.mark.parametrize(
    ("field", "value"), [("gate_m", 0.0), ("min_hits", 0), ("max_misses", 0), ("smoothing", 1.5)]
)
def test_config_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrackerConfig(**{field: value})
