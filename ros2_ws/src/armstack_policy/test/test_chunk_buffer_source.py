"""ActionStep.t_obs: the observation time of the newest chunk behind each output, which the
policy node puts in each command's header (the camera frame's stamp, carried forward)."""

import numpy as np
import pytest
from armstack_policy.chunk_buffer import MODES, ChunkBuffer, ChunkBufferConfig, StepStatus

K, D, DT = 10, 2, 0.02
T0 = 50.0


def t(step: float) -> float:
    return T0 + step * DT


def chunk(value: float) -> np.ndarray:
    return np.full((K, D), value)


def make(mode: str, **overrides) -> ChunkBuffer:
    return ChunkBuffer(ChunkBufferConfig(mode=mode, chunk_size=K, action_dim=D, dt=DT, **overrides))


def play(buf: ChunkBuffer, steps: range, arrivals: dict[int, float]) -> list[float | None]:
    """t_obs of each step's output; arrivals[s] = observation step of a chunk added before s."""
    stamps = []
    for s in steps:
        if s in arrivals:
            assert buf.add_chunk(chunk(float(s)), t(arrivals[s])).accepted
        stamps.append(buf.action_at(t(s)).t_obs)
    return stamps


@pytest.mark.parametrize("mode", MODES)
def test_no_action_has_no_stamp(mode):
    step = make(mode).action_at(t(0))
    assert step.status is StepStatus.EMPTY and step.t_obs is None


def test_ensemble_carries_the_newest_contributor_also_for_late_chunks():
    buf = make("temporal_ensemble", max_chunks=K)
    stamps = play(buf, range(4), {0: 0, 2: 1})
    assert stamps == [t(0), t(0), t(1), t(1)]
    # A late chunk (observed before the newest one) contributes but is not the newest.
    assert buf.add_chunk(chunk(9.0), t(0.5)).accepted
    assert buf.action_at(t(4)).t_obs == t(1)


def test_receding_keeps_the_active_chunk_stamp_until_it_switches():
    buf = make("receding_horizon", n_action_steps=3)
    stamps = play(buf, range(6), {0: 0, 1: 1})
    # The newer chunk waits until the first one has played its 3 actions.
    assert stamps == [t(0)] * 3 + [t(1)] * 3


def test_async_blend_carries_the_new_chunk_stamp_from_its_first_step():
    buf = make("async_latency_compensated", blend_steps=3)
    stamps = play(buf, range(5), {0: 0, 2: 1})
    assert stamps == [t(0), t(0), t(1), t(1), t(1)]


@pytest.mark.parametrize("mode", MODES)
def test_a_hold_carries_the_stamp_of_the_held_action(mode):
    buf = make(mode)
    stamps = play(buf, range(K + 2), {0: 0})
    step = buf.action_at(t(K + 2))
    assert step.status is StepStatus.DRY and step.t_obs == t(0) == stamps[-1]


def test_coming_out_of_a_hold_takes_the_new_chunk_stamp():
    buf = make("async_latency_compensated", blend_steps=4)
    play(buf, range(K + 1), {0: 0})
    assert buf.add_chunk(chunk(5.0), t(K)).accepted
    assert buf.action_at(t(K + 1)).t_obs == t(K)  # blending from the held action already
    buf.reset()
    assert buf.action_at(t(0)).t_obs is None
