"""Tests of armstack_policy.chunk_buffer on hand-made chunks.

Most chunks encode where each value came from: action i of chunk `cid` has value cid*1000 + i in
dimension 0 (and + d/8 in dimension d, exact in binary), so a test can assert exactly which
chunk and index an output came from, or which ones were blended with what weights.
"""

import math

import numpy as np
import pytest
from armstack_policy.chunk_buffer import (
    MODES,
    ActionStep,
    ChunkBuffer,
    ChunkBufferConfig,
    ChunkVerdict,
    StepStatus,
)

K, D, DT = 20, 2, 0.02
T0 = 100.0  # control clock origin, away from 0 so negative offsets are ordinary times


def coded(cid: int, k: int = K) -> np.ndarray:
    """(k, D) chunk whose action i is cid*1000 + i (+ d/8 in dimension d)."""
    return cid * 1000.0 + np.arange(k)[:, None] + np.arange(D)[None, :] / 8.0


def ramp(start: float, slope: float) -> np.ndarray:
    """(K, D) chunk moving linearly, the same in every dimension."""
    return np.repeat((start + slope * np.arange(K))[:, None], D, axis=1)


def t(step: float) -> float:
    return T0 + step * DT


def make(mode: str, **overrides) -> ChunkBuffer:
    fields = {"mode": mode, "chunk_size": K, "action_dim": D, "dt": DT} | overrides
    return ChunkBuffer(ChunkBufferConfig(**fields))


def source(step: ActionStep) -> tuple[int, int]:
    """(chunk id, index) of a coded, unblended action."""
    value = float(step.action[0])
    assert value == round(value), f"{value} is a blend, not a single coded action"
    return divmod(int(value), 1000)


def run(buf: ChunkBuffer, steps: range, arrivals: dict[int, list[tuple[np.ndarray, float]]],
        jitter: np.ndarray | None = None) -> list[tuple[StepStatus, np.ndarray | None]]:
    """Play control steps; arrivals[s] are (chunk, t_obs) added just before step s."""
    out = []
    for s in steps:
        for chunk, t_obs in arrivals.get(s, []):
            assert buf.add_chunk(chunk, t_obs).accepted
        offset = 0.0 if jitter is None else jitter[s]
        step = buf.action_at(t(s) + offset)
        out.append((step.status, None if step.action is None else step.action.copy()))
    return out


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("overrides", "field"), [
    ({"mode": "ensemble"}, "mode"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"chunk_size": 10.0}, "chunk_size"),
    ({"action_dim": True}, "action_dim"),
    ({"dt": 0.0}, "dt"),
    ({"dt": math.nan}, "dt"),
    ({"max_chunks": 1}, "max_chunks"),
    ({"ensemble_coeff": -0.01}, "ensemble_coeff"),
    ({"favour": "newer"}, "favour"),
    ({"n_action_steps": 0}, "n_action_steps"),
    ({"n_action_steps": K + 1}, "n_action_steps"),
    ({"blend_steps": -1}, "blend_steps"),
    ({"max_time_gap": DT}, "max_time_gap"),
    ({"jitter_tolerance": 0.0}, "jitter_tolerance"),
    ({"jitter_tolerance": 0.6}, "jitter_tolerance"),
    ({"clock_gain": 1.0}, "clock_gain"),
])
def test_config_rejects_bad_field(overrides, field):
    fields = {"chunk_size": K, "action_dim": D, "dt": DT} | overrides
    with pytest.raises(ValueError, match=rf"ChunkBufferConfig\.{field}\b"):
        ChunkBufferConfig(**fields)


def test_config_horizon_defaults_to_chunk_size():
    assert ChunkBufferConfig().horizon == ChunkBufferConfig().chunk_size
    assert ChunkBufferConfig(n_action_steps=8).horizon == 8


@pytest.mark.parametrize(("actions", "t_obs", "dt", "match"), [
    (np.zeros((K + 1, D)), 0.0, None, "actions: expected shape"),
    (np.zeros((K, D + 1)), 0.0, None, "actions: expected shape"),
    (np.zeros(K * D), 0.0, None, "actions: expected shape"),
    (np.zeros((2, K, D)), 0.0, None, "actions: expected shape"),
    (np.full((K, D), np.nan), 0.0, None, "NaN"),
    (np.zeros((K, D), dtype=complex), 0.0, None, "dtype"),
    (np.zeros((K, D)), math.inf, None, "t_obs"),
    (np.zeros((K, D)), "0.0", None, "t_obs"),
    (np.zeros((K, D)), 0.0, 1 / 30, "dt"),
])
def test_add_chunk_rejects_malformed_input(actions, t_obs, dt, match):
    buf = make("receding_horizon")
    with pytest.raises(ValueError, match=match):
        buf.add_chunk(actions, t_obs, dt)
    assert buf.stats().depth == 0


