"""Vision-language-action policies at run time: constrained decoding of action tokens, the
model card, and the ONNX Runtime runner (NumPy + onnxruntime; no torch, no ROS).

Graphs (written by tools/export_policy.py through armstack_learning.vla_export):
    prefill  observation.state (B, 1, D_s) raw, observation.images.<cam> (B, 1, 3, H, W) RGB in
             [0, 1], instruction_tokens (B, L) int64, and observation.environment_state
             (B, 1, C * F) raw when the card declares object slots
             -> logits (B, V) of the first action token, present_key / present_value
                (n_layers, B, h, P, dh): the cache of the prefix
    step     token (B, 1) int64, position (1,) int64 (the token's index in the sequence),
             past_key / past_value (n_layers, B, h, T, dh)
             -> logits (B, V) of the next token, present_key / present_value (.., T + 1, ..)
The card's "vla" block maps these roles to graph names and says how the cache is laid out
("stacked" as above, or "per_layer" tensors named by a pattern with {i}, as Hugging Face
decoder-with-past exports name them), so a pretrained VLA exported to ONNX plugs in by card
(see "Adapting a pretrained VLA" in the exported MODEL_CARD.md).

Decoding (`decode_tokens`): prefill once, then one step per action token; at every position
the logits are masked to the action tokens (constrained decoding: nothing else may come out
where an action is expected); greedy (temperature 0) or sampled from softmax(logits / T) by the
Gumbel-max trick. Tokens become actions by armstack_policy.vla_tokens.ActionBins.

`VLARunner` has the chunked-policy interface of armstack_policy.onnx_policy (reset(),
predict_chunk(observation) -> (k, D) raw actions, .card, .providers) plus the instruction:
set_instruction(text) before the first predict_chunk (which raises NoInstructionError
otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from armstack_common.onnx_session import open_session

from armstack_policy.actions import upsample_waypoints, waypoint_frames
from armstack_policy.onnx_policy import (
    ACTION_KINDS,
    CARD_FILE,
    CARD_FORMAT,
    IMAGE_PREFIX,
    STATE_KEY,
    VLA_KIND,
    CardError,
    RunnerConfig,
    batch_of_one,
    card_object_slots,
    find_card,
)
from armstack_policy.runtime import PolicyNotReady
from armstack_policy.vla_tokens import (
    PAD_ID,
    ActionBins,
    WordTokenizer,
    split_words,
)


CACHE_LAYOUTS = ("stacked", "per_layer")
STEP_FILE = "policy_step.onnx"


class NoInstructionError(PolicyNotReady, ValueError):
    """predict_chunk was called before any instruction was set (the policy node holds)."""


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecodeResult:
    tokens: np.ndarray  # (B, N) int64 action token ids
    logits: np.ndarray  # (B, N, V) float32 raw logits at each decoded position


def masked_logits(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(B, V) logits with every id outside `allowed` (V,) bool set to -inf."""
    return np.where(allowed, logits, -np.inf)


def choose_tokens(logits: np.ndarray, allowed: np.ndarray, temperature: float,
                  rng: np.random.Generator | None) -> np.ndarray:
    """(B,) int64 ids from (B, V) logits restricted to `allowed`: argmax at temperature 0,
    else a sample of softmax(logits / temperature) (Gumbel-max: argmax of logits / T + G)."""
    masked = masked_logits(logits.astype(np.float64), allowed)
    if temperature == 0.0:
        return masked.argmax(axis=-1).astype(np.int64)
    if rng is None:
        raise ValueError("sampling with a temperature needs a random generator")
    gumbel = -np.log(-np.log(rng.random(masked.shape)))
    return (masked / temperature + gumbel).argmax(axis=-1).astype(np.int64)


