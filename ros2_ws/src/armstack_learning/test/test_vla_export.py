"""VLA export: prefill/step graphs, the card, torch vs ONNX Runtime parity through the runtime's
own runner, and the adapter path (per-layer cache names, table tokenizer) on this model."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.export import example_observation  # noqa: E402
from armstack_learning.features import ENV_STATE_KEY, LANGUAGE_KEY, ObjectSlotsConfig  # noqa: E402
from armstack_learning.vla_export import (  # noqa: E402
    INSTRUCTION_INPUT,
    build_vla_card,
    check_vla_parity,
    export_vla_onnx,
    vla_card_markdown,
)
from armstack_policy.onnx_policy import CARD_FILE, RunnerConfig  # noqa: E402
from armstack_policy.vla_decode import (  # noqa: E402
    NoInstructionError,
    VLACard,
    VLADecodeConfig,
    load_vla_policy,
)
from torch import nn  # noqa: E402

CKPT = {"dataset": {"fps": 10, "path": "synthetic", "sha256": "0" * 64, "episodes": 4,
                    "frames": 48},
        "step": 0, "train_config": {"normalization": {}}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    """(policy, its dataset, export dir with graphs and card) of an untrained tiny VLA."""
    policy, ds = make_vla(tiny_vla_config(n_layers=2, chunk_size=3), vla_dataset_root,
                          vla_layout, seed=1)
    policy.eval()
    out = tmp_path_factory.mktemp("vla_export")
    export_vla_onnx(policy, out)
    card = build_vla_card(policy, CKPT, "raw")
    (out / CARD_FILE).write_text(json.dumps(card))
    return policy, ds, out


def _observation(ds, t):
    item = ds[t]
    return {k: v.numpy() for k, v in item.items() if k.startswith("observation.")
            and k != LANGUAGE_KEY}


def test_onnx_decode_matches_torch(exported):
    policy, _, out = exported
    runner = load_vla_policy(out / "policy.onnx", RunnerConfig())
    parity = check_vla_parity(policy, runner, samples=3)
    assert parity["tokens_identical"] and parity["kv_cache_tokens_identical"]
    assert parity["logits_max_abs_error"] <= 1e-4
    assert parity["kv_cache_vs_full_logits_max_abs_error"] <= 1e-4


def test_runner_chunk_equals_the_torch_policy(exported):
    policy, ds, out = exported
    runner = load_vla_policy(out / "policy.onnx", RunnerConfig())
    obs = _observation(ds, 5)
    with pytest.raises(NoInstructionError):
        runner.predict_chunk(obs)
    runner.set_instruction(ds.task(5))
    chunk = runner.predict_chunk(obs)
    policy.set_instruction(ds.task(5))
    want = policy.predict_chunk({k: torch.from_numpy(v[None]) for k, v in obs.items()})[0]
    assert chunk.shape == (5, 8) and chunk.dtype == np.float32  # 3 waypoints, 2 frames apart
    assert np.array_equal(chunk, want.numpy())
    assert runner.card.n_action_tokens == 24 and runner.card.prefix_length == policy.prefix_length


def test_card_describes_tokens_bins_prefix_and_cache(exported):
    policy, _, out = exported
    card = json.loads((out / CARD_FILE).read_text())
    vla = card["vla"]
    assert card["policy"]["kind"] == "vla" and card["control"]["chunk_size"] == 5
    assert vla["actions"]["waypoints"] == 3 and vla["actions"]["stride"] == 2
    assert vla["tokenizer"]["words"] == list(policy.config.vocabulary)
    assert vla["actions"]["bin_token_ids"] == list(range(10, 266))
    assert vla["vocab_size"] == 266 and vla["action_tokens"] == 24
    assert [s["tokens"] for s in vla["prefix"]["segments"]] == [16, 8, 1, 1]  # 4x4 patches
    assert vla["prefix"]["length"] == policy.prefix_length == 26
    assert vla["cache"]["n_layers"] == 2 and vla["cache"]["head_dim"] == 16
    assert card["observation"]["observation.images.color"]["height"] == 32
    assert np.allclose(vla["actions"]["half_bin_width"], policy.action_bins().width / 2)
    text = vla_card_markdown(card | {"parity": {"tokens_identical": True}})
    assert "Adapting a pretrained VLA" in text and "prefix of 26 tokens" in text
    VLACard.from_dict(card)  # the runtime accepts it


class _PerLayerPrefill(nn.Module):
    """The prefill graph with one cache tensor per layer (Hugging Face naming)."""

    def __init__(self, policy) -> None:  # noqa: ANN001
        super().__init__()
        self.policy = policy

    def forward(self, state, image, tokens):  # noqa: ANN001, ANN201
        prefix = self.policy.prefix_embeddings({"observation.state": state,
                                                "observation.images.color": image,
                                                LANGUAGE_KEY: tokens})
        logits, k, v = self.policy.net.prefill(prefix)
        return (logits, *k.unbind(0), *v.unbind(0))


class _PerLayerStep(nn.Module):
    """The step graph fed an attention mask instead of a position, per-layer caches."""

    def __init__(self, policy) -> None:  # noqa: ANN001
        super().__init__()
        self.net = policy.net

    def forward(self, input_ids, attention_mask, *past):  # noqa: ANN001, ANN201
        n = len(past) // 2
        position = attention_mask.sum(dim=1)[:1] - 1  # (1,) index of this token
        logits, k, v = self.net.step(input_ids, position, torch.stack(past[:n]),
                                     torch.stack(past[n:]))
        return (logits, *k.unbind(0), *v.unbind(0))


def _export_per_layer(policy, out) -> None:  # noqa: ANN001
    """Re-export the model as a pretrained model's exporter might lay it out."""
    obs = example_observation(policy, 1, np.random.default_rng(0))
    state = torch.from_numpy(obs["observation.state"])
    image = torch.from_numpy(obs["observation.images.color"])
    tokens = torch.zeros(1, policy.tokenizer.max_tokens, dtype=torch.long)
    n = policy.config.n_layers
    keys = [f"present.{i}.key" for i in range(n)] + [f"present.{i}.value" for i in range(n)]
    past_names = [k.replace("present", "past_key_values") for k in keys]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_PerLayerPrefill(policy), (state, image, tokens),
                          str(out / "prefill.onnx"), input_names=[
                              "observation.state", "observation.images.color", "input_ids"],
                          output_names=["logits", *keys], opset_version=17, dynamo=False)
        _, k, v = policy.net.prefill(policy.prefix_embeddings(
            {"observation.state": state, "observation.images.color": image,
             LANGUAGE_KEY: tokens}))
        past = (*k.unbind(0), *v.unbind(0))
        mask = torch.ones(1, policy.prefix_length + 1, dtype=torch.long)
        token = torch.full((1, 1), policy.bin_offset, dtype=torch.long)
        torch.onnx.export(_PerLayerStep(policy), (token, mask, *past), str(out / "decoder.onnx"),
                          input_names=["input_ids", "attention_mask", *past_names],
                          output_names=["logits", *keys], opset_version=17, dynamo=False,
                          dynamic_axes={"attention_mask": {1: "length"}}
                          | {n: {2: "past"} for n in past_names}
                          | {n: {2: "total"} for n in keys})


