"""CommandNoise: a smooth, zero-mean offset of the stated spread, zero at each take's start."""

from __future__ import annotations

import numpy as np
import pytest

from armstack_teleop.command_noise import CommandNoise, CommandNoiseConfig


def run(noise: CommandNoise, steps: int, dt: float = 0.02) -> np.ndarray:
    return np.array([noise.offset(k * dt) for k in range(steps)])


def test_the_offset_has_the_stated_spread_and_correlation_time() -> None:
    std, tau, dt = 0.005, 0.5, 0.02
    offsets = run(CommandNoise(CommandNoiseConfig(std=std, time_constant=tau), seed=3), 200_000, dt)
    assert np.allclose(offsets.std(axis=0), std, rtol=0.05)
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.1 * std)
    # Ornstein-Uhlenbeck: the correlation one time constant apart is 1/e.
    lag = round(tau / dt)
    corr = np.mean([np.corrcoef(offsets[:-lag, a], offsets[lag:, a])[0, 1] for a in range(3)])
    assert corr == pytest.approx(np.exp(-1.0), abs=0.03)
    # It drifts rather than shakes: a 50 Hz step moves it by ~0.28 of its spread (rms),
    # sqrt(2 (1 - exp(-dt / tau))) for this process.
    step_rms = np.sqrt(np.mean(np.diff(offsets, axis=0) ** 2))
    assert step_rms == pytest.approx(std * np.sqrt(2 * (1 - np.exp(-dt / tau))), rel=0.05)


def test_it_starts_at_zero_and_reset_starts_it_again() -> None:
    noise = CommandNoise(CommandNoiseConfig(std=0.01), seed=1)
    first = run(noise, 50)
    assert np.array_equal(first[0], np.zeros(3)) and np.abs(first[-1]).max() > 0.0
    noise.reset()
    assert np.array_equal(noise.offset(100.0), np.zeros(3))
    # The same tick asked twice gives the same offset; the seed fixes the sequence.
    assert np.array_equal(noise.offset(100.02), noise.offset(100.02))
    again = run(CommandNoise(CommandNoiseConfig(std=0.01), seed=1), 50)
    assert np.array_equal(first, again)


def test_zero_std_is_off() -> None:
    noise = CommandNoise(CommandNoiseConfig())
    assert not noise.config.enabled and not run(noise, 20).any()


def test_in_a_quiet_phase_the_offset_decays_with_the_fade_time() -> None:
    config = CommandNoiseConfig(std=0.01, quiet_phases=("close",), fade_time=0.1)
    noise = CommandNoise(config, seed=2)
    start = run(noise, 100)[-1]  # t 1.98 s
    assert np.abs(start).max() > 0.002
    # Any other phase (or none) drifts as before; "close" decays, whatever the tick spacing.
    np.testing.assert_allclose(noise.offset(2.03, "close"), start * np.exp(-0.05 / 0.1))
    faded = noise.offset(2.5, "close")
    np.testing.assert_allclose(faded, start * np.exp(-0.52 / 0.1))
    assert np.abs(noise.offset(2.52, "lift") - faded).max() > 1e-4  # drifting again


@pytest.mark.parametrize(("field", "value"), [("std", -0.001), ("time_constant", 0.0),
                                              ("fade_time", 0.0), ("quiet_phases", ("",))])
def test_bad_values_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"CommandNoiseConfig.{field}"):
        CommandNoiseConfig(**{field: value})