def test_add_chunk_accepts_batch_of_one_ints_and_numpy_stamps():
    buf = make("receding_horizon")
    assert buf.add_chunk(coded(1)[None].astype(np.int64), np.float32(t(0)), dt=DT).accepted
    assert source(buf.action_at(t(0))) == (1, 0)


def test_action_at_rejects_non_finite_time():
    with pytest.raises(ValueError, match="t_now"):
        make("receding_horizon").action_at(math.nan)


# ---------------------------------------------------------------- modes


def test_receding_horizon_plays_n_then_switches_to_newest():
    buf = make("receding_horizon", n_action_steps=4)
    arrivals = {0: [(coded(1), t(0))], 2: [(coded(2), t(1))], 7: [(coded(3), t(5))]}
    out = run(buf, range(5 + K + 2), arrivals)
    # A plays its first 4 actions; B (observed at step 1) takes over at step 4 at index 3;
    # B is past its n at once, so C replaces it on arrival (index 2) and, with nothing newer,
    # plays to its end; then the last action is held.
    expected = [(1, i) for i in range(4)] + [(2, 3), (2, 4), (2, 5)] + [(3, i) for i in range(2, K)]
    got = [divmod(int(a[0]), 1000) for _, a in out]
    assert got[:len(expected)] == expected
    assert [status for status, _ in out[:len(expected)]] == [StepStatus.OK] * len(expected)
    assert all(status is StepStatus.DRY for status, _ in out[len(expected):])
    assert buf.stats().switches == 3


def test_receding_horizon_full_chunk_ignores_newer_until_n():
    buf = make("receding_horizon")  # n = K
    out = run(buf, range(K + 1), {0: [(coded(1), t(0))], 3: [(coded(2), t(2))]})
    got = [divmod(int(a[0]), 1000) for _, a in out]
    assert got == [(1, i) for i in range(K)] + [(2, K - 2)]


@pytest.mark.parametrize("latency", [0, 1, 3, 7])
def test_async_drops_exactly_the_passed_actions(latency):
    buf = make("async_latency_compensated", blend_steps=0)
    out = run(buf, range(14), {0: [(coded(1), t(0))], 10: [(coded(2), t(10 - latency))]})
    got = [divmod(int(a[0]), 1000) for _, a in out]
    assert got == [(1, i) for i in range(10)] + [(2, latency + j) for j in range(4)]
    assert buf.stats().last_latency_steps == latency


def test_async_crossfade_weights_are_exact():
    blend = 4
    buf = make("async_latency_compensated", blend_steps=blend)
    out = run(buf, range(12), {0: [(coded(1), t(0))], 6: [(coded(2), t(3))]})
    for s in range(6):
        assert out[s][1][0] == 1000 + s
    for j in range(blend):
        s = 6 + j
        beta = (j + 1) / (blend + 1)
        expected = (1 - beta) * coded(1)[s] + beta * coded(2)[s - 3]
        np.testing.assert_allclose(out[s][1], expected, rtol=0, atol=1e-9)
    assert [a[0] for _, a in out[10:]] == [2007.0, 2008.0]
    assert buf.stats().depth == 1  # the old chunk is released when the blend ends


@pytest.mark.parametrize("blend", [2, 5, 10])
@pytest.mark.parametrize(("old_slope", "new_slope", "gap"), [
    (1.0, 1.0, 8.0), (0.5, -0.5, -3.0), (0.0, 2.0, 0.0), (-1.0, 0.2, 12.0)])
