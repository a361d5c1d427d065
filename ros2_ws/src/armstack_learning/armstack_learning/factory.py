"""Policy construction by kind, from configs or from a checkpoint (policy configs, layout and
normalizer shapes are enough; the weights and normalization buffers come from the state dict)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from armstack_learning.act import ACTConfig, ACTPolicy
from armstack_learning.data import WindowConfig
from armstack_learning.diffusion import DiffusionConfig, DiffusionPolicy
from armstack_learning.features import ACTION_KEY, ENV_STATE_KEY, STATE_KEY, FeatureLayout
from armstack_learning.normalize import Affine, FeatureNormalizer
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)

POLICY_KINDS = ("act", "diffusion")
CHECKPOINT_FORMAT = "armstack-policy-checkpoint/1"
PolicyConfig = ACTConfig | DiffusionConfig


def _check_kind(kind: str) -> None:
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind must be one of {POLICY_KINDS}, got {kind!r}")


def config_from_dict(kind: str, raw: dict) -> PolicyConfig:
    _check_kind(kind)
    if kind == "act":
        return ACTConfig(**raw)
    return DiffusionConfig.from_dict(raw)


def config_with_overrides(kind: str, overrides: dict[str, str]) -> PolicyConfig:
    """Default config of `kind` with fields set from strings ("name=value" on the command line);
    values are parsed as JSON (numbers, booleans, lists), else taken as strings."""
    _check_kind(kind)
    base = ACTConfig() if kind == "act" else DiffusionConfig()
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
    if kind == "act":
        if not isinstance(cfg, ACTConfig):
            raise ValueError("an 'act' policy needs an ACTConfig")
        return ACTPolicy(cfg, layout, normalizer)
    if not isinstance(cfg, DiffusionConfig):
        raise ValueError("a 'diffusion' policy needs a DiffusionConfig")
    return DiffusionPolicy(cfg, layout, normalizer)


def window_config(cfg: PolicyConfig) -> WindowConfig:
    """The sample window a policy trains on: its observation history and chunk length."""
    if isinstance(cfg, DiffusionConfig):
        return WindowConfig(n_obs_steps=cfg.n_obs_steps, chunk_size=cfg.horizon)
    return WindowConfig(n_obs_steps=1, chunk_size=cfg.chunk_size)


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
