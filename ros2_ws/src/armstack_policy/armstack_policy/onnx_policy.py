"""Exported policies at run time: the model card, and ONNX Runtime runners (no torch, no ROS).

The card (model_card.json beside the .onnx, written by tools/export_policy.py through
armstack_learning.export; the same JSON is in the ONNX metadata key armstack_model_card) says
everything the runtime needs; nothing here hard-codes a shape:

    format                      "armstack-model-card/1"
    policy.kind                 "act" | "diffusion"
    onnx.inputs / onnx.outputs  [{name, shape, dtype}], shape[0] the batch axis
    control                     fps (the control rate: chunk rows are 1/fps apart), chunk_size,
                                n_obs_steps (history frames, 1/fps apart, oldest first),
                                n_action_steps
    observation                 observation.state {names}, observation.environment_state
                                {classes, fields}, observation.images.<cam> {height, width}
    action                      kind "joint" | "ee", names
    diffusion                   (diffusion only) the NoiseSchedule fields, num_inference_steps,
                                timestep_spacing, alphas_cumprod, unnormalize {offset, scale},
                                samples (optional, default 1: chunks sampled per observation
                                unless RunnerConfig.diffusion_samples says otherwise),
                                waypoints and stride (optional: the denoised chunk is waypoints
                                actions stride frames apart, (waypoints - 1) * stride + 1 =
                                chunk_size; default chunk_size and 1)

Graphs: ACT maps the raw observations {feature: (1, n_obs, ...)} to `action` (1, k, D) in raw
units. Diffusion exports only the denoiser (x_t, timestep, observations) -> eps in normalized
action space; `DiffusionRunner` runs the DDIM loop around it (armstack_policy.ddim, the one
definition training uses too), unnormalizes with raw = x * scale + offset and interpolates
waypoints to the control rate (armstack_policy.actions.upsample_waypoints).

Both runners implement one small interface: `reset()` (new episode) and
`predict_chunk(observation) -> (k, D)` raw actions, action 0 for the observation's instant.
`load_policy` also loads a VLA (policy.kind "vla": armstack_policy.vla_decode), whose runner
has the same interface plus the instruction.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from armstack_common.onnx_session import ORT_PROVIDER_NAMES, open_session

from armstack_policy.actions import ACTION_KINDS, upsample_waypoints, waypoint_frames
from armstack_policy.ddim import SPACINGS, DDIMSampler, NoiseSchedule
from armstack_policy.observation import object_hold_problem

logger = logging.getLogger(__name__)

CARD_FORMAT = "armstack-model-card/1"
VLA_KIND = "vla"  # cards of this kind are read by armstack_policy.vla_decode
CARD_FILE = "model_card.json"
METADATA_CARD_KEY = "armstack_model_card"
# The offline tools that make a policy model (named in errors when one is missing).
TRAIN_TOOL = "tools/train_policy.py"
EXPORT_TOOL = "tools/export_policy.py"
MAKERS = f"{TRAIN_TOOL}, then {EXPORT_TOOL}"

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
IMAGE_PREFIX = "observation.images."
POLICY_KINDS = ("act", "diffusion")
# Relative tolerance between the card's alphas_cumprod and the schedule recomputed here.
_SCHEDULE_RTOL = 1e-6


class CardError(ValueError):
    """The model card is malformed or disagrees with its graph; the message names the field."""


Keys = str | tuple[str, ...]  # "control.fps", or a tuple when a key holds dots


def _parts(keys: Keys) -> tuple[str, ...]:
    return tuple(keys.split(".")) if isinstance(keys, str) else keys


def _display(keys: Keys) -> str:
    parts = _parts(keys)
    text = parts[0]
    for part in parts[1:]:
        text += f"[{part!r}]" if "." in part else f".{part}"
    return text


def _get(raw: Mapping, keys: Keys, source: str) -> Any:
    node: Any = raw
    for part in _parts(keys):
        if not isinstance(node, Mapping) or part not in node:
            raise CardError(f"{source}: missing field {_display(keys)}")
        node = node[part]
    return node


def _int(raw: Mapping, keys: Keys, source: str, minimum: int = 1) -> int:
    value = _get(raw, keys, source)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CardError(f"{source}: {_display(keys)} must be an int >= {minimum}, got {value!r}")
    return value


def _names(raw: Mapping, keys: Keys, source: str) -> tuple[str, ...]:
    value = _get(raw, keys, source)
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value)):
        raise CardError(f"{source}: {_display(keys)} must be a non-empty list of distinct names, "
                        f"got {value!r}")
    return tuple(value)


def _shape_text(dims: tuple) -> str:
    return "[" + ", ".join(["batch", *map(str, dims)]) + "]"


def _floats(raw: Mapping, keys: Keys, source: str, size: int) -> np.ndarray:
    value = np.asarray(_get(raw, keys, source), dtype=np.float64)
    if value.shape != (size,) or not np.isfinite(value).all():
        raise CardError(f"{source}: {_display(keys)} must be {size} finite numbers, "
                        f"got shape {value.shape}")
    return value


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # shape[0] is the batch axis
    dtype: str  # "float32", "int64"

    @classmethod
    def from_dict(cls, raw: Mapping, where: str) -> TensorSpec:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise CardError(f"{where}: each entry needs a name, got {raw!r}")
        shape = raw.get("shape")
        if not isinstance(shape, list) or not shape:
            raise CardError(f"{where}: {raw['name']} needs a shape list, got {shape!r}")
        return cls(raw["name"], tuple(shape), str(raw.get("dtype", "float32")))


@dataclass(frozen=True)
class DiffusionSpec:
    schedule: NoiseSchedule
    num_inference_steps: int
    timestep_spacing: str
    action_offset: np.ndarray  # (D,) raw = x * scale + offset
    action_scale: np.ndarray  # (D,)
    alphas_cumprod: np.ndarray | None  # (T,) as the trainer computed it, to cross-check
    waypoints: int  # actions denoised per chunk (x_t's length), `stride` control frames apart
    stride: int
    samples: int = 1  # chunks sampled per observation by default (RunnerConfig.diffusion_samples)


@dataclass(frozen=True)
class PolicyCard:
    """What the runtime reads from a model card; `from_dict` validates, naming the field."""

    kind: str
    fps: float
    chunk_size: int
    n_obs_steps: int
    n_action_steps: int
    state_names: tuple[str, ...]
    object_classes: tuple[str, ...]  # empty: no environment state
    object_fields: tuple[str, ...]
    object_hold: float  # s a class not seen keeps its last detection (0: none)
    cameras: tuple[tuple[str, int, int], ...]  # (camera name, height, width), input order
    action_kind: str
    action_names: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_file: str
    diffusion: DiffusionSpec | None = None

    @property
    def dt(self) -> float:
        """Spacing of chunk rows and of history frames, s."""
        return 1.0 / self.fps

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def observation_keys(self) -> tuple[str, ...]:
        """Observation features the graph takes, in the card's input order."""
        return tuple(s.name for s in self.inputs if s.name.startswith("observation."))

    @classmethod
    def from_dict(cls, raw: Mapping, source: str = CARD_FILE) -> PolicyCard:
        if not isinstance(raw, Mapping):
            raise CardError(f"{source}: not a JSON object")
        if raw.get("format") != CARD_FORMAT:
            raise CardError(f"{source}: format must be {CARD_FORMAT!r}, got {raw.get('format')!r}")
        kind = _get(raw, "policy.kind", source)
        if kind not in POLICY_KINDS:
            raise CardError(f"{source}: policy.kind must be one of {POLICY_KINDS}, got {kind!r}")
        fps = _get(raw, "control.fps", source)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
            raise CardError(f"{source}: control.fps must be a number in (0, 1000], got {fps!r}")
        observation = _get(raw, "observation", source)
        classes, fields, hold = card_object_slots(raw, source)
        cameras = tuple(
            (key[len(IMAGE_PREFIX):], _int(raw, ("observation", key, "height"), source),
             _int(raw, ("observation", key, "width"), source))
            for key in observation if key.startswith(IMAGE_PREFIX))
        action_kind = _get(raw, "action.kind", source)
        if action_kind not in ACTION_KINDS:
            raise CardError(f"{source}: action.kind must be one of {ACTION_KINDS}, "
                            f"got {action_kind!r}")
        inputs = tuple(TensorSpec.from_dict(s, f"{source}: onnx.inputs")
                       for s in _get(raw, "onnx.inputs", source))
        outputs = tuple(TensorSpec.from_dict(s, f"{source}: onnx.outputs")
                        for s in _get(raw, "onnx.outputs", source))
        action_names = _names(raw, "action.names", source)
        chunk_size = _int(raw, "control.chunk_size", source)
        card = cls(
            kind=kind, fps=float(fps), chunk_size=chunk_size,
            n_obs_steps=_int(raw, "control.n_obs_steps", source),
            n_action_steps=_int(raw, "control.n_action_steps", source),
            state_names=_names(raw, ("observation", STATE_KEY, "names"), source),
            object_classes=classes, object_fields=fields, object_hold=hold,
            cameras=cameras,
            action_kind=action_kind, action_names=action_names, inputs=inputs, outputs=outputs,
            onnx_file=str(_get(raw, "onnx.file", source)),
            diffusion=(_diffusion(raw, source, len(action_names), chunk_size)
                       if kind == "diffusion" else None))
        card._check_io(source)
        return card

    def _check_io(self, source: str) -> None:
        expected = {STATE_KEY: (self.n_obs_steps, len(self.state_names))}
        if self.object_classes:
            expected[ENV_STATE_KEY] = (self.n_obs_steps,
                                       len(self.object_classes) * len(self.object_fields))
        for cam, h, w in self.cameras:
            expected[IMAGE_PREFIX + cam] = (self.n_obs_steps, 3, h, w)
        chunk = self.graph_chunk_shape
        if self.kind == "diffusion":
            expected |= {"x_t": chunk, "timestep": ()}
        got = {s.name: tuple(s.shape[1:]) for s in self.inputs}
        if set(got) != set(expected):
            raise CardError(f"{source}: onnx.inputs are {sorted(got)}, the observation and "
                            f"policy kind call for {sorted(expected)}")
        for name, shape in expected.items():
            if got[name] != shape:
                raise CardError(f"{source}: onnx input {name} has shape "
                                f"{_shape_text(got[name])}, expected {_shape_text(shape)}")
        out = self.output_name
        spec = next((s for s in self.outputs if s.name == out), None)
        if spec is None or tuple(spec.shape[1:]) != chunk:
            got = [(s.name, s.shape) for s in self.outputs]
            raise CardError(f"{source}: onnx.outputs must hold {out!r} of shape "
                            f"{_shape_text(chunk)}, got {got}")

    @property
    def output_name(self) -> str:
        return "eps" if self.kind == "diffusion" else "action"

    @property
    def graph_chunk_shape(self) -> tuple[int, int]:
        """(rows, D) of the graph's chunk tensor: a Diffusion Policy's waypoints, else the
        control-rate chunk."""
        rows = self.diffusion.waypoints if self.diffusion is not None else self.chunk_size
        return rows, self.action_dim


