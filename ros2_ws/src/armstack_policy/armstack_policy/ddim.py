"""DDIM sampling for Diffusion Policy in NumPy (no torch), for the runtime and for training alike.

A diffusion policy's ONNX model is only the denoiser eps(x_t, t, obs); the reverse process runs
here, in normalized action space. The noise schedule is the one the model was trained with: its
parameters travel in the model card's "diffusion" block (`NoiseSchedule.from_dict`), and the
training code builds its forward process from `alphas_cumprod` below, so sampler and trainer
share one definition.

Conventions (those of the DDPM/DDIM schedulers Diffusion Policy is usually trained with):
- timesteps t = 0 .. T-1; alphas_cumprod[t] = prod_{i<=t} (1 - beta_i), so x_t =
  sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps.
- "squaredcos_cap_v2": the cosine schedule of Nichol & Dhariwal 2021 (s = 0.008), each beta
  capped at 0.999 so the last step stays invertible.
- DDIM with eta = 0 (deterministic given the initial noise). One step from t to t_prev:
      x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), clipped to +-clip_sample_range if asked,
      x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps,
  with ab_prev = 1 past the first timestep (the final step returns x0_hat itself). eps is the
  model's prediction, not re-derived from the clipped x0_hat, as in the usual DDIM scheduler.
- Timestep spacing: "leading" is t = (n-1)r, ..., r, 0 with r = T // n (the common default);
  "trailing" is t = T-1, T-1-r', ... with r' = T / n, which starts at the noisiest step the model
  was trained on (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
  Flawed": leading spacing starts sampling from a less noisy level than pure noise is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")
SPACINGS = ("leading", "trailing")
_MAX_BETA = 0.999


@dataclass(frozen=True)
class NoiseSchedule:
    """The forward process a diffusion policy was trained with; validated on construction."""

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 2e-2  # linear schedule only
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ValueError(f"NoiseSchedule.num_train_timesteps must be an int >= 2, "
                             f"got {self.num_train_timesteps!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"NoiseSchedule.beta_schedule must be one of {BETA_SCHEDULES}, "
                             f"got {self.beta_schedule!r}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"NoiseSchedule.beta_start/beta_end must satisfy 0 < start < end < 1, "
                             f"got {self.beta_start!r}, {self.beta_end!r}")
        if self.prediction_type != "epsilon":
            raise ValueError(f"NoiseSchedule.prediction_type must be 'epsilon', "
                             f"got {self.prediction_type!r}")
        if not self.clip_sample_range > 0.0:
            raise ValueError(f"NoiseSchedule.clip_sample_range must be > 0, "
                             f"got {self.clip_sample_range!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> NoiseSchedule:
        """From a model card's "diffusion" block (unknown keys such as num_inference_steps are
        ignored; missing keys take the defaults)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in names})


def betas(schedule: NoiseSchedule) -> np.ndarray:
    """(T,) float64 noise variances beta_t."""
    steps = schedule.num_train_timesteps
    if schedule.beta_schedule == "linear":
        return np.linspace(schedule.beta_start, schedule.beta_end, steps, dtype=np.float64)

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), _MAX_BETA)
                     for i in range(steps)], dtype=np.float64)


def alphas_cumprod(schedule: NoiseSchedule) -> np.ndarray:
    """(T,) float64 cumulative products ab_t, decreasing from ~1 towards 0."""
    return np.cumprod(1.0 - betas(schedule))


def ddim_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "trailing") -> np.ndarray:
    """(num_steps,) int64 timesteps, descending, visited by the sampler."""
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be an int in [1, {num_train_timesteps}], got {num_steps!r}")
    index = np.arange(num_steps)
    if spacing == "leading":
        steps = (num_steps - 1 - index) * (num_train_timesteps // num_steps)
    elif spacing == "trailing":
        steps = np.round(num_train_timesteps - index * num_train_timesteps / num_steps) - 1
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return steps.astype(np.int64)


def ddim_step(x_t: np.ndarray, eps: np.ndarray, ab_t: float, ab_prev: float,
              clip_range: float | None) -> np.ndarray:
    """One deterministic DDIM update x_t -> x_prev (eta = 0); shapes of x_t, float64 math."""
    x0 = (x_t - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)
    if clip_range is not None:
        x0 = np.clip(x0, -clip_range, clip_range)
    return math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps


class DDIMSampler:
    """Runs the reverse process with a denoiser callable; one instance per loaded model.

    `denoise(x_t, t)` gets x_t as float32 (B, H, D) and the integer timestep, returns eps
    (B, H, D); the observation is bound inside the callable (e.g. an ONNX Runtime session run
    with the current observation).
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int, spacing: str = "trailing") -> None:
        self.schedule = schedule
        self.alphas_cumprod = alphas_cumprod(schedule)
        self.timesteps = ddim_timesteps(schedule.num_train_timesteps, num_steps, spacing)
        self.spacing = spacing

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.size)

    def prev_alpha(self, index: int) -> float:
        """ab at the timestep after timesteps[index] (1.0 after the last one)."""
        if index + 1 < self.timesteps.size:
            return float(self.alphas_cumprod[self.timesteps[index + 1]])
        return 1.0

    def sample(self, denoise: Callable[[np.ndarray, int], np.ndarray],
               noise: np.ndarray) -> np.ndarray:
        """x_0 in normalized action space, float32 with the shape of `noise` (B, H, D)."""
        clip = self.schedule.clip_sample_range if self.schedule.clip_sample else None
        x = np.asarray(noise, dtype=np.float64)
        for i, t in enumerate(self.timesteps):
            eps = np.asarray(denoise(x.astype(np.float32), int(t)), dtype=np.float64)
            if eps.shape != x.shape:
                raise ValueError(f"denoiser returned shape {eps.shape}, expected {x.shape}")
            x = ddim_step(x, eps, float(self.alphas_cumprod[t]), self.prev_alpha(i), clip)
        return x.astype(np.float32)
