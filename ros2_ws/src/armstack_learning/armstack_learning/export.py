"""ONNX export of trained policies, their model cards, and torch vs ONNX Runtime parity.

Graphs (opset 17, batch axis dynamic, all other shapes fixed):
    ACT        inputs  observation.state (B, 1, D_s), observation.environment_state (B, 1, D_e),
                       observation.images.<cam> (B, 1, 3, H, W) float in [0, 1]; raw units
               output  action (B, k, D_a) raw units. Normalization is inside the graph.
    Diffusion  inputs  x_t (B, H, D_a) noisy actions in NORMALIZED space, timestep (B,) int64,
                       then the observations as for ACT with n_obs steps (raw units)
               output  eps (B, H, D_a), the predicted noise.
               The DDIM loop runs outside the graph (armstack_policy.ddim, NumPy); its result is
               unnormalized with raw = x * scale + offset, the card's diffusion.unnormalize
               block (also in the ONNX metadata as action_offset / action_scale).
    VLA        two graphs (prefill and step with a KV cache) and a "vla" card block: see
               armstack_learning.vla_export, which export_checkpoint hands VLA checkpoints to.

The exporter is torch's TorchScript-based one (dynamo=False): the graphs are static apart from
the batch size, it needs no onnxscript, and it is fast enough to run in the tests.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from armstack_policy.actions import upsample_waypoints
from armstack_policy.ddim import DDIMSampler
from torch import Tensor, nn

from armstack_learning.data import format_episode_ranges
from armstack_learning.diffusion import DiffusionPolicy
from armstack_learning.factory import action_normalization, config_summary, policy_from_checkpoint
from armstack_learning.features import ACTION_KEY, BASE_FRAME, ENV_STATE_KEY, STATE_KEY
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
ONNX_FILE = "policy.onnx"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CARD_FORMAT = "armstack-model-card/1"
METADATA_CARD_KEY = "armstack_model_card"
PARITY_TOLERANCE = 1e-4


class _ChunkGraph(nn.Module):
    """ACT: raw observations in, raw action chunk out."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.keys = policy.layout.input_keys

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.policy.predict_chunk(dict(zip(self.keys, inputs, strict=True)))


class _DenoiserGraph(nn.Module):
    """Diffusion: (x_t normalized, timestep, raw observations) -> eps."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.keys = policy.layout.input_keys

    def forward(self, x_t: Tensor, timestep: Tensor, *inputs: Tensor) -> Tensor:
        return self.policy.denoise(x_t, timestep, dict(zip(self.keys, inputs, strict=True)))


@dataclass
class ExportResult:
    onnx_path: Path
    card_path: Path
    card: dict


def example_observation(policy: Policy, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raw observations spread like the training data: offset + scale * N(0, 1) per feature,
    images uniform in [0, 1]. {feature: (B, n_obs, ...) float32}."""
    obs = {}
    for key in policy.layout.input_keys:
        if key.startswith("observation.images."):
            h, w = policy.input_image_size
            obs[key] = rng.random((batch, policy.n_obs_steps, 3, h, w), dtype=np.float32)
            continue
        affine = policy.normalizer[key]
        offset, scale = affine.offset.numpy(), affine.scale.numpy()
        noise = rng.standard_normal((batch, policy.n_obs_steps, offset.size))
        obs[key] = (offset + scale * noise).astype(np.float32)
    return obs


def _io_spec(policy: Policy) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    keys = policy.layout.input_keys
    if isinstance(policy, DiffusionPolicy):
        inputs, outputs = ["x_t", "timestep", *keys], ["eps"]
    else:
        inputs, outputs = list(keys), [ACTION_KEY]
    return inputs, outputs, {name: {0: "batch"} for name in inputs + outputs}