def _diffusion(raw: Mapping, source: str, action_dim: int, chunk_size: int) -> DiffusionSpec:
    block = _get(raw, "diffusion", source)
    try:
        schedule = NoiseSchedule.from_dict(block)
    except (TypeError, ValueError) as exc:
        raise CardError(f"{source}: diffusion: {exc}") from exc
    spacing = _get(raw, "diffusion.timestep_spacing", source)
    if spacing not in SPACINGS:
        raise CardError(f"{source}: diffusion.timestep_spacing must be one of {SPACINGS}, "
                        f"got {spacing!r}")
    steps = _int(raw, "diffusion.num_inference_steps", source)
    if steps > schedule.num_train_timesteps:
        raise CardError(f"{source}: diffusion.num_inference_steps ({steps}) exceeds "
                        f"num_train_timesteps ({schedule.num_train_timesteps})")
    scale = _floats(raw, "diffusion.unnormalize.scale", source, action_dim)
    if not (scale > 0).all():
        raise CardError(f"{source}: diffusion.unnormalize.scale must be > 0")
    alphas = block.get("alphas_cumprod")
    # Cards written before waypoints existed denoise the control-rate chunk itself.
    waypoints = _int(raw, "diffusion.waypoints", source) if "waypoints" in block else chunk_size
    stride = _int(raw, "diffusion.stride", source) if "stride" in block else 1
    samples = _int(raw, "diffusion.samples", source) if "samples" in block else 1
    if waypoint_frames(waypoints, stride) != chunk_size:
        raise CardError(f"{source}: diffusion.waypoints ({waypoints}) and diffusion.stride "
                        f"({stride}) must give control.chunk_size ({chunk_size}) = "
                        "(waypoints - 1) * stride + 1 actions")
    return DiffusionSpec(
        schedule=schedule, num_inference_steps=steps, timestep_spacing=spacing,
        action_offset=_floats(raw, "diffusion.unnormalize.offset", source, action_dim),
        action_scale=scale,
        alphas_cumprod=None if alphas is None else _floats(
            raw, "diffusion.alphas_cumprod", source, schedule.num_train_timesteps),
        waypoints=waypoints, stride=stride, samples=samples)


