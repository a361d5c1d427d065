"""Training loop of CubeNet on rendered scenes (CPU, minutes)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from detector_lib.augment import AugmentConfig, random_view
from detector_lib.loss import LossConfig, detector_loss
from detector_lib.model import STRIDE, CubeNet, CubeNetConfig
from detector_lib.scenes import Dataset
from detector_lib.targets import TargetConfig, build_targets


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `augment`, `targets` and `loss` shape the batches and loss."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 4e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 60  # linear warm-up, then cosine decay to lr * final_lr_share
    final_lr_share: float = 0.02
    threads: int = 2  # torch intra-op threads
    seed: int = 0
    log_every: int = 50
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0.0 or self.weight_decay < 0.0 or self.warmup_steps < 0:
            raise ValueError("TrainConfig: need lr > 0, weight_decay >= 0, warmup_steps >= 0")
        if not 0.0 <= self.final_lr_share <= 1.0:
            raise ValueError(f"TrainConfig.final_lr_share must be in [0, 1], got "
                             f"{self.final_lr_share}")
        if self.targets.stride != STRIDE:
            raise ValueError(f"TrainConfig.targets.stride must be the network's {STRIDE}")


def make_batch(
    data: Dataset, indices: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Random views of data[indices] and their targets, as tensors.

    images (B, 3, S, S) float in [0, 1]; heat, ignore (B, nc, S/8, S/8); box (B, 4, S/8, S/8);
    box_mask (B, S/8, S/8).
    """
    nc = len(data.class_names)
    size = (cfg.augment.crop, cfg.augment.crop)
    views, parts = [], []
    for i in indices:
        view, labels = random_view(data.images[i], data.labels[i], cfg.augment, rng)
        views.append(view)
        parts.append(build_targets(labels, size, nc, cfg.targets))
    images = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).float().div_(255.0)
    return {
        "images": images,
        "heat": torch.from_numpy(np.stack([t.heat for t in parts])),
        "ignore": torch.from_numpy(np.stack([t.ignore for t in parts])),
        "box": torch.from_numpy(np.stack([t.box for t in parts])),
        "box_mask": torch.from_numpy(np.stack([t.box_mask for t in parts])),
    }


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `step` (0-based): warm-up, then cosine."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.final_lr_share
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainResult:
    model: CubeNet  # in eval mode
    seconds: float
    history: list[dict[str, float]]  # per log interval: step, lr and the mean loss terms


def _optimizer(net: CubeNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on the conv weights only (not on BN and biases)."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


class _Log:
    """Means of the loss terms over each log interval."""

    def __init__(self, cfg: TrainConfig, progress: Callable[[dict[str, float]], None] | None
                 ) -> None:
        self._cfg = cfg
        self._progress = progress
        self._sums: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self.history: list[dict[str, float]] = []

    def seconds(self) -> float:
        return time.perf_counter() - self._t0

    def add(self, step: int, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        if (step + 1) % self._cfg.log_every and step + 1 != self._cfg.steps:
            return
        count = step % self._cfg.log_every + 1
        entry = {"step": step + 1, "lr": lr_at(step, self._cfg), "seconds": self.seconds(),
                 **{k: v / count for k, v in self._sums.items()}}
        self.history.append(entry)
        self._sums = {}
        if self._progress is not None:
            self._progress(entry)


def train(
    data: Dataset,
    net_config: CubeNetConfig,
    cfg: TrainConfig,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a CubeNet from scratch on `data`.

    No weight averaging: the cosine schedule ends at a small learning rate, and in runs
    this short an average lags behind weights that are still improving fast (its boxes
    came out ~15 % small).
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if net_config.num_classes != len(data.class_names):
        raise ValueError(f"network has {net_config.num_classes} classes, data "
                         f"{len(data.class_names)}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = CubeNet(net_config)
    optimizer = _optimizer(net, cfg)
    log = _Log(cfg, progress)

    def next_batch() -> dict[str, torch.Tensor]:
        return make_batch(data, rng.integers(0, len(data), cfg.batch_size), cfg, rng)

    net.train()
    # One worker prepares the next batch while torch runs the step (cv2 and most numpy
    # release the GIL); one worker keeps the rng draws in order, so runs repeat.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next_batch)
        for step in range(cfg.steps):
            batch = pending.result()
            if step + 1 < cfg.steps:
                pending = pool.submit(next_batch)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss, terms = detector_loss(net(batch["images"]), batch, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimizer.step()
            log.add(step, terms)
    net.eval()
    return TrainResult(model=net, seconds=log.seconds(), history=log.history)