def test_async_blend_step_bound(blend, old_slope, new_slope, gap):
    """Crossfade step = a mix of the chunks' own steps plus at most gap/(blend+1)."""
    old = ramp(0.0, old_slope)
    switch, latency = 6, 2
    # The new chunk sits `gap` above the old one at the switch step.
    new = ramp(old[switch, 0] + gap - latency * new_slope, new_slope)
    buf = make("async_latency_compensated", blend_steps=blend)
    out = run(buf, range(switch + blend + 3), {0: [(old, t(0))],
                                                switch: [(new, t(switch - latency))]})
    values = np.array([a[0] for _, a in out])
    steps = np.abs(np.diff(values))
    old_path = old[: len(values), 0]
    new_path = np.interp(np.arange(len(values)) - switch + latency, np.arange(K), new[:, 0])
    widest = np.abs(new_path - old_path)[switch:switch + blend + 1].max()
    bound = max(abs(old_slope), abs(new_slope)) + widest / (blend + 1)
    assert steps.max() <= bound + 1e-9
    hard = make("async_latency_compensated", blend_steps=0)
    hard_out = run(hard, range(switch + 2), {0: [(old, t(0))],
                                             switch: [(new, t(switch - latency))]})
    hard_jump = abs(hard_out[switch][1][0] - hard_out[switch - 1][1][0])
    assert hard_jump == pytest.approx(abs(gap + old_slope))
    if abs(gap) > 2 * max(abs(old_slope), abs(new_slope)):
        assert steps.max() < hard_jump


def test_async_nested_switches_stay_continuous():
    """A chunk every 2 steps, each blend interrupted by the next: steps stay small."""
    blend = 5
    rng = np.random.default_rng(3)
    levels = rng.uniform(0.0, 1.0, size=40)
    arrivals = {s: [(np.full((K, D), levels[s]), t(s - 1))] for s in range(0, 40, 2)}
    buf = make("async_latency_compensated", blend_steps=blend)
    values = np.array([a[0] for _, a in run(buf, range(40), arrivals)])
    # Constant chunks in [0, 1]: a step moves by the old blend's increment plus the new one's,
    # 1/(blend+1) each, plus what dropping faded sources (weight < 0.01) shifts.
    assert np.abs(np.diff(values)).max() <= 2 / (blend + 1) + 0.02
    hard = make("async_latency_compensated", blend_steps=0)
    hard_values = np.array([a[0] for _, a in run(hard, range(40), arrivals)])
    assert np.abs(np.diff(values)).max() < 0.5 * np.abs(np.diff(hard_values)).max()
    stats = buf.stats()
    assert stats.depth <= 10 and stats.evicted == 0


@pytest.mark.parametrize("favour", ["oldest", "newest"])
@pytest.mark.parametrize("m", [0.0, 0.01, 0.5])
def test_ensemble_matches_act_weights(favour, m):
    """A chunk per step (ACT's setting): w = exp(-m*r), r = 0 on the oldest or the newest."""
    rng = np.random.default_rng(7)
    chunks = rng.normal(size=(30, K, D))
    buf = make("temporal_ensemble", ensemble_coeff=m, favour=favour, max_chunks=K)
    out = run(buf, range(30), {s: [(chunks[s], t(s))] for s in range(30)})
    for s, (status, action) in enumerate(out):
        firsts = np.arange(max(0, s - K + 1), s + 1)  # chunks covering step s, oldest first
        ranks = np.arange(len(firsts))
        if favour == "newest":
            ranks = ranks[::-1]
        w = np.exp(-m * ranks)
        expected = (w[:, None] * chunks[firsts, s - firsts]).sum(0) / w.sum()
        assert status is StepStatus.OK
        np.testing.assert_allclose(action, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("favour", "expected"), [
    ("oldest", math.exp(-0.5) / (1 + math.exp(-0.5))),
    ("newest", 1 / (1 + math.exp(-0.5)))])
def test_ensemble_two_chunk_weights(favour, expected):
    buf = make("temporal_ensemble", ensemble_coeff=0.5, favour=favour)
    out = run(buf, range(4), {0: [(np.zeros((K, D)), t(0))], 2: [(np.ones((K, D)), t(1))]})
    assert [a[0] for _, a in out[:2]] == [0.0, 0.0]
    assert out[2][1][0] == pytest.approx(expected, abs=1e-12)
    assert out[3][1][0] == pytest.approx(expected, abs=1e-12)