def export_onnx(policy: Policy, path: Path) -> None:
    """Write the policy's graph (see the module doc) to `path`."""
    policy.eval()
    rng = np.random.default_rng(0)
    obs = [torch.from_numpy(v) for v in example_observation(policy, 2, rng).values()]
    if isinstance(policy, DiffusionPolicy):
        graph: nn.Module = _DenoiserGraph(policy)
        x_t = torch.randn(2, policy.config.horizon, policy.layout.action.dim)
        args = (x_t, torch.tensor([0, 1], dtype=torch.int64), *obs)
    else:
        graph = _ChunkGraph(policy)
        args = tuple(obs)
    inputs, outputs, dynamic = _io_spec(policy)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer notes on Python-side shape
        # checks (batch-independent by construction) are not actionable here
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    onnx.checker.check_model(str(path))


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_parity(policy: Policy, onnx_path: Path, seed: int = 0, batch: int = 2) -> dict[str, float]:
    """Max abs differences torch vs ONNX Runtime on the same inputs, in raw action units:
    ACT: the chunk; Diffusion: the denoiser output and a full DDIM sample from fixed noise
    (NumPy sampler + ONNX denoiser vs the torch sampler)."""
    policy.eval()
    rng = np.random.default_rng(seed)
    obs = example_observation(policy, batch, rng)
    obs_t = {k: torch.from_numpy(v) for k, v in obs.items()}
    sess = _session(onnx_path)
    if not isinstance(policy, DiffusionPolicy):
        with torch.no_grad():
            want = policy.predict_chunk(obs_t).numpy()
        got = sess.run([ACTION_KEY], obs)[0]
        return {"action_chunk_max_abs_error": float(np.max(np.abs(got - want)))}
    cfg = policy.config
    x_t = rng.standard_normal((batch, cfg.horizon, policy.layout.action.dim)).astype(np.float32)
    t = rng.integers(0, cfg.schedule.num_train_timesteps, batch).astype(np.int64)
    with torch.no_grad():
        want_eps = policy.denoise(torch.from_numpy(x_t), torch.from_numpy(t), obs_t).numpy()
    got_eps = sess.run(["eps"], {"x_t": x_t, "timestep": t, **obs})[0]
    noise = rng.standard_normal(x_t.shape).astype(np.float32)
    sampler = DDIMSampler(cfg.schedule, cfg.num_inference_steps, cfg.timestep_spacing)

    def denoise(x: np.ndarray, step: int) -> np.ndarray:
        return sess.run(["eps"], {"x_t": x, "timestep": np.full(batch, step, np.int64), **obs})[0]

    affine = policy.normalizer[ACTION_KEY]
    got = upsample_waypoints(sampler.sample(denoise, noise) * affine.scale.numpy()
                             + affine.offset.numpy(), cfg.action_stride)
    with torch.no_grad():
        want = policy.predict_chunk(obs_t, noise=torch.from_numpy(noise)).numpy()
    return {"denoiser_max_abs_error": float(np.max(np.abs(got_eps - want_eps))),
            "ddim_sample_max_abs_error": float(np.max(np.abs(got - want)))}


def _io_descriptions(policy: Policy) -> tuple[list[dict], list[dict]]:
    inputs = []
    lay, n = policy.layout, policy.n_obs_steps
    shapes = {STATE_KEY: [n, lay.state_dim], ENV_STATE_KEY: [n, lay.env_dim]}
    for key in lay.image_keys:
        shapes[key] = [n, 3, *policy.input_image_size]
    k, d = policy.chunk_size, lay.action.dim
    if isinstance(policy, DiffusionPolicy):
        k = policy.config.horizon  # waypoints when action_stride > 1
        inputs += [{"name": "x_t", "shape": ["batch", k, d], "dtype": "float32",
                       "description": "noisy action chunk, normalized action space"},
                      {"name": "timestep", "shape": ["batch"], "dtype": "int64",
                       "description": "diffusion step in [0, num_train_timesteps)"}]
        outputs = [{"name": "eps", "shape": ["batch", k, d], "dtype": "float32",
                    "description": "predicted noise, normalized action space"}]
    else:
        outputs = [{"name": ACTION_KEY, "shape": ["batch", k, d], "dtype": "float32",
                    "description": "action chunk in raw units; action i is for t_obs + i / fps"}]
    for key in lay.input_keys:
        desc = "RGB in [0, 1]" if key in lay.image_keys else "raw units, oldest step first"
        inputs.append({"name": key, "shape": ["batch", *shapes[key]], "dtype": "float32",
                          "description": desc})
    return inputs, outputs