def decode_tokens(prefill: Callable[[], tuple[np.ndarray, Any]],
                  step: Callable[[np.ndarray, int, Any], tuple[np.ndarray, Any]],
                  n_tokens: int, allowed: np.ndarray, prefix_length: int,
                  temperature: float = 0.0, rng: np.random.Generator | None = None) -> DecodeResult:
    """Autoregressive constrained decoding of n_tokens action tokens.

    prefill() -> (logits (B, V) of the first token, cache); step(token (B, 1), position,
    cache) -> (logits (B, V) of the next token, cache), where position is the fed token's
    index in the sequence (prefix_length for the first action token).
    """
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not allowed.any():
        raise ValueError("constrained decoding needs at least one allowed token")
    logits, cache = prefill()
    tokens = np.empty((logits.shape[0], n_tokens), dtype=np.int64)
    kept = np.empty((logits.shape[0], n_tokens, logits.shape[-1]), dtype=np.float32)
    for i in range(n_tokens):
        kept[:, i] = logits
        tokens[:, i] = choose_tokens(logits, allowed, temperature, rng)
        if i + 1 < n_tokens:
            logits, cache = step(tokens[:, i:i + 1], prefix_length + i, cache)
    return DecodeResult(tokens, kept)


# ----------------------------------------------------------------------------- card


def _get(raw: Mapping, path: str, source: str) -> Any:
    node: Any = raw
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise CardError(f"{source}: missing field {path.replace('/', '.')}")
        node = node[part]
    return node


def _positive_int(raw: Mapping, path: str, source: str) -> int:
    value = _get(raw, path, source)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CardError(f"{source}: {path.replace('/', '.')} must be an int >= 1, got {value!r}")
    return value


def _name_list(raw: Mapping, path: str, source: str) -> tuple[str, ...]:
    value = _get(raw, path, source)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                           for v in value):
        raise CardError(f"{source}: {path.replace('/', '.')} must be a non-empty list of names")
    return tuple(value)


class TableTokenizer:
    """Instruction -> ids from a table precomputed with the model's own tokenizer (for a
    pretrained VLA whose tokenizer does not run here); texts match by their words."""

    def __init__(self, entries: Mapping[str, list[int]], max_tokens: int, pad_id: int) -> None:
        self.max_tokens, self.pad_id = max_tokens, pad_id
        self._table: dict[str, np.ndarray] = {}
        for text, ids in entries.items():
            if not 1 <= len(ids) <= max_tokens:
                raise ValueError(f"tokenizer.entries[{text!r}] must hold 1..{max_tokens} ids")
            row = np.full(max_tokens, pad_id, dtype=np.int64)
            row[: len(ids)] = ids
            self._table[" ".join(split_words(text))] = row

    def unknown_words(self, text: str) -> list[str]:
        return [] if " ".join(split_words(text)) in self._table else split_words(text)

    def encode(self, text: str) -> np.ndarray:
        key = " ".join(split_words(text))
        if key not in self._table:
            raise ValueError(f"instruction {text!r} is not in the model's instruction table "
                             f"({len(self._table)} entries)")
        return self._table[key].copy()


def tokenizer_from_dict(raw: Mapping) -> WordTokenizer | TableTokenizer:
    kind = raw.get("type")
    if kind == "word":
        return WordTokenizer.from_dict(dict(raw))
    if kind == "table":
        return TableTokenizer(raw["entries"], int(raw["max_tokens"]),
                              int(raw.get("pad_id", PAD_ID)))
    raise ValueError(f"tokenizer.type must be 'word' or 'table', got {kind!r}")


@dataclass(frozen=True)
class GraphIO:
    """One graph's file and the graph names of its roles."""

    file: str
    names: dict[str, str]  # role -> graph tensor name
    shapes: dict[str, tuple]  # graph tensor name -> card shape (batch axis first)


@dataclass(frozen=True)
class CacheSpec:
    layout: str  # "stacked" | "per_layer"
    n_layers: int
    n_heads: int
    head_dim: int
    # per_layer only: graph names with {i} for the layer, e.g. "past_key_values.{i}.key"
    past_key: str = "past_key"
    past_value: str = "past_value"
    present_key: str = "present_key"
    present_value: str = "present_value"


