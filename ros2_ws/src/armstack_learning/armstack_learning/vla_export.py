"""ONNX export of a VLA policy: the prefill and step graphs with their KV cache, the model card
(tokenizer, bins, prefix layout, cache layout) and the torch vs ONNX Runtime parity check.

Files (tools/export_policy.py writes them for a checkpoint of kind "vla"):
    policy.onnx       prefill: raw observations + instruction tokens -> logits of a_0, cache
    policy_step.onnx  step: one token + its position + past cache -> next logits, cache + 1
    model_card.json   armstack-model-card/1 with a "vla" block (armstack_policy.vla_decode reads
                      it), also embedded in both graphs' metadata; MODEL_CARD.md for people.
Parity: the runtime's own loader (VLARunner over ONNX Runtime) and the torch policy decode
the same observations greedily; the tokens must be identical and the logits at every decoded
position within the tolerance. The torch policy's cached decode is also checked against
decoding without a cache (every step recomputed over the whole sequence).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from armstack_policy.onnx_policy import RunnerConfig
from armstack_policy.vla_decode import STEP_FILE, VLARunner, load_vla_policy
from torch import Tensor, nn

from armstack_learning.export import (
    CARD_JSON,
    CARD_MD,
    METADATA_CARD_KEY,
    ONNX_FILE,
    ONNX_OPSET,
    ExportResult,
    card_base,
    embed_metadata,
    example_observation,
    fmt_values,
    md_dataset,
    md_normalization,
    md_training,
    named_units,
)
from armstack_learning.features import ENV_STATE_KEY, LANGUAGE_KEY
from armstack_learning.vla import VLAPolicy

logger = logging.getLogger(__name__)

INSTRUCTION_INPUT = "instruction_tokens"


class _PrefillGraph(nn.Module):
    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.keys = policy.layout.input_keys

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *obs, tokens = inputs
        features = dict(zip(self.keys, obs, strict=True)) | {LANGUAGE_KEY: tokens}
        return self.policy.net.prefill(self.policy.prefix_embeddings(features))


class _StepGraph(nn.Module):
    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.net = policy.net

    def forward(self, token: Tensor, position: Tensor, past_key: Tensor,
                past_value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.net.step(token, position, past_key, past_value)


def example_instructions(policy: VLAPolicy, batch: int, rng: np.random.Generator) -> np.ndarray:
    """(B, L) int64 instruction ids: random words of the vocabulary, then padding."""
    tok = policy.tokenizer
    out = np.zeros((batch, tok.max_tokens), dtype=np.int64)
    for b in range(batch):
        n = int(rng.integers(1, tok.max_tokens + 1))
        out[b, :n] = rng.integers(1, tok.size, n)  # <unk>, <act> and words
    return out


def _export(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer notes on Python-side shape
        # checks (batch-independent by construction) are not actionable here
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    onnx.checker.check_model(str(path))


def export_vla_onnx(policy: VLAPolicy, out_dir: Path) -> tuple[Path, Path]:
    """Write the prefill and step graphs (see the module doc); returns their paths."""
    policy.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    obs = [torch.from_numpy(v) for v in example_observation(policy, 2, rng).values()]
    tokens = torch.from_numpy(example_instructions(policy, 2, rng))
    keys = policy.layout.input_keys
    cache = ["present_key", "present_value"]
    prefill_path, step_path = out_dir / ONNX_FILE, out_dir / STEP_FILE
    _export(_PrefillGraph(policy), (*obs, tokens), prefill_path, [*keys, INSTRUCTION_INPUT],
            ["logits", *cache], {n: {0: "batch"} for n in [*keys, INSTRUCTION_INPUT, "logits"]}
            | {n: {1: "batch"} for n in cache})
    with torch.no_grad():
        features = dict(zip(keys, obs, strict=True)) | {LANGUAGE_KEY: tokens}
        _, past_k, past_v = policy.net.prefill(policy.prefix_embeddings(features))
    token = torch.full((2, 1), policy.bin_offset, dtype=torch.long)
    position = torch.tensor([policy.prefix_length])
    past = {n: {1: "batch", 3: "past_length"} for n in ("past_key", "past_value")}
    present = {n: {1: "batch", 3: "total_length"} for n in cache}
    _export(_StepGraph(policy), (token, position, past_k, past_v), step_path,
            ["token", "position", "past_key", "past_value"], ["logits", *cache],
            {"token": {0: "batch"}, "logits": {0: "batch"}} | past | present)
    return prefill_path, step_path


def _prefix_segments(policy: VLAPolicy) -> list[dict]:
    rows, cols = policy.config.grid
    segments = [{"name": key, "tokens": rows * cols, "grid": [rows, cols],
                 "patch_pixels": policy.config.stride} for key in policy.layout.image_keys]
    segments.append({"name": "instruction", "tokens": policy.tokenizer.max_tokens,
                     "description": "word ids, <pad>-filled to the fixed length"})
    objects = policy.layout.objects
    if objects:
        segments.append({"name": ENV_STATE_KEY, "tokens": objects.num_slots,
                         "description": "one per object class: linear map of its normalized "
                                        "slot plus a class embedding"})
    return segments + [
        {"name": "observation.state", "tokens": 1,
         "description": "linear map of the normalized joint state"},
        {"name": "<act>", "tokens": 1, "description": "its output predicts the first action token"}]


def _graph_specs(policy: VLAPolicy) -> dict:
    cfg, lay = policy.config, policy.layout
    heads, dh = cfg.n_heads, cfg.dim_model // cfg.n_heads
    p, v = policy.prefix_length, policy.vocab_size
    obs = [{"name": "observation.state", "shape": ["batch", 1, lay.state_dim], "dtype": "float32",
            "description": "joint positions, raw units"}]
    if lay.objects:
        obs.append({"name": ENV_STATE_KEY, "shape": ["batch", 1, lay.env_dim], "dtype": "float32",
                    "description": "localized objects in base_link, one slot per class, raw "
                                   "units"})
    obs += [{"name": key, "shape": ["batch", 1, 3, *policy.input_image_size], "dtype": "float32",
             "description": "RGB in [0, 1], resized with INTER_AREA"} for key in lay.image_keys]
    cache = ["n_layers", "batch", heads, "length", dh]
    prefill = {"file": ONNX_FILE, "inputs": obs + [
        {"name": INSTRUCTION_INPUT, "shape": ["batch", cfg.max_instruction_tokens],
         "dtype": "int64", "description": "instruction token ids (vla.tokenizer)"}],
        "outputs": [{"name": "logits", "shape": ["batch", v], "dtype": "float32"},
                    {"name": "present_key", "shape": [cfg.n_layers, "batch", heads, p, dh]},
                    {"name": "present_value", "shape": [cfg.n_layers, "batch", heads, p, dh]}]}
    step = {"file": STEP_FILE, "inputs": [
        {"name": "token", "shape": ["batch", 1], "dtype": "int64"},
        {"name": "position", "shape": [1], "dtype": "int64",
         "description": "index of the token in the sequence: prefix length + i for a_i"},
        {"name": "past_key", "shape": cache, "dtype": "float32"},
        {"name": "past_value", "shape": cache, "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": ["batch", v], "dtype": "float32"},
                    {"name": "present_key", "shape": cache}, {"name": "present_value",
                                                              "shape": cache}]}
    return {"opset": ONNX_OPSET, "file": ONNX_FILE, "prefill": prefill, "step": step}


def build_vla_card(policy: VLAPolicy, ckpt: dict, weights: str) -> dict:
    """The model card of an exported VLA (parity and evaluation are filled in later)."""
    cfg = policy.config
    bins = policy.action_bins()
    card = card_base(policy, ckpt, weights)
    card["onnx"] = _graph_specs(policy)
    card["control"]["n_obs_steps"] = 1
    card["vla"] = {
        "tokenizer": policy.tokenizer.to_dict(),
        "actions": {**bins.to_dict(), "names": list(policy.layout.action.names),
                    "waypoints": cfg.chunk_size, "stride": cfg.action_stride,
                    "interpolation": "linear between waypoints to control.chunk_size actions "
                                     "at control.fps (armstack_policy.vla_tokens)",
                    "range_source": "dataset min/max of each action dimension (the min_max "
                                    "action normalization: low = offset - scale, high = "
                                    "offset + scale)",
                    "half_bin_width": (bins.width / 2.0).tolist()},
        "vocab_size": policy.vocab_size,
        "action_tokens": policy.n_action_tokens,
        "prefix": {"length": policy.prefix_length, "segments": _prefix_segments(policy),
                   "attention": "bidirectional within the prefix, causal over action tokens"},
        "cache": {"layout": "stacked", "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                  "head_dim": cfg.dim_model // cfg.n_heads, "past_key": "past_key",
                  "past_value": "past_value", "present_key": "present_key",
                  "present_value": "present_value"},
        "io": {"prefill": {"instruction": INSTRUCTION_INPUT, "logits": "logits"},
               "step": {"token": "token", "position": "position", "logits": "logits"}},
        "decoding": {"constrained": "logits masked to the action tokens at every position",
                     "default_temperature": 0.0, "loop": "armstack_policy.vla_decode"},
    }
    return card


def check_vla_parity(policy: VLAPolicy, runner: VLARunner, samples: int = 2,
                     seed: int = 0) -> dict[str, float | bool]:
    """Greedy decodes of the same observations: torch (cached and uncached) vs the runner."""
    policy.eval()
    rng = np.random.default_rng(seed)
    obs = example_observation(policy, samples, rng)
    tokens = example_instructions(policy, samples, rng)
    logit_err = cache_err = 0.0
    same = cache_same = True
    for b in range(samples):
        features = {k: torch.from_numpy(v[b:b + 1]) for k, v in obs.items()}
        features[LANGUAGE_KEY] = torch.from_numpy(tokens[b:b + 1])
        cached = policy.decode(features)
        full = policy.decode(features, use_cache=False)
        runner.set_instruction_tokens(tokens[b])
        got = runner.decode({k: v[b] for k, v in obs.items()})
        same &= bool(np.array_equal(got.tokens, cached.tokens))
        cache_same &= bool(np.array_equal(full.tokens, cached.tokens))
        logit_err = max(logit_err, float(np.abs(got.logits - cached.logits).max()))
        cache_err = max(cache_err, float(np.abs(full.logits - cached.logits).max()))
    return {"logits_max_abs_error": logit_err, "tokens_identical": same,
            "kv_cache_vs_full_logits_max_abs_error": cache_err, "kv_cache_tokens_identical":
            cache_same}


def export_vla(policy: VLAPolicy, ckpt: dict, weights: str, out_dir: Path,
               tolerance: float) -> ExportResult:
    """Graphs, card and parity; raises RuntimeError when the runtime's greedy tokens differ
    from torch's or the logits by more than `tolerance`."""
    prefill_path, step_path = export_vla_onnx(policy, out_dir)
    card = build_vla_card(policy, ckpt, weights)
    card_path = out_dir / CARD_JSON
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    parity = check_vla_parity(policy, load_vla_policy(prefill_path, RunnerConfig()))
    passed = (parity["tokens_identical"] and parity["kv_cache_tokens_identical"]
              and parity["logits_max_abs_error"] <= tolerance
              and parity["kv_cache_vs_full_logits_max_abs_error"] <= tolerance)
    card["parity"] = {**parity, "tolerance": tolerance, "passed": passed}
    if not passed:
        raise RuntimeError(f"VLA ONNX parity failed: {parity} (tolerance {tolerance})")
    for path in (prefill_path, step_path):
        embed_metadata(path, card)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / CARD_MD).write_text(vla_card_markdown(card), encoding="utf-8")
    logger.info("exported %s and %s (parity %s)", prefill_path, step_path, parity)
    return ExportResult(prefill_path, card_path, card)