def test_ensemble_late_chunk_is_ranked_by_stamp():
    orders = []
    for late_first in (False, True):
        buf = make("temporal_ensemble", ensemble_coeff=0.5)
        buf.add_chunk(coded(0), t(0))
        buf.action_at(t(0))
        pair = [(coded(1), t(1)), (coded(2), t(2))]
        verdicts = [buf.add_chunk(c, ts) for c, ts in (pair[::-1] if late_first else pair)]
        orders.append(np.array([buf.action_at(t(s)).action.copy() for s in range(2, 8)]))
        assert verdicts[-1] is (ChunkVerdict.ACCEPTED_LATE if late_first else ChunkVerdict.ACCEPTED)
        assert buf.stats().late_accepted == int(late_first)
    np.testing.assert_array_equal(orders[0], orders[1])


@pytest.mark.parametrize("mode", ["receding_horizon", "async_latency_compensated"])
def test_out_of_order_chunk_rejected(mode):
    buf = make(mode)
    buf.add_chunk(coded(2), t(2))
    assert buf.add_chunk(coded(1), t(1)) is ChunkVerdict.OUT_OF_ORDER
    assert buf.add_chunk(coded(3), t(2)) is ChunkVerdict.OUT_OF_ORDER  # same stamp is not newer
    assert buf.stats().rejected["out_of_order"] == 2
    assert source(buf.action_at(t(3))) == (2, 1)


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("mode", MODES)
def test_stale_chunk_rejected_and_last_useful_one_used(mode):
    buf = make(mode, blend_steps=0)
    run(buf, range(31), {0: [(coded(1), t(0))]})  # coded(1) covers steps 0..19, then dry
    assert buf.add_chunk(coded(2), t(30 - K + 1)) is ChunkVerdict.STALE  # last action is step 30
    assert buf.stats().rejected["stale"] == 1
    assert buf.add_chunk(coded(3), t(31 - K + 1)).accepted  # last action is for step 31
    assert source(buf.action_at(t(31))) == (3, K - 1)


@pytest.mark.parametrize("mode", MODES)
def test_running_dry_holds_last_action_flagged(mode):
    buf = make(mode)
    first = buf.action_at(t(0))
    assert first.status is StepStatus.EMPTY and first.action is None and first.is_hold
    buf.add_chunk(coded(1), t(1))
    out = run(buf, range(1, K + 4), {})
    assert [s for s, _ in out[:K]] == [StepStatus.OK] * K
    for status, action in out[K:]:
        assert status is StepStatus.DRY
        assert action[0] == 1000 + K - 1
    again = buf.action_at(t(K + 3))  # a repeated call for the same step is not a new dry step
    assert again.is_hold
    stats = buf.stats()
    assert stats.dry_steps == 1 + 3 and stats.steps_remaining == 0 and stats.depth == 0


@pytest.mark.parametrize("mode", MODES)
def test_time_jump_backwards_drops_chunks_and_holds(mode):
    buf = make(mode, blend_steps=0)
    run(buf, range(6), {0: [(coded(1), t(0))]})
    t_back = 10.0  # e.g. simulation reset
    jump = buf.action_at(t_back)
    assert jump.status is StepStatus.TIME_JUMP and jump.action[0] == 1005
    stats = buf.stats()
    assert stats.time_jumps_backward == 1 and stats.depth == 0
    assert buf.add_chunk(coded(8), t(7)) is ChunkVerdict.FUTURE  # in flight from the old timeline
    assert buf.add_chunk(coded(7), t_back - 1.0) is ChunkVerdict.PRE_JUMP
    assert buf.add_chunk(coded(2), t_back - 0.01).accepted  # observed just before the first call
    assert source(buf.action_at(t_back + DT)) == (2, 2)
    assert buf.action_at(t_back + 2 * DT).step == jump.step + 2


