"""Policy training: one process, or several under torchrun (DistributedDataParallel).

Data order is a pure function of (seed, step, rank): epoch e visits a permutation drawn from
seed + e, rank r takes every world_size-th index of it, and step s reads batch s of that
stream. Together with the saved optimizer, LR schedule, EMA and every rank's RNG states this
makes `--resume` continue exactly as if the run had not stopped (tested bit for bit on CPU).

Under torchrun (WORLD_SIZE > 1) each rank trains on its share with the gloo backend on CPU or
NCCL on GPUs; DDP averages the gradients, rank 0 writes checkpoints and the log, and at the end
the ranks compare a checksum of their weights to prove the replicas stayed in sync.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from armstack_learning.augment import BaseRotationConfig, RelocationConfig
from armstack_learning.data import dataset_fingerprint
from armstack_learning.diffusion import DiffusionConfig
from armstack_learning.factory import (
    CHECKPOINT_FORMAT,
    POLICY_KINDS,
    PolicyConfig,
    action_normalization,
    build_policy,
    config_from_dict,
    config_summary,
    make_dataset,
    prepare_config,
)
from armstack_learning.features import FeatureLayout
from armstack_learning.normalize import NormalizationConfig
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; validated on construction. lr None = the policy's preset."""

    policy: str
    dataset: str
    out: str
    steps: int
    batch_size: int = 8  # per process
    lr: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip_norm: float = 10.0
    ema: bool = False
    ema_power: float = 0.75  # EMA decay 1 - (1 + step)^-power, capped at ema_max_decay
    ema_max_decay: float = 0.9999
    seed: int = 0
    save_every: int = 1000
    log_every: int = 50
    keep_checkpoints: int = 3
    num_workers: int = 0
    stop_at: int | None = None  # stop (and checkpoint) at this step, e.g. for a time-boxed job
    # A checkpoint whose weights (and policy config and layout) start this run, which then has
    # its own optimizer, LR schedule and step count: fine-tuning, e.g. a decaying LR after a
    # constant-LR run.
    init_from: str | None = None
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    # Training samples move the cubes their actions ignore (armstack_learning.augment).
    relocation: RelocationConfig = field(default_factory=RelocationConfig)
    # Training samples turn their reach about the arm's base (armstack_learning.augment).
    rotation: BaseRotationConfig = field(default_factory=BaseRotationConfig)
    # Episode indices of the dataset to train on (None: all); the normalization then comes from
    # their frames (armstack_learning.data).
    episodes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"TrainConfig.policy must be one of {POLICY_KINDS}, got {self.policy!r}")
        for name in ("steps", "batch_size", "save_every", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("warmup_steps", "num_workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        if self.lr is not None and not self.lr > 0.0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, "
                             f"got {self.lr_schedule!r}")
        if not self.grad_clip_norm > 0.0:
            raise ValueError(f"TrainConfig.grad_clip_norm must be > 0, got {self.grad_clip_norm!r}")
        if not 0.0 < self.ema_max_decay < 1.0 or not self.ema_power > 0.0:
            raise ValueError("TrainConfig.ema_max_decay must be in (0, 1) and ema_power > 0")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"TrainConfig.stop_at must be in [1, steps], got {self.stop_at!r}")
        if self.episodes is not None and (
                not isinstance(self.episodes, tuple) or not self.episodes
                or not all(isinstance(e, int) and e >= 0 for e in self.episodes)):
            raise ValueError("TrainConfig.episodes must be None or a non-empty tuple of ints "
                             f">= 0, got {self.episodes!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        values = dict(raw)
        values["normalization"] = NormalizationConfig(**values.get("normalization", {}))
        values["relocation"] = RelocationConfig(**values.get("relocation", {}))
        values["rotation"] = BaseRotationConfig(**values.get("rotation", {}))
        if values.get("episodes") is not None:
            values["episodes"] = tuple(values["episodes"])
        return cls(**values)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if info.distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":
            # ranks share the machine's cores; oversubscribing them slows every rank down
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return info, device


class StepBatchSampler(Sampler[list[int]]):
    """Batches of this rank for steps [start, stop): see the module doc."""

    def __init__(self, n: int, batch_size: int, seed: int, dist_info: DistInfo, start: int,
                 stop: int) -> None:
        self.per_rank = n // dist_info.world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"{n} samples cannot fill one batch of {batch_size} on each of "
                             f"{dist_info.world_size} process(es); lower the batch size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = dist_info.rank, dist_info.world_size
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, order = -1, np.empty(0, np.int64)
        for step in range(self.start, self.stop):
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                perm = np.random.default_rng((self.seed, e)).permutation(self.n)
                order, epoch = perm[self.rank::self.world][: self.per_rank], e
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class EMA:
    """Exponential moving average of a model's parameters and buffers (Diffusion Policy samples
    from the averaged weights); decay warms up as 1 - (1 + step)^-power."""

    def __init__(self, model: nn.Module, power: float, max_decay: float) -> None:
        self.power, self.max_decay = power, max_decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay(self, step: int) -> float:
        return min(self.max_decay, 1.0 - (1.0 + step) ** -self.power)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay(step)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                self.shadow[k].copy_(v)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """LR factor per step: linear warmup, then constant or cosine decay to 0 at cfg.steps."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(out: Path, step: int) -> Path:
    return out / CHECKPOINT_DIR / f"step_{step:09d}.pt"


def latest_checkpoint(out: Path | str) -> Path | None:
    files = sorted((Path(out) / CHECKPOINT_DIR).glob("step_*.pt"))
    return files[-1] if files else None


def save_checkpoint(state: dict, path: Path, keep: int) -> None:
    """Atomic write (a crash leaves the previous checkpoints intact), then prune old ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(path.parent.glob("step_*.pt"))[:-keep]:
        old.unlink()


def _all_gather(obj: object, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _optimizer(policy: Policy, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = policy.optimizer_groups()
    if cfg.lr is not None:
        for group in groups:
            group["lr"] = cfg.lr
    pcfg = policy.config
    betas = pcfg.optimizer_betas if isinstance(pcfg, DiffusionConfig) else (0.9, 0.999)
    return torch.optim.AdamW(groups, betas=betas, weight_decay=pcfg.optimizer_weight_decay)


def _resume_state(cfg: TrainConfig) -> tuple[TrainConfig, dict | None]:
    """The checkpoint to continue from and the run config it implies: the checkpoint's, with
    the schedule-neutral fields (steps, stop_at, logging, checkpointing, workers) from `cfg`."""
    path = latest_checkpoint(cfg.out)
    if path is None:
        logger.warning("--resume: no checkpoint in %s; starting a new run",
                       Path(cfg.out) / CHECKPOINT_DIR)
        return cfg, None
    ckpt = load_checkpoint(path, cfg.policy)
    saved = TrainConfig.from_dict(ckpt["train_config"])
    if saved.steps != cfg.steps:
        logger.warning("resuming with steps=%d instead of %d: the LR schedule changes, so the run "
                       "is no longer identical to an uninterrupted one", cfg.steps, saved.steps)
    now = ("steps", "stop_at", "save_every", "log_every", "keep_checkpoints", "num_workers", "out")
    merged = TrainConfig.from_dict({**saved.to_dict(), **{k: getattr(cfg, k) for k in now}})
    logger.info("resuming from %s at step %d", path, ckpt["step"])
    return merged, ckpt


def load_checkpoint(path: Path | str, policy: str) -> dict:
    """An armstack checkpoint of a `policy` policy, or a ValueError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint (tools/train_policy.py writes "
                         f"OUT/{CHECKPOINT_DIR}/step_*.pt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an armstack policy checkpoint")
    if ckpt["kind"] != policy:
        raise ValueError(f"{path} trains a {ckpt['kind']!r} policy, not {policy!r}")
    return ckpt


def _init_record(path: str, init: dict) -> dict:
    """The checkpoint a run started from, and the training steps behind its weights (those of
    the runs it started from in turn included)."""
    earlier = (init.get("init") or {}).get("steps_before", 0)
    return {"path": str(Path(path).resolve()), "step": int(init["step"]),
            "steps_before": int(init["step"]) + int(earlier)}


def train(cfg: TrainConfig, policy_cfg: PolicyConfig, layout: FeatureLayout,
          resume: bool = False) -> Path:
    """Run (or continue) training; returns the last checkpoint written."""
    info, device = init_distributed()
    try:
        ckpt = init = None
        if resume:
            cfg, ckpt = _resume_state(cfg)
        source = ckpt
        if ckpt is None and cfg.init_from is not None:
            source = init = load_checkpoint(cfg.init_from, cfg.policy)
        if source is not None:
            # Compared completed, as the checkpoint's was: a VLA's vocabulary comes from the data.
            given = config_summary(prepare_config(cfg.policy, policy_cfg, cfg.dataset))
            differ = sorted(k for k in given if given[k] != source["policy_config"].get(k))
            if differ:
                logger.warning("the checkpoint's policy config is used; given now and ignored: "
                               "%s", ", ".join(f"{k}={given[k]!r}" for k in differ))
            policy_cfg = config_from_dict(source["kind"], source["policy_config"])
            layout = _source_layout(source, layout, fine_tune=ckpt is None)
        return _Trainer(cfg, policy_cfg, layout, info, device, ckpt, init).run()
    finally:
        if info.distributed:
            dist.destroy_process_group()


def _source_layout(source: dict, given: FeatureLayout, fine_tune: bool) -> FeatureLayout:
    """The checkpoint's layout; a fine-tune takes the object hold given now, which changes
    what the inputs mean but no weight, so fine-tuning can adapt a model to it."""
    layout = FeatureLayout.from_dict(source["layout"])
    if not (fine_tune and layout.objects and given.objects):
        return layout
    if given.objects.hold != layout.objects.hold:
        logger.warning("object hold %.3g s (the checkpoint's was %.3g s)", given.objects.hold,
                       layout.objects.hold)
    return replace(layout, objects=replace(layout.objects, hold=given.objects.hold))


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log records after `step`: a run stopped between checkpoints logged steps that
    its resumption trains and logs again."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) < len(lines):
        logger.info("%s: %d record(s) after step %d dropped", path, len(lines) - len(kept), step)
        path.write_text("".join(kept), encoding="utf-8")


class _Trainer:
    def __init__(self, cfg: TrainConfig, policy_cfg: PolicyConfig, layout: FeatureLayout,
                 info: DistInfo, device: torch.device, ckpt: dict | None,
                 init: dict | None = None) -> None:
        self.cfg, self.info, self.device = cfg, info, device
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        policy_cfg = prepare_config(cfg.policy, policy_cfg, cfg.dataset)
        self.dataset = make_dataset(policy_cfg, cfg.dataset, layout, cfg.relocation,
                                    cfg.episodes, cfg.rotation)
        normalizer = self.dataset.normalizer(cfg.normalization,
                                             action_mode=action_normalization(cfg.policy))
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.policy = build_policy(cfg.policy, policy_cfg, layout, normalizer).to(device)
        self.optimizer = _optimizer(self.policy, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.ema = EMA(self.policy, cfg.ema_power, cfg.ema_max_decay) if cfg.ema else None
        self.step = 0
        # Where the weights came from: a resumed run keeps its checkpoint's record.
        self.init_info = (ckpt or {}).get("init") if init is None else _init_record(
            cfg.init_from, init)
        # Hashing reads every data file: rank 0 alone does it, as it alone writes checkpoints.
        self.dataset_info = self._describe_dataset() if info.is_main else {}
        if ckpt is not None:
            if info.is_main and self.dataset_info["sha256"] != ckpt["dataset"]["sha256"]:
                logger.warning("the dataset changed since %s was written; training continues "
                               "with the checkpoint's normalization on the new data",
                               ckpt["dataset"]["path"])
            self._restore(ckpt)
            if info.is_main:
                _truncate_log(self.out / LOG_FILE, self.step)
        else:
            if init is not None:
                # Raw weights, not the EMA: the new run's own EMA starts from them.
                self.policy.load_state_dict(init["model"])
                logger.info("starting from the weights of %s (step %d)", cfg.init_from,
                            init["step"])
            random.seed(cfg.seed + info.rank)
            np.random.seed(cfg.seed + info.rank)
            torch.manual_seed(cfg.seed + info.rank)  # dropout, latent and noise differ per rank
        self.model: nn.Module = self.policy
        if info.distributed:
            self.model = DistributedDataParallel(
                self.policy, device_ids=[device.index] if device.type == "cuda" else None)

    def _describe_dataset(self) -> dict:
        """The data trained on: with an episode selection, frames and episodes count the
        selection, and episode_index lists it."""
        info = {"path": str(self.dataset.root.resolve()),
                "sha256": dataset_fingerprint(self.dataset.root),
                "fps": self.dataset.fps, "frames": len(self.dataset),
                "episodes": len(self.dataset.episodes)}
        if not self.dataset.all_episodes:
            info["episode_index"] = self.dataset.episodes.tolist()
        return info

    def _restore(self, ckpt: dict) -> None:
        self.policy.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        self.step = int(ckpt["step"])
        states = ckpt["rng"]
        if len(states) == self.info.world_size:
            set_rng_state(states[self.info.rank])
        else:
            logger.warning("checkpoint has RNG states of %d rank(s), this run has %d: reseeding",
                           len(states), self.info.world_size)
            torch.manual_seed(self.cfg.seed + self.info.rank + self.step)

    def _loader(self, stop: int) -> DataLoader:
        sampler = StepBatchSampler(len(self.dataset), self.cfg.batch_size, self.cfg.seed,
                                   self.info, self.step, stop)
        # A private generator: DataLoader draws worker seeds from it, not from the global RNG
        # whose state the checkpoints restore.
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.cfg.num_workers,
                          generator=torch.Generator().manual_seed(self.cfg.seed),
                          persistent_workers=False)

    def run(self) -> Path:
        stop = self.cfg.stop_at or self.cfg.steps
        last = latest_checkpoint(self.out)
        if self.step >= stop:
            logger.info("already at step %d (stop at %d); nothing to do", self.step, stop)
            return last
        self.model.train()
        sums: dict[str, float] = {}
        t0, samples = time.perf_counter(), 0
        for batch in self._loader(stop):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss, parts = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                                      self.cfg.grad_clip_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.policy, self.step)
            samples += len(next(iter(batch.values())))
            for k, v in {**parts, "_steps": 1.0}.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.step % self.cfg.log_every == 0 or self.step == stop:
                self._log(sums, t0, samples)
                sums = {}
            if self.step % self.cfg.save_every == 0 or self.step == stop:
                last = self._checkpoint()
        logger.info("rank %d finished at step %d (%d samples this run)", self.info.rank, self.step,
                    samples)
        self._check_replicas()
        return last

    def _log(self, sums: dict[str, float], t0: float, samples: int) -> None:
        n = sums.pop("_steps")
        means = {k: v / n for k, v in sums.items()}
        record = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                  "samples_per_s_per_rank": samples / max(1e-9, time.perf_counter() - t0), **means}
        if self.info.is_main:
            with open(self.out / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            logger.info("step %d: %s", self.step,
                        ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))

    def _checkpoint(self) -> Path:
        rng = _all_gather(rng_state(), self.info)  # every rank's, so resume restores each
        path = checkpoint_path(self.out, self.step)
        if self.info.is_main:
            state = {"format": CHECKPOINT_FORMAT, "kind": self.cfg.policy,
                     "policy_config": config_summary(self.policy.config),
                     "layout": self.policy.layout.to_dict(), "train_config": self.cfg.to_dict(),
                     "dataset": self.dataset_info, "step": self.step,
                     "init": self.init_info,
                     "model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
                     "ema": None if self.ema is None else self.ema.shadow, "rng": rng}
            save_checkpoint(state, path, self.cfg.keep_checkpoints)
            logger.info("saved %s", path)
        if self.info.distributed:
            dist.barrier()  # no rank runs ahead of a checkpoint that may be resumed from
        return path

    def _check_replicas(self) -> None:
        """Raise if the ranks' weights differ (unsynchronized gradients or buffers)."""
        if not self.info.distributed:
            return
        total = sum(float(p.detach().double().abs().sum()) for p in self.policy.parameters())
        sums = _all_gather(total, self.info)
        if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"replicas diverged: weight checksums per rank {sums}")
        logger.info("rank %d: replicas in sync (weight checksum %.10g over %d ranks)",
                    self.info.rank, total, len(sums))