@dataclass(frozen=True)
class VLACard:
    """The runtime's view of a VLA model card; the chunked-policy fields match PolicyCard's,
    so the policy node sizes its observation assembler and chunk buffer the same way."""

    fps: float
    chunk_size: int
    n_action_steps: int
    state_names: tuple[str, ...]
    cameras: tuple[tuple[str, int, int], ...]  # (camera name, height, width)
    action_kind: str
    action_names: tuple[str, ...]
    prefill: GraphIO
    step: GraphIO
    cache: CacheSpec
    tokenizer: WordTokenizer | TableTokenizer
    bins: ActionBins
    vocab_size: int
    prefix_length: int
    default_temperature: float
    waypoints: int  # actions decoded per chunk, `stride` frames apart
    stride: int
    kind: str = VLA_KIND
    n_obs_steps: int = 1
    # observation.environment_state: object tokens (none: the cameras alone show the scene)
    object_classes: tuple[str, ...] = ()
    object_fields: tuple[str, ...] = ()
    object_hold: float = 0.0

    @property
    def dt(self) -> float:
        return 1.0 / self.fps

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def n_action_tokens(self) -> int:
        return self.waypoints * self.action_dim

    @property
    def observation_keys(self) -> tuple[str, ...]:
        """Observation features the prefill graph takes."""
        return tuple(n for n in self.prefill.shapes if n.startswith("observation."))

    @classmethod
    def from_dict(cls, raw: Mapping, source: str = CARD_FILE) -> VLACard:
        if not isinstance(raw, Mapping) or raw.get("format") != CARD_FORMAT:
            raise CardError(f"{source}: format must be {CARD_FORMAT!r}")
        if _get(raw, "policy/kind", source) != VLA_KIND:
            raise CardError(f"{source}: policy.kind must be {VLA_KIND!r}")
        fps = _get(raw, "control/fps", source)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
            raise CardError(f"{source}: control.fps must be a number in (0, 1000], got {fps!r}")
        observation = _get(raw, "observation", source)
        cameras = tuple((key[len(IMAGE_PREFIX):],
                         _positive_int(raw, f"observation/{key}/height", source),
                         _positive_int(raw, f"observation/{key}/width", source))
                        for key in observation if key.startswith(IMAGE_PREFIX))
        action_kind = _get(raw, "action/kind", source)
        if action_kind not in ACTION_KINDS:
            raise CardError(f"{source}: action.kind must be one of {ACTION_KINDS}")
        try:
            tokenizer = tokenizer_from_dict(_get(raw, "vla/tokenizer", source))
            bins = ActionBins.from_dict(_get(raw, "vla/actions", source))
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"{source}: vla: {exc}") from exc
        temperature = float(raw["vla"].get("decoding", {}).get("default_temperature", 0.0))
        chunk_size = _positive_int(raw, "control/chunk_size", source)
        actions = raw["vla"]["actions"]
        stride = actions.get("stride", 1)
        waypoints = actions.get("waypoints", chunk_size)
        classes, fields, hold = card_object_slots(raw, source)
        card = cls(
            fps=float(fps), chunk_size=chunk_size,
            n_action_steps=_positive_int(raw, "control/n_action_steps", source),
            state_names=_name_list(raw, f"observation/{STATE_KEY}/names", source),
            cameras=cameras, action_kind=action_kind,
            action_names=_name_list(raw, "action/names", source),
            prefill=_graph_io(raw, "prefill", source), step=_graph_io(raw, "step", source),
            cache=_cache_spec(raw, source), tokenizer=tokenizer, bins=bins,
            vocab_size=_positive_int(raw, "vla/vocab_size", source),
            prefix_length=_positive_int(raw, "vla/prefix/length", source),
            default_temperature=temperature, waypoints=waypoints, stride=stride,
            object_classes=classes, object_fields=fields, object_hold=hold)
        card._check(source)
        return card

    def _check(self, source: str) -> None:
        if self.bins.dim != self.action_dim:
            raise CardError(f"{source}: vla.actions has {self.bins.dim} ranges for "
                            f"{self.action_dim} action names")
        try:
            self.bins.allowed_mask(self.vocab_size)
        except ValueError as exc:
            raise CardError(f"{source}: vla.actions: {exc}") from exc
        for graph, roles in ((self.prefill, ("instruction", "logits")),
                             (self.step, ("token", "logits"))):
            missing = [r for r in roles if r not in graph.names]
            if missing:
                raise CardError(f"{source}: vla.io of {graph.file} lacks roles {missing}")
        if not self.default_temperature >= 0.0:
            raise CardError(f"{source}: vla.decoding.default_temperature must be >= 0")
        if not all(isinstance(v, int) and v >= 1 for v in (self.waypoints, self.stride)) or \
                waypoint_frames(self.waypoints, self.stride) != self.chunk_size:
            raise CardError(f"{source}: vla.actions.waypoints ({self.waypoints}) and stride "
                            f"({self.stride}) must give control.chunk_size ({self.chunk_size}) "
                            "= (waypoints - 1) * stride + 1 actions")