ADAPTER_NOTES = """\
## Adapting a pretrained VLA

The runtime (`armstack_policy.vla_decode.VLARunner`) knows nothing of this network: it reads
this card. A pretrained VLA exported to ONNX runs in the same policy node when its export and
card keep this contract:

1. Two graphs. Prefill: the observation features it uses (`observation.images.<cam>` as RGB in
   [0, 1], channels first, at the card's size; `observation.state` only if the model takes
   it) plus the instruction ids -> the logits of the first action token and the KV cache.
   Step: one token (+ its position, or an `attention_mask` of ones if the export wants one)
   and the past cache -> the next logits and the grown cache. Wrap the model's own image
   preprocessing (resize, normalization) into the prefill graph so its input is this raw form.
2. Names by role under `vla.io` (`instruction`, `logits`; `token`, `position` or
   `attention_mask`, `logits`); the cache under `vla.cache`: `stacked` tensors
   (n_layers, B, h, T, dh) or `per_layer` with `{i}` in the names, e.g.
   `past_key_values.{i}.key` / `present.{i}.key` as Hugging Face decoder-with-past exports
   name them.
3. Tokenizer: `word` (this card's) or `table`, a map from each instruction text the robot
   will be given to the ids the model's own tokenizer makes of its prompt (precompute it
   offline, e.g. OpenVLA's "In: What action should the robot take to {instruction}?\\nOut:").
4. Actions: `vla.actions` with the model's bins: `low` / `high` per dimension (OpenVLA: the
   1st / 99th percentiles of its training data), `num_bins`, and `bin_token_ids`, the id of
   each bin (OpenVLA: vocab_size - 1 - bin, the last 256 ids in descending order). The
   decoded bin centres must be the robot's action units and `action.names` must say what
   each dimension is (an `ee` pose with a quaternion, or joints); a model that emits
   deltas or Euler angles needs a conversion step that this runtime does not have.
`VLACard.from_dict` checks the card and `VLARunner` checks that every named tensor is in the
graphs. armstack_learning's test_vla_export.py re-exports a model of this kind with per-layer
cache names, an attention mask instead of the position and a table tokenizer, and runs it
through the same loader to the same chunk."""