def test_adapter_path_runs_a_differently_exported_model(exported, tmp_path):
    """The same weights exported with per-layer cache tensors, an attention mask instead of a
    position and a table tokenizer run through the same loader and decode the same chunk."""
    policy, ds, out = exported
    _export_per_layer(policy, tmp_path)
    card = json.loads((out / CARD_FILE).read_text())
    card["onnx"]["prefill"]["file"], card["onnx"]["step"]["file"] = "prefill.onnx", "decoder.onnx"
    card["vla"]["io"] = {"prefill": {"instruction": "input_ids", "logits": "logits"},
                         "step": {"token": "input_ids", "attention_mask": "attention_mask",
                                  "logits": "logits"}}
    card["vla"]["cache"] |= {"layout": "per_layer", "past_key": "past_key_values.{i}.key",
                             "past_value": "past_key_values.{i}.value",
                             "present_key": "present.{i}.key", "present_value": "present.{i}.value"}
    tasks = sorted(set(ds.reader.tasks))
    card["vla"]["tokenizer"] = {"type": "table", "max_tokens": policy.tokenizer.max_tokens,
                                "pad_id": 0, "entries": {
                                    t: [int(i) for i in policy.tokenizer.encode(t) if i]
                                    for t in tasks}}
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    adapted = load_vla_policy(tmp_path / "prefill.onnx", RunnerConfig())
    native = load_vla_policy(out / "policy.onnx", RunnerConfig())
    obs = _observation(ds, 17)
    for runner in (adapted, native):
        runner.set_instruction(ds.task(17))
    assert np.array_equal(adapted.predict_chunk(obs), native.predict_chunk(obs))