@pytest.mark.parametrize("mode", MODES)
def test_time_jump_forward_drops_chunks_small_gap_does_not(mode):
    buf = make(mode, max_time_gap=0.5, blend_steps=0)
    run(buf, range(3), {0: [(coded(1), t(0))]})
    late = buf.action_at(t(6))  # three missed steps: plain time keying
    assert late.status is StepStatus.OK and source(late) == (1, 6)
    t_resume = t(6) + 1.0  # paused for a second
    jump = buf.action_at(t_resume)
    assert jump.status is StepStatus.TIME_JUMP and jump.action[0] == 1006
    assert buf.stats().time_jumps_forward == 1 and buf.stats().depth == 0
    assert buf.add_chunk(coded(2), t(5)) is ChunkVerdict.PRE_JUMP  # observed before the pause
    assert buf.action_at(t_resume + DT).status is StepStatus.DRY
    assert buf.add_chunk(coded(3), t_resume + DT).accepted
    assert source(buf.action_at(t_resume + 3 * DT)) == (3, 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("phase", [0.0, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("period_error", [0.0, 0.003])
def test_jitter_neither_skips_nor_repeats(mode, phase, period_error):
    """Index advances by exactly one per tick whatever the stamp phase, jitter and drift."""
    k = 200
    buf = make(mode, chunk_size=k, action_dim=D)
    rng = np.random.default_rng(11)
    jitter = rng.uniform(-0.35 * DT, 0.35 * DT, size=k)  # +-7 ms at 50 Hz
    buf.action_at(T0)
    buf.add_chunk(coded(1, k), T0 + phase * DT)
    indices = []
    for s in range(1, k - 2):
        step = buf.action_at(T0 + s * DT * (1 + period_error) + jitter[s])
        assert step.status is StepStatus.OK
        indices.append(source(step)[1])
    assert np.all(np.diff(indices) == 1)
    assert buf.stats().regrids == 0


def test_timer_phase_shift_regrids_without_skipping():
    buf = make("receding_horizon")
    buf.add_chunk(coded(1), t(0))
    # The timer restarts 0.45 step late at step 5; one outlier at step 2 is ignored.
    offsets = [0.45 * DT if s >= 5 else (0.42 * DT if s == 2 else 0.0) for s in range(12)]
    indices = [source(buf.action_at(t(s) + offsets[s]))[1] for s in range(12)]
    assert indices == list(range(12))
    assert buf.stats().regrids == 1


@pytest.mark.parametrize("mode", MODES)
def test_repeated_call_in_same_step_is_idempotent(mode):
    buf = make(mode, blend_steps=3)
    run(buf, range(4), {0: [(coded(1), t(0))]})
    buf.add_chunk(coded(2), t(2))
    first = buf.action_at(t(4)).action.copy()
    second = buf.action_at(t(4) + 0.004).action.copy()
    np.testing.assert_array_equal(first, second)


def test_chunks_added_before_first_step_are_time_keyed():
    buf = make("async_latency_compensated")
    buf.add_chunk(coded(1), t(-3))  # observed 3 steps before the control loop's first call
    assert source(buf.action_at(t(0))) == (1, 3)


# ---------------------------------------------------------------- bookkeeping


def test_ensemble_ring_eviction_is_counted():
    buf = make("temporal_ensemble", max_chunks=3)
    buf.action_at(t(0))
    for s in range(5):
        assert buf.add_chunk(coded(s), t(s)).accepted
    stats = buf.stats()
    assert stats.depth == buf.depth == 3 and stats.evicted == 2 and stats.accepted == 5
    assert buf.add_chunk(coded(9), t(-1)) is ChunkVerdict.OUT_OF_ORDER  # older than a full ring


def test_receding_drops_superseded_chunks_without_eviction():
    buf = make("receding_horizon", max_chunks=2)
    run(buf, range(10), {s: [(coded(s), t(s))] for s in range(10)})
    stats = buf.stats()
    assert stats.depth == 2 and stats.evicted == 0


def test_stats_and_reset():
    buf = make("async_latency_compensated")
    run(buf, range(5), {0: [(coded(1), t(0))], 3: [(coded(2), t(2))]})
    buf.add_chunk(coded(0), t(1))
    stats = buf.stats()
    assert stats.depth >= 1 and stats.steps_remaining == 2 + K - 1 - 4
    assert stats.accepted == 2 and stats.rejected["out_of_order"] == 1
    assert stats.switches == 2 and stats.last_status == "ok"
    buf.reset()
    stats = buf.stats()
    assert (stats.depth, stats.accepted, stats.rejected["out_of_order"]) == (0, 0, 0)
    assert buf.action_at(t(5)).status is StepStatus.EMPTY


def test_output_array_is_preallocated_and_read_only():
    buf = make("temporal_ensemble")
    buf.add_chunk(coded(1), t(0))
    a, b = buf.action_at(t(0)).action, buf.action_at(t(1)).action
    assert np.shares_memory(a, b)
    with pytest.raises(ValueError):
        a[0] = 0.0