def vla_card_markdown(card: dict) -> str:
    """Human-readable MODEL_CARD.md of a VLA card."""
    vla, ctl, act, data = card["vla"], card["control"], card["action"], card["dataset"]
    bins, parity = vla["actions"], card.get("parity") or {}
    checks = ", ".join(f"{k} {v}" for k, v in parity.items() if k != "tolerance")
    evaluation = ("Not evaluated yet." if card.get("evaluation") is None
                  else "```json\n" + json.dumps(card["evaluation"], indent=2) + "\n```")
    segments = ", ".join(f"{s['name']} x{s['tokens']}" for s in vla["prefix"]["segments"])
    lines = ["# VLA policy (vision-language-action, tokenized actions)", "",
             (f"Graphs `{card['onnx']['prefill']['file']}` (prefill) and "
              f"`{card['onnx']['step']['file']}` (step), opset {card['onnx']['opset']}; the card "
              f"is in `{CARD_JSON}` and in both graphs' metadata key `{METADATA_CARD_KEY}`."), "",
             "## Tokens", "",
             (f"- vocabulary of {vla['vocab_size']}: "
              f"{', '.join(vla['tokenizer']['special_tokens'])}, "
              f"{len(vla['tokenizer']['words'])} words "
              f"({' '.join(vla['tokenizer']['words'])}), then {bins['num_bins']} action bins "
              f"(ids {bins['bin_token_ids'][0]}..{bins['bin_token_ids'][-1]})"),
             f"- instruction: at most {vla['tokenizer']['max_tokens']} words, <pad>-filled",
             f"- prefix of {vla['prefix']['length']} tokens: {segments}",
             (f"- {vla['action_tokens']} action tokens per chunk ({bins['waypoints']} waypoints "
              f"x {len(act['names'])} values, {bins['order']}); waypoints {bins['stride']} "
              f"frames apart, interpolated to {ctl['chunk_size']} actions"),
             (f"- per-dimension ranges: low {fmt_values(bins['low'])}, "
              f"high {fmt_values(bins['high'])}"),
             f"- half bin width (quantization bound): {fmt_values(bins['half_bin_width'])}",
             "", "## Control", "",
             (f"- `{act['kind']}` actions on `{act['topic']}`: "
              f"{named_units(act['names'], act['units'])}"),
             (f"- chunk of {ctl['chunk_size']} at {ctl['fps']} Hz ({ctl['time_convention']}); "
              f"{ctl['n_action_steps']} actions executed per inference when not ensembling"),
             (f"- decoding: {vla['decoding']['constrained']}; default temperature "
              f"{vla['decoding']['default_temperature']} (greedy)"), ""]
    lines += md_normalization(card)
    lines += ["", "## Provenance", "",
              *md_dataset(data),
              md_training(card),
              f"- torch vs ONNX Runtime parity: {checks or 'not run'}", "",
              ADAPTER_NOTES, "", "## Evaluation", "", evaluation, ""]
    return "\n".join(lines)