def _graph_io(raw: Mapping, graph: str, source: str) -> GraphIO:
    spec = _get(raw, f"onnx/{graph}", source)
    shapes = {}
    for io in [*spec.get("inputs", []), *spec.get("outputs", [])]:
        if not isinstance(io, Mapping) or not isinstance(io.get("name"), str):
            raise CardError(f"{source}: onnx.{graph} inputs/outputs need names, got {io!r}")
        shapes[io["name"]] = tuple(io.get("shape", ()))
    names = dict(_get(raw, f"vla/io/{graph}", source))
    return GraphIO(str(_get(raw, f"onnx/{graph}/file", source)), names, shapes)


def _cache_spec(raw: Mapping, source: str) -> CacheSpec:
    block = dict(_get(raw, "vla/cache", source))
    if block.get("layout") not in CACHE_LAYOUTS:
        raise CardError(f"{source}: vla.cache.layout must be one of {CACHE_LAYOUTS}")
    for name in ("n_layers", "n_heads", "head_dim"):
        _positive_int(raw, f"vla/cache/{name}", source)
    try:
        spec = CacheSpec(**block)
    except TypeError as exc:
        raise CardError(f"{source}: vla.cache: {exc}") from exc
    if spec.layout == "per_layer" and not all("{i}" in n for n in (
            spec.past_key, spec.past_value, spec.present_key, spec.present_value)):
        raise CardError(f"{source}: vla.cache names must contain {{i}} for layout per_layer")
    return spec


