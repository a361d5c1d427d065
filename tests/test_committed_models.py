"""The policies committed under models/policy load from their cards alone and give a chunk of
the card's shape: what a fresh clone's demo and evaluations rely on. Each card also carries
the evaluations its model was committed on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from armstack_policy.onnx_policy import CARD_FILE, RunnerConfig, load_policy

MODELS = sorted((Path(__file__).resolve().parents[1] / "models" / "policy").glob("*/policy.onnx"))


def test_the_demo_and_diffusion_models_are_committed():
    assert {p.parent.name for p in MODELS} >= {"act_pick", "dp_pick"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.parent.name)
def test_a_committed_policy_runs_from_its_card(path: Path):
    policy = load_policy(path, RunnerConfig())
    card = policy.card
    raw = json.loads(path.with_name(CARD_FILE).read_text(encoding="utf-8"))
    features = raw["normalization"]["features"]
    # The observation the dataset's statistics centre on: every feature at its mean.
    observation = {}
    for spec in card.inputs:
        if spec.name in card.observation_keys:
            shape = (card.n_obs_steps, *spec.shape[2:])
            offset = np.asarray(features[spec.name]["offset"], dtype=np.float32)
            observation[spec.name] = np.broadcast_to(offset, shape).copy()
    chunk = policy.predict_chunk(observation)
    assert chunk.shape == (card.chunk_size, len(card.action_names))
    assert np.isfinite(chunk).all()
    assert raw["evaluation"], f"{path.parent.name}: the card records no evaluation"