def build_card(policy: Policy, ckpt: dict, weights: str, diffusion_samples: int = 1) -> dict:
    """The machine-readable model card (parity and evaluation are filled in later);
    diffusion_samples is the runtime's default chunks per observation for a diffusion policy."""
    inputs, outputs = _io_descriptions(policy)
    card = card_base(policy, ckpt, weights)
    card["onnx"] = {"file": ONNX_FILE, "opset": ONNX_OPSET, "inputs": inputs, "outputs": outputs}
    if isinstance(policy, DiffusionPolicy):
        cfg = policy.config
        card["diffusion"] = {**cfg.schedule.to_dict(),
                             "num_inference_steps": cfg.num_inference_steps,
                             "samples": diffusion_samples,
                             "timestep_spacing": cfg.timestep_spacing, "eta": 0.0,
                             "alphas_cumprod": policy.alphas_cumprod.double().tolist(),
                             "sample_space": "normalized actions; raw = x * scale + offset",
                             "unnormalize": policy.normalizer[ACTION_KEY].to_dict(),
                             "waypoints": cfg.horizon, "stride": cfg.action_stride,
                             "interpolation": "linear between waypoints to control.chunk_size "
                                              "actions (armstack_policy.actions.upsample_waypoints)"}
    return card


def card_base(policy: Policy, ckpt: dict, weights: str) -> dict:
    """The card fields every policy kind has (all but the graphs' own description)."""
    lay, fps = policy.layout, int(ckpt["dataset"]["fps"])
    observation = {STATE_KEY: {"names": list(lay.state_names), "frame": "joint space",
                               "units": [lay.state_unit(n) for n in lay.state_names]}}
    if lay.objects:
        observation[ENV_STATE_KEY] = {
            "names": lay.objects.names, "frame": BASE_FRAME, "classes": list(lay.objects.classes),
            "fields": list(lay.objects.fields),
            "units": [lay.objects.unit(n) for n in lay.objects.names],
            "hold_s": lay.objects.hold}
    height, width = policy.input_image_size or (0, 0)
    for key in lay.image_keys:
        observation[key] = {"height": height, "width": width,
                            "encoding": "RGB float in [0, 1], channels first"}
    act = lay.action
    return {
        "format": CARD_FORMAT,
        "policy": {"kind": policy.kind, "config": config_summary(policy.config)},
        "control": {"fps": fps, "chunk_size": policy.chunk_size, "n_obs_steps": policy.n_obs_steps,
                    "n_action_steps": policy.n_action_steps,
                    "observation_spacing_s": 1.0 / fps,
                    "time_convention": "action i of a chunk is for t_obs + i / fps"},
        "observation": observation,
        "action": {"kind": act.kind, "topic": act.topic, "names": list(act.names),
                   "units": [act.unit(n) for n in act.names],
                   "frame": BASE_FRAME if act.kind == "ee" else "joint space"},
        "normalization": {"convention": "normalized = (raw - offset) / scale",
                          "features": policy.normalizer.to_dict(),
                          "config": _normalization_used(ckpt["train_config"]["normalization"],
                                                        policy.kind)},
        "dataset": dict(ckpt["dataset"]),
        "training": {"steps": int(ckpt["step"]), "weights": weights, "init": ckpt.get("init"),
                     "config": ckpt["train_config"]},
        "parity": None,
        "evaluation": None,  # filled by the evaluation tool
    }


def embed_metadata(path: Path, card: dict) -> None:
    model = onnx.load(str(path))
    meta = {METADATA_CARD_KEY: json.dumps(card), "policy_kind": card["policy"]["kind"]}
    if "diffusion" in card:
        meta["action_offset"] = json.dumps(card["diffusion"]["unnormalize"]["offset"])
        meta["action_scale"] = json.dumps(card["diffusion"]["unnormalize"]["scale"])
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def named_units(names: list[str], units: list[str]) -> str:
    return ", ".join(f"{n} [{u}]" for n, u in zip(names, units, strict=True))