# ----------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class VLADecodeConfig:
    """Decoding settings; validated on construction. temperature None = the card's default."""

    temperature: float | None = None
    seed: int = 0  # generator of temperature sampling, restored by reset()

    def __post_init__(self) -> None:
        if self.temperature is not None and not (math.isfinite(self.temperature)
                                                 and self.temperature >= 0.0):
            raise ValueError(f"VLADecodeConfig.temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"VLADecodeConfig.seed must be an int >= 0, got {self.seed!r}")


class VLARunner:
    """Prefill + step ONNX sessions around `decode_tokens`; see the module doc."""

    def __init__(self, card: VLACard, prefill: Any, step: Any, config: VLADecodeConfig) -> None:
        self.card = card
        self._prefill, self._step = prefill, step
        self.temperature = (card.default_temperature if config.temperature is None
                            else config.temperature)
        self._seed = config.seed
        self._rng = np.random.default_rng(config.seed)
        self._allowed = card.bins.allowed_mask(card.vocab_size)
        self._tokens: np.ndarray | None = None  # (1, L) instruction ids
        self.instruction: str | None = None
        self._check_graphs()
        # observation feature -> shape without the batch axis, from the prefill graph
        self._shapes = {i.name: tuple(i.shape[1:]) for i in prefill.get_inputs()
                        if i.name.startswith("observation.")}
        position = card.step.names.get("position")
        # the position input as the card shapes it: (1,) or (batch, 1)
        batched = position is not None and len(card.step.shapes.get(position, ())) == 2
        self._position = np.zeros((1, 1) if batched else (1,), dtype=np.int64)

    def _check_graphs(self) -> None:
        for graph, session in ((self.card.prefill, self._prefill), (self.card.step, self._step)):
            have = {i.name for i in session.get_inputs()} | {o.name for o in session.get_outputs()}
            wanted = set(graph.names.values()) | set(self._cache_names(graph is self.card.step))
            missing = sorted(wanted - have)
            if missing:
                raise CardError(f"{graph.file}: the graph has no tensors {missing} that the card "
                                "names")

    def _cache_names(self, with_past: bool) -> list[str]:
        c = self.card.cache
        roles = ([c.past_key, c.past_value] if with_past else []) + [c.present_key, c.present_value]
        if c.layout == "stacked":
            return roles
        return [r.format(i=i) for r in roles for i in range(c.n_layers)]

    @property
    def providers(self) -> list[str]:
        return self._prefill.get_providers()

    @property
    def has_instruction(self) -> bool:
        """False until an instruction is set: the policy node holds until then."""
        return self._tokens is not None

    def set_instruction(self, text: str) -> list[str]:
        """Tokenize and keep the instruction; returns words the model does not know (they
        become <unk>) for the caller to report. Raises ValueError for an empty or too long
        instruction."""
        tokens = self.card.tokenizer.encode(text)
        self._tokens, self.instruction = tokens[None], text
        return self.card.tokenizer.unknown_words(text)

    def set_instruction_tokens(self, tokens: np.ndarray) -> None:
        """Instruction given as ids (L,) already (e.g. made by the model's own tokenizer)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        length = self.card.tokenizer.max_tokens
        vocab = self.card.vocab_size
        if tokens.shape != (length,) or (tokens < 0).any() or (tokens >= vocab).any():
            raise ValueError(f"instruction tokens must be ({length},) ids in "
                             f"[0, {self.card.vocab_size}), got shape {tokens.shape}")
        self._tokens, self.instruction = tokens[None], None

    def reset(self) -> None:
        """New episode: the sampling generator restarts; the instruction is kept."""
        self._rng = np.random.default_rng(self._seed)

    def _split_present(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Present cache outputs -> the step graph's past inputs."""
        c = self.card.cache
        if c.layout == "stacked":
            return {c.past_key: outputs[c.present_key], c.past_value: outputs[c.present_value]}
        pairs = ((c.past_key, c.present_key), (c.past_value, c.present_value))
        return {past.format(i=i): outputs[present.format(i=i)]
                for past, present in pairs for i in range(c.n_layers)}

    def decode(self, observation: Mapping[str, np.ndarray]) -> DecodeResult:
        """The action tokens for one observation {feature: (1, ...)} (history axis first)."""
        if self._tokens is None:
            raise NoInstructionError("no instruction yet: publish one on policy/instruction "
                                     "(std_msgs/String) or set the policy node's instruction "
                                     "parameter")
        pre, stp = self.card.prefill, self.card.step
        feeds = batch_of_one(observation, self._shapes) | {pre.names["instruction"]: self._tokens}
        present = self._cache_names(False)
        cache_names = [pre.names["logits"], *present]
        step_outputs = [stp.names["logits"], *present]
        attention = stp.names.get("attention_mask")

        def prefill() -> tuple[np.ndarray, dict]:
            logits, *cache = self._prefill.run(cache_names, feeds)
            return logits, self._split_present(dict(zip(present, cache, strict=True)))

        def step(token: np.ndarray, position: int, past: dict) -> tuple[np.ndarray, dict]:
            self._position.fill(position)
            inputs = {stp.names["token"]: token, **past}
            if "position" in stp.names:
                inputs[stp.names["position"]] = self._position
            if attention is not None:
                inputs[attention] = np.ones((token.shape[0], position + 1), dtype=np.int64)
            logits, *cache = self._step.run(step_outputs, inputs)
            return logits, self._split_present(dict(zip(present, cache, strict=True)))

        return decode_tokens(prefill, step, self.card.n_action_tokens, self._allowed,
                             self.card.prefix_length, self.temperature, self._rng)

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """(chunk_size, D) float32 raw actions for {feature: (1, ...)} observations: the
        decoded waypoints (bin centres), interpolated to the control rate."""
        waypoints = self.card.bins.decode(self.decode(observation).tokens)[0]  # (waypoints, D)
        return upsample_waypoints(waypoints, self.card.stride)


def _graph_path(model_path: Path, file: str) -> Path:
    path = model_path.with_name(file)
    if not path.is_file():
        raise FileNotFoundError(f"VLA graph {path} named by the model card is missing")
    return path


def load_vla_policy(model_path: Path | str, config: RunnerConfig,
                    decode: VLADecodeConfig | None = None) -> VLARunner:
    """The runner for an exported VLA: model_path is its prefill graph (policy.onnx) or any
    file beside model_card.json; the card names both graphs."""
    path = Path(model_path).expanduser()
    source = str(path.with_name(CARD_FILE))
    card = VLACard.from_dict(find_card(path), source=source)
    sessions = [open_session(_graph_path(path, g.file), config.provider, fp16=config.fp16,
                             engine_cache_dir=config.engine_cache_dir,
                             intra_op_threads=config.intra_op_threads,
                             label=f"vla {name}")
                for name, g in (("prefill", card.prefill), ("step", card.step))]
    return VLARunner(card, *sessions, decode or VLADecodeConfig(seed=config.seed))

