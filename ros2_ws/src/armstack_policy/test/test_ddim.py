"""DDIM sampler and noise schedule (NumPy only)."""

import math

import numpy as np
import pytest
from armstack_policy.ddim import (
    DDIMSampler,
    NoiseSchedule,
    alphas_cumprod,
    betas,
    ddim_step,
    ddim_timesteps,
)


def test_cosine_schedule_matches_closed_form():
    sched = NoiseSchedule(num_train_timesteps=100)
    ab = alphas_cumprod(sched)
    b = betas(sched)
    assert ab.shape == (100,) and np.all(np.diff(ab) < 0)
    assert np.all((b > 0) & (b <= 0.999))
    # Without the cap, ab_t = f((t+1)/T) / f(0) with f(u) = cos((u + s)/(1 + s) * pi/2)^2.
    f = [math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (0.0, 0.5)]
    assert ab[49] == pytest.approx(f[1] / f[0], rel=1e-12)
    assert b[-1] == pytest.approx(0.999)  # the last beta hits the cap
    assert ab[0] > 0.999


def test_linear_schedule():
    sched = NoiseSchedule(num_train_timesteps=10, beta_schedule="linear", beta_start=0.01,
                          beta_end=0.1)
    assert betas(sched) == pytest.approx(np.linspace(0.01, 0.1, 10))
    assert alphas_cumprod(sched)[-1] == pytest.approx(np.prod(1 - np.linspace(0.01, 0.1, 10)))


@pytest.mark.parametrize("spacing, expected", [
    ("leading", [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]),
    ("trailing", [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]),
])
def test_timesteps(spacing, expected):
    assert ddim_timesteps(100, 10, spacing).tolist() == expected


def test_timesteps_uneven_split():
    steps = ddim_timesteps(100, 3, "trailing")
    assert steps.tolist() == [99, 66, 32]
    assert ddim_timesteps(100, 100, "leading").tolist() == list(range(99, -1, -1))


@pytest.mark.parametrize("kwargs, field", [
    ({"num_train_timesteps": 1}, "num_train_timesteps"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"prediction_type": "sample"}, "prediction_type"),
    ({"clip_sample_range": 0.0}, "clip_sample_range"),
])
def test_schedule_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        NoiseSchedule(**kwargs)


def test_bad_step_count_and_spacing():
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(100, 0)
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(100, 101)
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(100, 10, "middle")


def test_from_dict_ignores_card_extras():
    card = {"num_train_timesteps": 50, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False,
            "num_inference_steps": 10, "alphas_cumprod": [0.5]}
    sched = NoiseSchedule.from_dict(card)
    assert sched.num_train_timesteps == 50 and sched.clip_sample is False
    assert NoiseSchedule.from_dict(sched.to_dict()) == sched


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_oracle_denoiser_recovers_x0(spacing, steps):
    """With the true noise as the prediction, every DDIM step lands on the same x0's
    trajectory, so the sample is x0 exactly, whatever the number of steps."""
    sched = NoiseSchedule(num_train_timesteps=100)
    ab = alphas_cumprod(sched)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-0.9, 0.9, (2, 8, 3))

    def oracle(x_t: np.ndarray, t: int) -> np.ndarray:
        return (x_t - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])

    noise = rng.standard_normal(x0.shape).astype(np.float32)
    sampler = DDIMSampler(sched, steps, spacing)
    out = sampler.sample(oracle, noise)
    assert out.dtype == np.float32 and out.shape == x0.shape
    assert np.max(np.abs(out - x0)) < 1e-5


def test_clipping_bounds_the_sample():
    sched = NoiseSchedule(num_train_timesteps=100, clip_sample_range=0.5)
    sampler = DDIMSampler(sched, 5)
    noise = np.random.default_rng(1).standard_normal((1, 4, 2)).astype(np.float32)
    out = sampler.sample(lambda x, t: -3.0 * x, noise)  # a denoiser that drives x0 out of range
    assert np.max(np.abs(out)) <= 0.5 + 1e-6
    unclipped = DDIMSampler(NoiseSchedule(num_train_timesteps=100, clip_sample=False), 5)
    assert np.max(np.abs(unclipped.sample(lambda x, t: -3.0 * x, noise))) > 0.5


def test_single_step_formula():
    x_t, eps = np.array([0.3]), np.array([-0.2])
    ab_t, ab_prev = 0.5, 0.9
    x0 = (0.3 - math.sqrt(0.5) * -0.2) / math.sqrt(0.5)
    want = math.sqrt(0.9) * x0 + math.sqrt(0.1) * -0.2
    assert ddim_step(x_t, eps, ab_t, ab_prev, None)[0] == pytest.approx(want)
    assert ddim_step(x_t, eps, ab_t, ab_prev, 0.1)[0] == pytest.approx(
        math.sqrt(0.9) * 0.1 + math.sqrt(0.1) * -0.2)


def test_denoiser_shape_is_checked():
    sampler = DDIMSampler(NoiseSchedule(), 2)
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(lambda x, t: x[:, :1], np.zeros((1, 4, 2), np.float32))
