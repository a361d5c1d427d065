"""Policy construction by kind, from configs or from a checkpoint (policy configs, layout and
normalizer shapes are enough; the weights and normalization buffers come from the state dict)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from armstack_policy.vla_tokens import WordTokenizer, split_words, vocabulary_from_texts
from armstack_recorder.metadata import load_meta

from armstack_learning.act import ACTConfig, ACTPolicy
from armstack_learning.augment import BaseRotationConfig, RelocationConfig
from armstack_learning.data import ChunkDataset, WindowConfig
from armstack_learning.diffusion import DiffusionConfig, DiffusionPolicy
from armstack_learning.features import (
    ACTION_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    FeatureLayout,
    feature_names,
)
from armstack_learning.normalize import Affine, FeatureNormalizer
from armstack_learning.policy import Policy
from armstack_learning.vla import VLAConfig, VLAPolicy

logger = logging.getLogger(__name__)

POLICY_KINDS = ("act", "diffusion", "vla")
CHECKPOINT_FORMAT = "armstack-policy-checkpoint/1"
PolicyConfig = ACTConfig | DiffusionConfig | VLAConfig
_CONFIGS = {"act": ACTConfig, "diffusion": DiffusionConfig, "vla": VLAConfig}
_POLICIES = {"act": ACTPolicy, "diffusion": DiffusionPolicy, "vla": VLAPolicy}


def _check_kind(kind: str) -> None:
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind must be one of {POLICY_KINDS}, got {kind!r}")


def config_from_dict(kind: str, raw: dict) -> PolicyConfig:
    _check_kind(kind)
    if kind == "act":
        return ACTConfig(**raw)
    return _CONFIGS[kind].from_dict(raw)


def override_arg(text: str) -> tuple[str, str]:
    """One `--set NAME=VALUE` argument as (name, value text): an argparse `type` for the tools
    whose overrides go to config_with_overrides."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def config_with_overrides(kind: str, overrides: dict[str, str]) -> PolicyConfig:
    """Default config of `kind` with fields set from strings ("name=value" on the command line);
    values are parsed as JSON (numbers, booleans, lists), else taken as strings."""
    _check_kind(kind)
    base = _CONFIGS[kind]()
    raw = base.to_dict()
    for name, text in overrides.items():
        head, _, sub = name.partition(".")
        if head not in raw or (sub and not isinstance(raw[head], dict)):
            fields = sorted(raw)
            raise ValueError(f"{type(base).__name__} has no field {name!r} (fields: {fields})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if sub:
            raw[head] = {**raw[head], sub: value}
        else:
            raw[head] = tuple(value) if isinstance(value, list) else value
    return config_from_dict(kind, raw)


def build_policy(kind: str, cfg: PolicyConfig, layout: FeatureLayout,
                 normalizer: FeatureNormalizer) -> Policy:
    _check_kind(kind)
    if not isinstance(cfg, _CONFIGS[kind]):
        raise ValueError(f"a {kind!r} policy needs a {_CONFIGS[kind].__name__}")
    return _POLICIES[kind](cfg, layout, normalizer)


def window_config(cfg: PolicyConfig) -> WindowConfig:
    """The sample window a policy trains on: its observation history and chunk length."""
    if isinstance(cfg, DiffusionConfig):
        return WindowConfig(n_obs_steps=cfg.n_obs_steps, chunk_size=cfg.horizon,
                            action_stride=cfg.action_stride)
    if isinstance(cfg, VLAConfig):
        return WindowConfig(n_obs_steps=1, chunk_size=cfg.chunk_size,
                            action_stride=cfg.action_stride)
    return WindowConfig(n_obs_steps=1, chunk_size=cfg.chunk_size)


def action_normalization(kind: str) -> str | None:
    """Action normalization a kind needs, None = the run's configured one. Diffusion samples
    in [-1, 1] (x0 is clipped there) and the VLA's bins span [min, max]: both min/max."""
    _check_kind(kind)
    return "min_max" if kind in ("diffusion", "vla") else None


def prepare_config(kind: str, cfg: PolicyConfig, dataset_root: Path | str) -> PolicyConfig:
    """The config completed from the dataset: a VLA without a vocabulary gets the words of the
    dataset's task strings; ValueError if a task is longer than max_instruction_tokens."""
    if not isinstance(cfg, VLAConfig):
        return cfg
    tasks = load_meta(Path(dataset_root)).tasks
    longest = max(tasks, key=lambda t: len(split_words(t)), default="")
    if len(split_words(longest)) > cfg.max_instruction_tokens:
        raise ValueError(f"VLAConfig.max_instruction_tokens ({cfg.max_instruction_tokens}) is "
                         f"shorter than the dataset task {longest!r}")
    if not cfg.vocabulary:
        words = vocabulary_from_texts(tasks)
        logger.info("instruction vocabulary from %d task(s): %d words", len(tasks), len(words))
        cfg = dataclasses.replace(cfg, vocabulary=words)
    if cfg.object_loss_weight > 0.0 and not cfg.object_classes:
        cfg = dataclasses.replace(cfg, object_classes=_object_classes(dataset_root))
    return cfg


def _object_classes(dataset_root: Path | str) -> tuple[str, ...]:
    """Classes of the dataset's object slots (<class>_x, _y, _z, _present each), or () when it
    has none: then the VLA trains without the object localization loss."""
    features = load_meta(Path(dataset_root)).features
    if ENV_STATE_KEY not in features:
        logger.info("the dataset has no %s: no object localization loss", ENV_STATE_KEY)
        return ()
    names = feature_names(features, ENV_STATE_KEY)
    classes = tuple(n[: -len("_x")] for n in names[::4])
    if names != [f"{c}_{f}" for c in classes for f in ("x", "y", "z", "present")]:
        raise ValueError(f"dataset {ENV_STATE_KEY} names {names} are not <class>_x, _y, _z, "
                         "_present per class: set VLAConfig.object_loss_weight=0")
    return classes


def make_dataset(cfg: PolicyConfig, dataset_root: Path | str, layout: FeatureLayout,
                 relocation: RelocationConfig | None = None,
                 episodes: Sequence[int] | None = None,
                 rotation: BaseRotationConfig | None = None) -> ChunkDataset:
    """The training samples of a policy from `episodes` (default: all): its window, with
    `relocation` and `rotation` if given; a VLA's also at its image size, preloaded, with the
    instruction tokens of each sample's task."""
    window = window_config(cfg)
    if not isinstance(cfg, VLAConfig):
        return ChunkDataset(dataset_root, layout, window, relocation=relocation,
                            rotation=rotation, episodes=episodes)
    if relocation and relocation.enabled:
        raise ValueError("moving objects changes the object slots but not the camera images a "
                         "VLA sees: relocation is for object-slot policies (act, diffusion)")
    if rotation and rotation.enabled:
        raise ValueError("turning reaches about the base changes the state, objects and actions "
                         "but not the camera images a VLA sees: rotation is for object-slot "
                         "policies (act, diffusion)")
    tokenizer = WordTokenizer(cfg.vocabulary, cfg.max_instruction_tokens)
    targets = (ENV_STATE_KEY,) if cfg.object_classes and cfg.object_loss_weight > 0.0 else ()
    return ChunkDataset(dataset_root, layout, window, image_size=cfg.image_size,
                        preload_images=True, tokenize=tokenizer.encode, targets=targets,
                        episodes=episodes)


def placeholder_normalizer(layout: FeatureLayout) -> FeatureNormalizer:
    """Identity maps of the right shapes, to be overwritten by a checkpoint's state dict."""
    affines = {STATE_KEY: Affine.identity((layout.state_dim,)),
               ACTION_KEY: Affine.identity((layout.action.dim,))}
    if layout.objects:
        affines[ENV_STATE_KEY] = Affine.identity((layout.env_dim,))
    for key in layout.image_keys:
        affines[key] = Affine.identity((3, 1, 1))
    return FeatureNormalizer(affines)


def policy_from_checkpoint(path: Path | str, use_ema: bool = True) -> tuple[Policy, dict]:
    """(policy in eval mode, checkpoint dict); EMA weights when the run kept them and asked."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an armstack policy checkpoint (format {ckpt.get('format')!r})")
    kind = ckpt["kind"]
    layout = FeatureLayout.from_dict(ckpt["layout"])
    policy = build_policy(kind, config_from_dict(kind, ckpt["policy_config"]), layout,
                          placeholder_normalizer(layout))
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    policy.load_state_dict(weights)
    policy.eval()
    return policy, ckpt


def config_summary(cfg: PolicyConfig) -> dict:
    """JSON-ready config (tuples as lists, nested dataclasses as dicts)."""
    def plain(v: object) -> object:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            return v.item()
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