def _md_interface(card: dict) -> list[str]:
    lines = ["## Inputs", ""]
    lines += [f"- `{io['name']}` {io['shape']} {io['dtype']}: {io['description']}"
              for io in card["onnx"]["inputs"]]
    lines += ["", "## Outputs", ""]
    lines += [f"- `{io['name']}` {io['shape']} {io['dtype']}: {io['description']}"
              for io in card["onnx"]["outputs"]]
    lines += ["", "## Observation", ""]
    for key, spec in card["observation"].items():
        if "names" in spec:
            units = named_units(spec["names"], spec["units"])
            lines.append(f"- `{key}` ({spec['frame']}): {units}")
            if spec.get("hold_s"):
                lines.append(f"  - a class not seen keeps its last detection for up to "
                             f"{spec['hold_s']} s (object hold)")
        else:
            lines.append(f"- `{key}`: {spec['height']}x{spec['width']}, {spec['encoding']}")
    ctl, act = card["control"], card["action"]
    lines += ["", "## Action", "",
              f"- kind `{act['kind']}`, published on `{act['topic']}`, frame {act['frame']}",
              f"- {named_units(act['names'], act['units'])}",
              (f"- chunk of {ctl['chunk_size']} at {ctl['fps']} Hz ({ctl['time_convention']}); "
               f"{ctl['n_obs_steps']} observation step(s); {ctl['n_action_steps']} actions "
               "executed per inference when not ensembling")]
    return lines


def _md_waypoints(diff: dict) -> str:
    stride = diff.get("stride", 1)
    if stride == 1:
        return ""
    return (f" The {diff['waypoints']} sampled actions are waypoints {stride} control frames "
            "apart, interpolated linearly to the chunk (`armstack_policy.actions."
            "upsample_waypoints`).")


def md_dataset(data: dict) -> list[str]:
    """The card's dataset lines: what was trained on (an episode selection named) and, when
    recorded, how the dataset was made."""
    used = ""
    if data.get("episode_index") is not None:
        used = f" (episodes {format_episode_ranges(data['episode_index'])} of the dataset)"
    lines = [f"- dataset `{data['path']}`, sha256 `{data['sha256']}`, {data['episodes']} "
             f"episodes{used}, {data['frames']} frames at {data['fps']} Hz"]
    if data.get("recipe"):
        lines.append(f"- dataset recipe: {data['recipe']}")
    return lines


def md_training(card: dict) -> str:
    training = card["training"]
    line = f"- {training['steps']} training steps, {training['weights']} weights"
    init = training.get("init")
    if init:
        line += (f"; the run started from the weights of `{init['path']}` (step {init['step']}), "
                 f"{init['steps_before']} steps before this run in all")
    return line


def _normalization_used(config: dict, kind: str) -> dict:
    """The run's normalization config with the action mode training used: diffusion and VLA
    impose min/max whatever the run configured (factory.action_normalization)."""
    return {**config, "action": action_normalization(kind) or config["action"]}


def md_normalization(card: dict) -> list[str]:
    lines = ["## Normalization", "",
             f"{card['normalization']['convention']}, inside the graph for raw inputs/outputs:", ""]
    for key, aff in card["normalization"]["features"].items():
        lines.append(f"- `{key}`: offset {fmt_values(aff['offset'])}, "
                     f"scale {fmt_values(aff['scale'])}")
    if "diffusion" in card:
        diff, unnorm = card["diffusion"], card["diffusion"]["unnormalize"]
        lines += ["", "## Diffusion sampling", "",
                  (f"DDPM schedule `{diff['beta_schedule']}`, {diff['num_train_timesteps']} train "
                   f"steps, {diff['prediction_type']} prediction, x0 clipped to "
                   f"+-{diff['clip_sample_range']}: {diff['clip_sample']}. DDIM (eta 0) with "
                   f"{diff['num_inference_steps']} steps, `{diff['timestep_spacing']}` spacing, "
                   "run by `armstack_policy.ddim.DDIMSampler`; "
                   f"{_md_samples(diff.get('samples', 1))} The sample is in normalized "
                   "action space: raw = x * scale + offset with offset "
                   f"{fmt_values(unnorm['offset'])}, "
                   f"scale {fmt_values(unnorm['scale'])}." + _md_waypoints(diff))]
    return lines


