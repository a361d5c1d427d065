"""Feature normalization from LeRobot dataset statistics, as torch modules.

Every mode reduces to one affine map per feature, normalized = (raw - offset) / scale:
    mean_std:  offset = mean,              scale = std
    min_max:   offset = (max + min) / 2,   scale = (max - min) / 2   (maps [min, max] to [-1, 1])
The offsets and scales are module buffers, so they are saved with the policy's weights, exported
inside the ONNX graph and copied into the model card in this one form.

A feature that hardly varies in the demonstrations (std or half-range below `min_scale`, e.g. a
present flag that was always 1, or a joint nobody moved) gets scale 1: centred but not
stretched. Dividing by its tiny spread would turn any deviation at run time (the flag dropping to
0) into a huge input the network never saw.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

MODES = ("mean_std", "min_max")


@dataclass(frozen=True)
class NormalizationConfig:
    """How each feature group is normalized; validated on construction."""

    state: str = "mean_std"
    env_state: str = "mean_std"
    action: str = "mean_std"
    min_scale: float = 1e-3  # below it a feature counts as constant (see module doc)

    def __post_init__(self) -> None:
        for name in ("state", "env_state", "action"):
            if getattr(self, name) not in MODES:
                raise ValueError(f"NormalizationConfig.{name} must be one of {MODES}, "
                                 f"got {getattr(self, name)!r}")
        if not self.min_scale > 0.0:
            raise ValueError(f"NormalizationConfig.min_scale must be > 0, got {self.min_scale!r}")


def affine_from_stats(stats: Mapping[str, np.ndarray], mode: str,
                      min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) float32 arrays of a feature's statistics (LeRobot stats.json layout)."""
    if mode == "mean_std":
        offset = np.asarray(stats["mean"], dtype=np.float64)
        scale = np.asarray(stats["std"], dtype=np.float64)
    elif mode == "min_max":
        lo = np.asarray(stats["min"], dtype=np.float64)
        hi = np.asarray(stats["max"], dtype=np.float64)
        offset, scale = (hi + lo) / 2.0, (hi - lo) / 2.0
    else:
        raise ValueError(f"normalization mode must be one of {MODES}, got {mode!r}")
    constant = scale < min_scale
    if np.any(constant):
        logger.info("%d feature(s) below the %.1e spread floor are only centred", constant.sum(),
                    min_scale)
    scale = np.where(constant, 1.0, scale)
    return offset.astype(np.float32), scale.astype(np.float32)


class Affine(nn.Module):
    """normalize(x) = (x - offset) / scale over the last axis (or the channel axis of images)."""

    def __init__(self, offset: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        offset = np.asarray(offset, dtype=np.float32)
        scale = np.asarray(scale, dtype=np.float32)
        if offset.shape != scale.shape:
            raise ValueError(f"offset shape {offset.shape} != scale shape {scale.shape}")
        if not np.all(scale > 0):
            raise ValueError("normalization scales must be > 0")
        self.register_buffer("offset", torch.from_numpy(offset.copy()))
        self.register_buffer("scale", torch.from_numpy(scale.copy()))

    @classmethod
    def identity(cls, shape: tuple[int, ...]) -> Affine:
        return cls(np.zeros(shape, np.float32), np.ones(shape, np.float32))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.offset) / self.scale

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset

    def to_dict(self) -> dict[str, list]:
        return {"offset": self.offset.tolist(), "scale": self.scale.tolist()}


class FeatureNormalizer(nn.Module):
    """Affine maps for every feature a policy reads or writes, keyed by feature name.

    Keys are LeRobot feature names with '.' replaced (module names cannot hold dots)."""

    def __init__(self, affines: Mapping[str, Affine]) -> None:
        super().__init__()
        self.maps = nn.ModuleDict({_module_key(k): v for k, v in affines.items()})

    def __contains__(self, feature: str) -> bool:
        return _module_key(feature) in self.maps

    def __getitem__(self, feature: str) -> Affine:
        return self.maps[_module_key(feature)]

    def normalize(self, feature: str, x: Tensor) -> Tensor:
        return self[feature].normalize(x)

    def unnormalize(self, feature: str, x: Tensor) -> Tensor:
        return self[feature].unnormalize(x)

    def to_dict(self) -> dict[str, dict[str, list]]:
        return {_feature_key(k): m.to_dict() for k, m in self.maps.items()}


def _module_key(feature: str) -> str:
    return feature.replace(".", "__")


def _feature_key(module_key: str) -> str:
    return module_key.replace("__", ".")


def image_affine(stats: Mapping[str, np.ndarray] | None) -> Affine:
    """Per-channel mean/std of a camera in [0, 1] ((3, 1, 1) stats, as LeRobot stores them);
    without stats, the ImageNet channel statistics commonly used for ResNet trunks."""
    if stats is None:
        mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
        std = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
    else:
        mean = np.asarray(stats["mean"], np.float32).reshape(3, 1, 1)
        std = np.maximum(np.asarray(stats["std"], np.float32).reshape(3, 1, 1), 1e-3)
    return Affine(mean, std)
