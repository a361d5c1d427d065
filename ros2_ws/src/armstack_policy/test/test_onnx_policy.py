"""Runners on tiny generated ONNX graphs, checked numerically; model card validation."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("onnx")
import onnx
from armstack_policy.ddim import NoiseSchedule
from armstack_policy.observation import ObservationConfig
from armstack_policy.onnx_policy import (CARD_FILE, EXPORT_TOOL, METADATA_CARD_KEY, TRAIN_TOOL,
                                         ACTRunner, CardError, DiffusionRunner, PolicyCard,
                                         RunnerConfig, consensus_chunk, load_policy)
from armstack_policy.proof_models import ProofSpec, write_proof_model


def observation(spec: ProofSpec, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = spec.n_obs_steps
    obs = {"observation.state": rng.standard_normal((n, len(spec.state_names)))}
    if spec.classes:
        obs["observation.environment_state"] = rng.standard_normal((n, spec.env_dim))
    for cam in spec.cameras:
        obs[f"observation.images.{cam}"] = rng.random((n, 3, *spec.image_size))
    return {k: v.astype(np.float32) for k, v in obs.items()}


def card_of(model) -> dict:
    return json.loads((model.path.parent / CARD_FILE).read_text())


def rewrite_card(model, edit) -> None:
    card = card_of(model)
    edit(card)
    (model.path.parent / CARD_FILE).write_text(json.dumps(card))


# ---------------------------------------------------------------- ACT


@pytest.mark.parametrize("spec", [
    ProofSpec(),
    ProofSpec(action_kind="ee", chunk_size=5),
    ProofSpec(classes=(), cameras=("front",), image_size=(6, 10)),
    ProofSpec(cameras=("front", "wrist"), fields=("x", "y", "present"), chunk_size=1),
], ids=["joint", "ee", "image-only", "two-cameras"])
def test_act_runner_returns_the_graphs_chunk(tmp_path, spec):
    model = write_proof_model(tmp_path, spec)
    policy = load_policy(model.path, RunnerConfig())
    assert isinstance(policy, ACTRunner)
    assert policy.card.action_names == spec.action_names
    obs = observation(spec)
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (spec.chunk_size, len(spec.action_names))
    np.testing.assert_allclose(chunk, model.expected_act(obs), rtol=1e-5, atol=1e-6)
    policy.reset()  # stateless: same answer again
    np.testing.assert_array_equal(policy.predict_chunk(obs), chunk)


def test_observation_shape_and_keys_are_checked(tmp_path):
    policy = load_policy(write_proof_model(tmp_path).path, RunnerConfig())
    obs = observation(ProofSpec())
    with pytest.raises(ValueError, match=r"'observation.state' has shape \(1, 6\)"):
        policy.predict_chunk({**obs, "observation.state": obs["observation.state"][:, :6]})
    with pytest.raises(ValueError, match="lacks 'observation.environment_state'"):
        policy.predict_chunk({"observation.state": obs["observation.state"]})


# ---------------------------------------------------------------- Diffusion


def direct_ddim(model, obs: dict, noise: np.ndarray, steps: int) -> np.ndarray:
    """The DDIM (eta 0) loop written out from the card, independently of armstack_policy.ddim."""
    card = card_of(model)["diffusion"]
    ab = np.array(card["alphas_cumprod"])
    big_t = card["num_train_timesteps"]
    assert card["timestep_spacing"] == "trailing"
    timesteps = [int(round(big_t - i * big_t / steps)) - 1 for i in range(steps)]
    x = noise.astype(np.float64)
    for i, t in enumerate(timesteps):
        eps = model.expected_eps(x.astype(np.float32), t, obs).astype(np.float64)
        x0 = np.clip((x - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t]), -1.0, 1.0)
        ab_prev = ab[timesteps[i + 1]] if i + 1 < steps else 1.0
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    offset, scale = np.array(card["unnormalize"]["offset"]), np.array(card["unnormalize"]["scale"])
    return x * scale + offset


@pytest.mark.parametrize(("spec", "override"), [
    (ProofSpec(kind="diffusion", n_obs_steps=2, chunk_size=16), 0),
    (ProofSpec(kind="diffusion", n_obs_steps=1, chunk_size=8, action_kind="ee", seed=3), 0),
    (ProofSpec(kind="diffusion", n_obs_steps=2, chunk_size=8, num_inference_steps=10), 3),
], ids=["joint-2obs", "ee-1obs", "steps-override"])
def test_diffusion_runner_matches_a_direct_ddim_loop(tmp_path, spec, override):
    model = write_proof_model(tmp_path, spec)
    policy = load_policy(model.path, RunnerConfig(seed=7, num_inference_steps=override))
    assert isinstance(policy, DiffusionRunner)
    steps = override or spec.num_inference_steps
    assert policy.num_steps == steps
    obs = observation(spec)
    chunk = policy.predict_chunk(obs)
    noise = np.random.default_rng(7).standard_normal((spec.chunk_size, len(spec.action_names)))
    want = direct_ddim(model, obs, noise, steps)
    assert chunk.shape == want.shape
    np.testing.assert_allclose(chunk, want, rtol=1e-4, atol=1e-5)
    # New noise on the next call; reset restores the seed.
    assert not np.allclose(policy.predict_chunk(obs), chunk)
    policy.reset()
    np.testing.assert_allclose(policy.predict_chunk(obs), chunk, rtol=0, atol=1e-6)


def test_consensus_keeps_the_commonest_mode_and_averages_its_noise():
    rng = np.random.default_rng(0)
    mode_a, mode_b = np.zeros((4, 2)), np.full((4, 2), 5.0)
    samples = np.stack([mode_a + 0.1 * rng.standard_normal((4, 2)) for _ in range(4)]
                       + [mode_b + 0.1 * rng.standard_normal((4, 2)) for _ in range(2)])
    chunk = consensus_chunk(samples)  # half of 6: the 3 nearest the medoid, all of mode a
    assert np.abs(chunk).max() < 0.2  # not the all-sample mean, ~1.7 off both modes
    distance = np.linalg.norm((samples[:, None] - samples[None]).reshape(6, 6, -1), axis=-1)
    medoid = int(np.argmin(distance.sum(axis=1)))
    nearest = np.argsort(distance[medoid])[:3]
    np.testing.assert_allclose(chunk, samples[nearest].mean(axis=0))
    np.testing.assert_array_equal(consensus_chunk(samples[:1]), samples[0])


def test_diffusion_samples_are_one_batch_and_their_consensus_is_played(tmp_path):
    """diffusion_samples=4: four DDIM loops, each from its own row of the seeded noise, on the
    same observation; the chunk is the consensus of the four (in normalized units)."""
    spec = ProofSpec(kind="diffusion", n_obs_steps=2, chunk_size=8, action_kind="ee", seed=2)
    model = write_proof_model(tmp_path, spec)
    policy = load_policy(model.path, RunnerConfig(seed=7, diffusion_samples=4))
    obs = observation(spec)
    noise = np.random.default_rng(7).standard_normal((4, spec.chunk_size, len(spec.action_names)))
    runs = np.stack([direct_ddim(model, obs, row, spec.num_inference_steps) for row in noise])
    unnormalize = card_of(model)["diffusion"]["unnormalize"]
    offset, scale = np.array(unnormalize["offset"]), np.array(unnormalize["scale"])
    want = consensus_chunk((runs - offset) / scale) * scale + offset
    np.testing.assert_allclose(policy.predict_chunk(obs), want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(runs[0], runs[1], atol=1e-3)  # the samples differ
    with pytest.raises(ValueError, match="RunnerConfig.diffusion_samples"):
        RunnerConfig(diffusion_samples=-1)


def test_diffusion_samples_default_to_the_cards(tmp_path):
    """A card's diffusion.samples is the runner's unless the config names a count; a card
    without the field (older exports) samples once."""
    spec = ProofSpec(kind="diffusion", n_obs_steps=2, chunk_size=8, action_kind="ee", seed=2)
    model = write_proof_model(tmp_path, spec)
    assert load_policy(model.path, RunnerConfig()).samples == 1
    rewrite_card(model, _set(("diffusion", "samples"), 3))
    card_chunk = load_policy(model.path, RunnerConfig(seed=7)).predict_chunk(observation(spec))
    named = load_policy(model.path, RunnerConfig(seed=7, diffusion_samples=3))
    assert named.samples == 3
    np.testing.assert_array_equal(card_chunk, named.predict_chunk(observation(spec)))
    assert load_policy(model.path, RunnerConfig(diffusion_samples=1)).samples == 1
    rewrite_card(model, _set(("diffusion", "samples"), 0))
    with pytest.raises(CardError, match="diffusion.samples must be an int >= 1, got 0"):
        load_policy(model.path, RunnerConfig())


def test_diffusion_schedule_disagreement_is_refused(tmp_path):
    model = write_proof_model(tmp_path, ProofSpec(kind="diffusion", chunk_size=8))

    def shift(card: dict) -> None:
        card["diffusion"]["alphas_cumprod"][3] *= 1.001

    rewrite_card(model, shift)
    with pytest.raises(CardError, match="alphas_cumprod"):
        load_policy(model.path, RunnerConfig())


def test_diffusion_waypoints_must_cover_the_chunk(tmp_path):
    model = write_proof_model(tmp_path, ProofSpec(kind="diffusion", chunk_size=8))

    def waypoints(card: dict) -> None:
        card["diffusion"] |= {"waypoints": 3, "stride": 2}

    rewrite_card(model, waypoints)
    with pytest.raises(CardError, match=r"diffusion.waypoints \(3\) and diffusion.stride \(2\) "
                                        r"must give control.chunk_size \(8\)"):
        load_policy(model.path, RunnerConfig())


def test_too_many_inference_steps_are_refused(tmp_path):
    spec = ProofSpec(kind="diffusion", chunk_size=8, schedule=NoiseSchedule(num_train_timesteps=20))
    model = write_proof_model(tmp_path, spec)
    with pytest.raises(ValueError, match="num_inference_steps 21 exceeds"):
        load_policy(model.path, RunnerConfig(num_inference_steps=21))


# ---------------------------------------------------------------- loading and the card


def test_missing_model_names_the_path_and_the_tools(tmp_path):
    missing = tmp_path / "policy.onnx"
    with pytest.raises(FileNotFoundError) as info:
        load_policy(missing, RunnerConfig())
    assert str(missing) in str(info.value)
    assert TRAIN_TOOL in str(info.value) and EXPORT_TOOL in str(info.value)


def test_card_from_onnx_metadata_when_the_json_is_missing(tmp_path):
    model = write_proof_model(tmp_path)
    card = card_of(model)
    (tmp_path / CARD_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{CARD_FILE}.*{EXPORT_TOOL}"):
        load_policy(model.path, RunnerConfig())
    graph = onnx.load(str(model.path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_CARD_KEY, json.dumps(card)
    onnx.save(graph, str(model.path))
    assert load_policy(model.path, RunnerConfig()).card.chunk_size == card["control"]["chunk_size"]


def test_a_file_that_is_not_onnx_is_named_with_or_without_a_card(tmp_path):
    model = write_proof_model(tmp_path)
    model.path.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"policy\.onnx: not a usable ONNX model"):
        load_policy(model.path, RunnerConfig())
    (tmp_path / CARD_FILE).unlink()
    with pytest.raises(ValueError, match=rf"policy\.onnx: not an ONNX model .*{CARD_FILE}"):
        load_policy(model.path, RunnerConfig())


def _drop(path: tuple):
    def edit(card: dict) -> None:
        node = card
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _set(path: tuple, value):
    def edit(card: dict) -> None:
        node = card
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "match"), [
    (_set(("format",), "armstack-model-card/0"), "format must be 'armstack-model-card/1'"),
    (_set(("policy", "kind"), "pi0"), "policy.kind must be one of"),
    (_drop(("control", "chunk_size")), "missing field control.chunk_size"),
    (_set(("control", "fps"), 0), "control.fps must be a number"),
    (_set(("action", "kind"), "torque"), "action.kind must be one of"),
    (_drop(("observation", "observation.environment_state", "classes")),
     r"missing field observation\['observation.environment_state'\].classes"),
    (_set(("observation", "observation.state", "names"), ["waist", "waist"]),
     r"observation\['observation.state'\].names must be a non-empty list of distinct names"),
    (_set(("action", "names"), ["waist"]),
     r"onnx.outputs must hold 'action' of shape \[batch, 20, 1\]"),
    (_set(("control", "n_obs_steps"), 2), r"observation.state has shape \[batch, 1, 7\], "
                                          r"expected \[batch, 2, 7\]"),
    (_set(("observation", "observation.environment_state", "hold_s"), -1.0),
     r"observation\['observation.environment_state'\].hold_s must be a number of seconds"),
], ids=["format", "kind", "chunk", "fps", "action-kind", "classes", "names", "action-dim", "n-obs",
        "hold"])
def test_card_errors_name_the_field(tmp_path, edit, match):
    model = write_proof_model(tmp_path)
    rewrite_card(model, edit)
    with pytest.raises(CardError, match=match):
        load_policy(model.path, RunnerConfig())


def test_card_and_graph_must_agree(tmp_path):
    model = write_proof_model(tmp_path)
    other = write_proof_model(tmp_path / "other", ProofSpec(chunk_size=10))
    (tmp_path / CARD_FILE).write_text((other.path.parent / CARD_FILE).read_text())
    with pytest.raises(CardError, match=r"graph tensor action has shape \[batch, 20, 7\], "
                                        r"the card says \[batch, 10, 7\]"):
        load_policy(model.path, RunnerConfig())


def test_card_reads_the_fields_the_runtime_needs(tmp_path):
    spec = ProofSpec(kind="diffusion", fps=30.0, n_obs_steps=2, chunk_size=8, cameras=("front",))
    card = PolicyCard.from_dict(card_of(write_proof_model(tmp_path, spec)))
    assert (card.kind, card.fps, card.chunk_size, card.n_obs_steps) == ("diffusion", 30.0, 8, 2)
    assert card.dt == pytest.approx(1 / 30)
    assert card.cameras == (("front", 8, 8),) and card.object_classes == ("red", "green", "blue")
    assert card.observation_keys == ("observation.state", "observation.environment_state",
                                     "observation.images.front")
    assert card.diffusion.num_inference_steps == 5 and card.diffusion.action_scale.shape == (7,)
    assert card.object_hold == 0.0  # a card without hold_s (older exports): no hold
    raw = card_of(write_proof_model(tmp_path / "held"))
    raw["observation"]["observation.environment_state"]["hold_s"] = 0.4
    held = PolicyCard.from_dict(raw)
    assert held.object_hold == 0.4 and ObservationConfig.for_card(held).object_hold == 0.4


@pytest.mark.parametrize(("field", "value"), [("provider", "gpu"), ("intra_op_threads", -1),
                                              ("num_inference_steps", -2)])
def test_runner_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"RunnerConfig.{field}"):
        RunnerConfig(**{field: value})