def _md_samples(samples: int) -> str:
    if samples == 1:
        return "one chunk sampled per observation."
    return (f"{samples} chunks sampled per observation in one batch, the mean of the half "
            "nearest their medoid played (`armstack_policy.onnx_policy.consensus_chunk`).")


def card_markdown(card: dict) -> str:
    """Human-readable MODEL_CARD.md from the card dict."""
    data, parity = card["dataset"], card.get("parity") or {}
    checks = ", ".join(f"{k} {v:.2e}" for k, v in parity.items() if isinstance(v, float))
    evaluation = ("Not evaluated yet." if card.get("evaluation") is None
                  else "```json\n" + json.dumps(card["evaluation"], indent=2) + "\n```")
    lines = [f"# {card['policy']['kind'].upper()} policy", "",
             (f"ONNX graph `{card['onnx']['file']}` (opset {card['onnx']['opset']}); the same "
              f"card is in `{CARD_JSON}` and in the ONNX metadata key `{METADATA_CARD_KEY}`."), ""]
    lines += _md_interface(card) + [""] + md_normalization(card)
    lines += ["", "## Provenance", "",
              *md_dataset(data),
              md_training(card),
              f"- torch vs ONNX Runtime parity: {checks or 'not run'}",
              "", "## Evaluation", "", evaluation, ""]
    return "\n".join(lines)


def record_evaluation(card_path: Path, evaluation: dict) -> None:
    """Store `evaluation` in the model_card.json at `card_path` and re-render MODEL_CARD.md
    beside it. The copy of the card in the ONNX metadata keeps the card as exported."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["evaluation"] = evaluation
    if card["policy"]["kind"] == "vla":
        from armstack_learning.vla_export import vla_card_markdown as markdown  # imports this
    else:
        markdown = card_markdown
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    card_path.with_name(CARD_MD).write_text(markdown(card), encoding="utf-8")


def fmt_values(values: list) -> str:
    """Numbers of a (possibly nested, e.g. (3, 1, 1) image) list, flat and short."""
    return "[" + ", ".join(f"{v:.6g}" for v in np.ravel(values)) + "]"


def export_checkpoint(checkpoint: Path | str, out_dir: Path | str, use_ema: bool = True,
                      tolerance: float = PARITY_TOLERANCE,
                      diffusion_samples: int = 1) -> ExportResult:
    """Checkpoint -> out_dir/{policy.onnx, model_card.json, MODEL_CARD.md}; raises when the
    ONNX graph and torch disagree by more than `tolerance` (raw action units).
    diffusion_samples goes in a diffusion policy's card as the runtime's default."""
    out_dir = Path(out_dir)
    if not isinstance(diffusion_samples, int) or diffusion_samples < 1:
        raise ValueError(f"diffusion_samples must be an int >= 1, got {diffusion_samples!r}")
    policy, ckpt = policy_from_checkpoint(checkpoint, use_ema=use_ema)
    if diffusion_samples != 1 and not isinstance(policy, DiffusionPolicy):
        raise ValueError(f"diffusion_samples applies to diffusion policies; {checkpoint} holds "
                         f"a {policy.kind} policy")
    weights = "ema" if use_ema and ckpt.get("ema") is not None else "raw"
    if policy.kind == "vla":
        from armstack_learning.vla_export import export_vla  # it builds on this module

        return export_vla(policy, ckpt, weights, out_dir, tolerance)
    onnx_path = out_dir / ONNX_FILE
    export_onnx(policy, onnx_path)
    parity = check_parity(policy, onnx_path)
    worst = max(parity.values())
    card = build_card(policy, ckpt, weights, diffusion_samples)
    card["parity"] = {**parity, "tolerance": tolerance, "passed": worst <= tolerance}
    if worst > tolerance:
        raise RuntimeError(f"ONNX parity failed: {parity} exceeds {tolerance}")
    embed_metadata(onnx_path, card)
    card_path = out_dir / CARD_JSON
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / CARD_MD).write_text(card_markdown(card), encoding="utf-8")
    logger.info("exported %s (parity %s)", onnx_path, parity)
    return ExportResult(onnx_path, card_path, card)