def test_set_instruction_returns_the_words_the_model_does_not_know(exported):
    _, ds, out = exported
    runner = load_vla_policy(out / "policy.onnx", RunnerConfig())
    assert runner.set_instruction(ds.task(0)) == []
    assert runner.set_instruction("put the purple cube in the bin") == ["purple"]
    assert runner.instruction == "put the purple cube in the bin"  # kept; purple reads as <unk>


def test_temperature_sampling_stays_on_action_tokens_and_is_seeded(exported):
    _, ds, out = exported
    runner = load_vla_policy(out / "policy.onnx", RunnerConfig(),
                             VLADecodeConfig(temperature=2.0, seed=5))
    runner.set_instruction(ds.task(0))
    obs = _observation(ds, 0)
    first = runner.decode(obs).tokens
    runner.reset()
    assert np.array_equal(runner.decode(obs).tokens, first)
    assert (first >= runner.card.bins.token_ids.min()).all()
    assert runner.decode(obs).tokens.shape == (1, 24)
    assert INSTRUCTION_INPUT in runner.card.prefill.names.values()


def test_a_vla_with_object_tokens_exports_with_its_object_slots(
        tmp_path, tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    layout = dataclasses.replace(vla_layout, objects=ObjectSlotsConfig(("red_cube", "blue_cube"),
                                                                       hold=0.5))
    policy, ds = make_vla(tiny_vla_config(chunk_size=3), vla_dataset_root, layout, seed=3)
    policy.eval()
    export_vla_onnx(policy, tmp_path)
    card = build_vla_card(policy, CKPT, "raw")
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    assert card["observation"][ENV_STATE_KEY]["classes"] == ["red_cube", "blue_cube"]
    assert {"name": ENV_STATE_KEY, "tokens": 2} in [
        {k: seg[k] for k in ("name", "tokens")} for seg in card["vla"]["prefix"]["segments"]]
    runner = load_vla_policy(tmp_path / "policy.onnx", RunnerConfig())
    assert runner.card.object_classes == ("red_cube", "blue_cube")
    assert runner.card.object_hold == 0.5 and runner.card.prefix_length == policy.prefix_length
    parity = check_vla_parity(policy, runner, samples=2)
    assert parity["tokens_identical"] and parity["logits_max_abs_error"] <= 1e-4
    obs = _observation(ds, 3)
    assert obs[ENV_STATE_KEY].shape == (1, 8)
    runner.set_instruction(ds.task(3))
    policy.set_instruction(ds.task(3))
    want = policy.predict_chunk({k: torch.from_numpy(v[None]) for k, v in obs.items()})[0]
    assert np.array_equal(runner.predict_chunk(obs), want.numpy())
    with pytest.raises(ValueError, match="lacks 'observation.environment_state'"):
        runner.predict_chunk({k: v for k, v in obs.items() if k != ENV_STATE_KEY})


def test_the_graph_evaluation_names_a_cube_for_a_vla(exported, tmp_path):
    """tools/evaluate_policy.py's choices from the card: a VLA gets an instruction template
    (default or given); a policy without instructions refuses one, named."""
    from armstack_eval.evaluate import DEFAULT_INSTRUCTION, _resolve_choices, build_parser
    from armstack_policy.proof_models import ProofSpec, write_proof_model

    _, _, out = exported

    def resolve(*argv: str):  # noqa: ANN202 - argparse.Namespace
        args = build_parser("evaluate", 1, "policy").parse_args(list(argv))
        args.auto_perception = False
        _resolve_choices(args, print)
        return args

    args = resolve("--policy-model", str(out / "policy.onnx"), "--no-perception")
    assert args.instruction == DEFAULT_INSTRUCTION and not args.needs_objects
    assert resolve("--policy-model", str(out / "policy.onnx"), "--no-perception",
                   "--instruction", "move the {color} block to the bin").instruction \
        == "move the {color} block to the bin"
    act = write_proof_model(tmp_path, ProofSpec(chunk_size=4))  # takes objects: perception on
    assert resolve("--policy-model", str(act.path)).instruction == ""
    with pytest.raises(ValueError, match="takes no instruction"):
        resolve("--policy-model", str(act.path), "--instruction", "the {color} one")