def card_object_slots(raw: Mapping, source: str) -> tuple[tuple[str, ...], tuple[str, ...], float]:
    """(classes, fields, hold_s) of a card's observation.environment_state; ((), (), 0.0) when
    the policy takes none. CardError names a bad field."""
    observation = _get(raw, "observation", source)
    if ENV_STATE_KEY not in observation:
        return (), (), 0.0
    classes = _names(raw, ("observation", ENV_STATE_KEY, "classes"), source)
    fields = _names(raw, ("observation", ENV_STATE_KEY, "fields"), source)
    hold = raw["observation"][ENV_STATE_KEY].get("hold_s", 0.0)  # absent: older cards
    problem = object_hold_problem(hold, fields)
    if problem:
        raise CardError(f"{source}: observation[{ENV_STATE_KEY!r}].hold_s {problem}")
    return classes, fields, float(hold)


def is_vla_card(raw: Mapping) -> bool:
    """True for the card of a VLA (load_policy picks the runner by this)."""
    policy = raw.get("policy") if isinstance(raw, Mapping) else None
    return isinstance(policy, Mapping) and policy.get("kind") == VLA_KIND


def find_card(model_path: Path) -> dict:
    """The card beside `model_path`, else the one embedded in its ONNX metadata."""
    card_path = model_path.with_name(CARD_FILE)
    if card_path.is_file():
        return json.loads(card_path.read_text(encoding="utf-8"))
    import onnx  # the metadata only; no session needed to read it
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except DecodeError as exc:
        raise ValueError(f"{model_path}: not an ONNX model ({exc}), and no model card beside it "
                         f"at {card_path}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_CARD_KEY not in meta:
        raise FileNotFoundError(f"model card not found: {card_path}, and {model_path.name} has no "
                                f"{METADATA_CARD_KEY!r} metadata (made by: {EXPORT_TOOL})")
    return json.loads(meta[METADATA_CARD_KEY])


@dataclass(frozen=True)
class RunnerConfig:
    """How a policy graph is run; validated on construction."""

    provider: str = "cpu"  # tensorrt | cuda | cpu, falling back down that chain
    intra_op_threads: int = 1  # 0 = onnxruntime's default (all cores)
    fp16: bool = False  # TensorRT engines only
    engine_cache_dir: str = ""  # TensorRT only; "" = no cache
    num_inference_steps: int = 0  # diffusion: DDIM steps; 0 = the card's
    seed: int = 0  # diffusion: initial-noise generator seed; vla: sampling seed; reset() restores
    # diffusion: chunks sampled per observation (one batched denoiser run per step); more than
    # one: the chunk is the mean of the half nearest their medoid (consensus_chunk); 0 = the card's
    diffusion_samples: int = 0
    temperature: float | None = None  # vla: decoding temperature (0 greedy); None = the card's

    def __post_init__(self) -> None:
        if self.provider not in ORT_PROVIDER_NAMES:
            raise ValueError(f"RunnerConfig.provider must be one of {sorted(ORT_PROVIDER_NAMES)}, "
                             f"got {self.provider!r}")
        for name in ("intra_op_threads", "num_inference_steps", "seed", "diffusion_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"RunnerConfig.{name} must be an int >= 0, got {value!r}")
        if self.temperature is not None and not (isinstance(self.temperature, (int, float))
                                                 and 0.0 <= self.temperature < float("inf")):
            raise ValueError(f"RunnerConfig.temperature must be >= 0 or None, "
                             f"got {self.temperature!r}")


def batch_of_one(observation: Mapping[str, np.ndarray],
                 shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The graph's float32 feeds with a batch axis of one, from {feature: value} raw
    observations whose shapes (batch axis not included) must be `shapes`' exactly."""
    feeds = {}
    for key, shape in shapes.items():
        if key not in observation:
            raise ValueError(f"observation lacks {key!r}")
        value = np.asarray(observation[key], dtype=np.float32)
        if value.shape != shape:
            raise ValueError(f"observation {key!r} has shape {value.shape}, the model takes "
                             f"{shape}")
        feeds[key] = value[None]
    return feeds


class OnnxPolicy(abc.ABC):
    """A chunked policy behind an ONNX Runtime session: reset(), predict_chunk()."""

    def __init__(self, card: PolicyCard, session: Any) -> None:
        self.card = card
        self._session = session
        graph = {i.name: tuple(i.shape[1:]) for i in session.get_inputs()}
        wanted = {s.name: tuple(s.shape[1:]) for s in card.inputs}
        if set(graph) != set(wanted):
            raise CardError(f"the graph's inputs {sorted(graph)} differ from the card's "
                            f"{sorted(wanted)}; re-export the model with {EXPORT_TOOL}")
        outputs = {o.name: tuple(o.shape[1:]) for o in session.get_outputs()}
        if card.output_name not in outputs:
            raise CardError(f"the graph has no output {card.output_name!r} (has {sorted(outputs)})")
        graph[card.output_name] = outputs[card.output_name]
        wanted[card.output_name] = card.graph_chunk_shape
        for name, dims in graph.items():
            # Symbolic graph dims (strings) accept anything; fixed ones must be the card's.
            if len(dims) != len(wanted[name]) or any(
                    isinstance(g, int) and g != w for g, w in zip(dims, wanted[name], strict=True)):
                raise CardError(f"graph tensor {name} has shape {_shape_text(dims)}, the card "
                                f"says {_shape_text(wanted[name])}")
        # feature -> (n_obs, ...) expected per observation, batch axis not included
        self._shapes = {s.name: (card.n_obs_steps, *s.shape[2:]) for s in card.inputs
                        if s.name in card.observation_keys}

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @abc.abstractmethod
    def reset(self) -> None:
        """Start of an episode: forget anything kept between calls."""

    @abc.abstractmethod
    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """(k, D) float32 actions in raw units from {feature: (n_obs, ...)} raw observations."""


class ACTRunner(OnnxPolicy):
    """One graph call per chunk: observations -> `action` (1, k, D)."""

    def reset(self) -> None:
        """Nothing to forget: the graph keeps no state and z is the prior mean."""

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        (chunk,) = self._session.run(["action"], batch_of_one(observation, self._shapes))
        return chunk[0]  # (k, D)


class DiffusionRunner(OnnxPolicy):
    """DDIM (eta 0) around the denoiser graph; the initial noise comes from a seeded generator."""

    def __init__(self, card: PolicyCard, session: Any, config: RunnerConfig) -> None:
        super().__init__(card, session)
        spec = card.diffusion
        steps = config.num_inference_steps or spec.num_inference_steps
        if steps > spec.schedule.num_train_timesteps:
            raise ValueError(f"num_inference_steps {steps} exceeds the model's "
                             f"num_train_timesteps {spec.schedule.num_train_timesteps}")
        self._sampler = DDIMSampler(spec.schedule, steps, spec.timestep_spacing)
        if spec.alphas_cumprod is not None and not np.allclose(
                self._sampler.alphas_cumprod, spec.alphas_cumprod, rtol=_SCHEDULE_RTOL, atol=0.0):
            raise CardError("diffusion.alphas_cumprod in the card differs from the schedule "
                            "armstack_policy.ddim computes from its fields: the trainer and this "
                            "runtime disagree on the noise schedule")
        self._offset = spec.action_offset.astype(np.float32)  # (D,)
        self._scale = spec.action_scale.astype(np.float32)  # (D,)
        self._seed = config.seed
        self._rng = np.random.default_rng(config.seed)
        self._samples = config.diffusion_samples or spec.samples
        self._timestep = np.zeros(self._samples, dtype=np.int64)  # (B,) fed on every call

    @property
    def num_steps(self) -> int:
        return self._sampler.num_steps

    @property
    def samples(self) -> int:
        """Chunks sampled per observation (the config's, else the card's)."""
        return self._samples

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._seed)

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = batch_of_one(observation, self._shapes)
        if self._samples > 1:  # one batch: every sample sees the same observation
            feeds = {key: np.repeat(value, self._samples, axis=0) for key, value in feeds.items()}
        noise = self._rng.standard_normal((self._samples, *self.card.graph_chunk_shape))

        def denoise(x_t: np.ndarray, t: int) -> np.ndarray:
            self._timestep[:] = t
            (eps,) = self._session.run(["eps"], {"x_t": x_t, "timestep": self._timestep, **feeds})
            return eps

        sample = self._sampler.sample(denoise, noise.astype(np.float32))  # (B, w, D) normalized
        return upsample_waypoints(consensus_chunk(sample) * self._scale + self._offset,
                                  self.card.diffusion.stride)  # (k, D)


def consensus_chunk(samples: np.ndarray) -> np.ndarray:
    """(B, w, D) chunks sampled for one observation -> (w, D): the mean of the B // 2 (at least
    one) nearest the medoid, the sample with the least summed distance to the others.

    A mean of all the samples removes their noise but, where the policy is multimodal (which
    cube next), lands between the modes; the medoid's neighbourhood stays in the commonest mode.
    """
    b = samples.shape[0]
    if b == 1:
        return samples[0]
    flat = samples.reshape(b, -1)
    distance = np.linalg.norm(flat[:, None, :] - flat[None, :, :], axis=-1)  # (B, B)
    medoid = int(np.argmin(distance.sum(axis=1)))
    nearest = np.argsort(distance[medoid], kind="stable")[:max(1, b // 2)]
    return samples[nearest].mean(axis=0)


def load_policy(model_path: Path | str, config: RunnerConfig) -> OnnxPolicy:
    """The runner for the exported policy at `model_path` and its card: ACT, Diffusion, or a
    VLA (armstack_policy.vla_decode.VLARunner, with the same interface).

    FileNotFoundError names the missing file and the tools that make it; CardError/ValueError
    name the offending card field.
    """
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"policy model not found: {path} (made by: {MAKERS}; or set "
                                f"model_path to an exported policy .onnx)")
    raw = find_card(path)
    if is_vla_card(raw):
        # Imported here: vla_decode builds on this module.
        from armstack_policy.vla_decode import VLADecodeConfig, load_vla_policy

        return load_vla_policy(path, config, VLADecodeConfig(config.temperature, config.seed))
    card = PolicyCard.from_dict(raw, source=str(path.with_name(CARD_FILE)))
    if config.fp16 and config.provider != "tensorrt":
        logger.info("fp16 applies to TensorRT engines only")
    session = open_session(path, config.provider, fp16=config.fp16,
                           engine_cache_dir=config.engine_cache_dir,
                           intra_op_threads=config.intra_op_threads, label=f"{card.kind} policy")
    if card.kind == "diffusion":
        return DiffusionRunner(card, session, config)
    return ACTRunner(card, session)

