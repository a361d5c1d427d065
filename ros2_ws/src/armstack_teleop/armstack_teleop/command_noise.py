"""Noise on the expert's executed command, for demonstrations with corrective labels (DART).

A policy trained on clean demonstrations never sees the arm off the expert's path, so after
its own small errors it has no example of how to come back. DART (Laskey et al. 2017) records
the expert under injected noise: the arm executes a perturbed command, and the action recorded
is the expert's clean command at the state the perturbation led to, which steers back towards
the path. `CommandNoise` is the perturbation: a smooth random offset of the commanded
end-effector position, an Ornstein-Uhlenbeck process (stationary standard deviation `std`
per axis, correlation time `time_constant`), so the arm drifts off the path as a slightly
wrong policy would rather than shaking. It starts at zero at each take. During the expert's
`quiet_phases` (e.g. descend and close) the offset fades to zero instead: noise there makes
the demonstrations close beside the cube at uneven moments, which a policy then copies (an ACT
trained on 50 takes noisy throughout grasped less precisely than one trained on clean takes).

The teleop node executes the perturbed command (`ee_command`) and publishes the clean one on
`expert/clean_ee_command`, which the recorder records with `action_source: ee_command`
remapped there (launch/record.launch.yaml says how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CommandNoiseConfig:
    std: float = 0.0  # m, stationary standard deviation per position axis; 0: no noise
    time_constant: float = 0.5  # s, correlation time of the offset
    # Expert phases (armstack_sim.expert.Phase values) in which the offset decays to zero with
    # time constant fade_time instead of drifting; it drifts again from there afterwards.
    quiet_phases: tuple[str, ...] = ()
    fade_time: float = 0.2  # s

    def __post_init__(self) -> None:
        if not self.std >= 0.0:
            raise ValueError(f"CommandNoiseConfig.std must be >= 0, got {self.std!r}")
        if not self.time_constant > 0.0:
            raise ValueError(f"CommandNoiseConfig.time_constant must be > 0, "
                             f"got {self.time_constant!r}")
        if not self.fade_time > 0.0:
            raise ValueError(f"CommandNoiseConfig.fade_time must be > 0, got {self.fade_time!r}")
        if not all(isinstance(p, str) and p for p in self.quiet_phases):
            raise ValueError(f"CommandNoiseConfig.quiet_phases must be phase names, "
                             f"got {self.quiet_phases!r}")

    @property
    def enabled(self) -> bool:
        return self.std > 0.0


class CommandNoise:
    """The offset (3,) in m to add to the commanded ee position at each tick."""

    def __init__(self, config: CommandNoiseConfig, seed: int = 0) -> None:
        """`seed`: -1 draws one."""
        self.config = config
        # A child of the seed: its own stream, apart from the one default_rng(seed) gives the
        # expert session's deliberate misses, which take the same expert_seed.
        self._rng = np.random.default_rng(
            None if seed == -1 else np.random.SeedSequence(seed).spawn(1)[0])
        self._offset = np.zeros(3)
        self._last: float | None = None

    def reset(self) -> None:
        """A new take: the offset starts from zero."""
        self._offset = np.zeros(3)
        self._last = None

    def offset(self, now: float, phase: str | None = None) -> np.ndarray:
        """The offset at time `now` (s, non-decreasing between resets), advanced from the last
        call by the exact Ornstein-Uhlenbeck transition, so its statistics do not depend on the
        tick rate; in one of the config's quiet phases it only decays."""
        if not self.config.enabled:
            return np.zeros(3)
        if self._last is not None and now > self._last:
            elapsed = now - self._last
            if phase in self.config.quiet_phases:
                self._offset = self._offset * math.exp(-elapsed / self.config.fade_time)
            else:
                decay = math.exp(-elapsed / self.config.time_constant)
                spread = self.config.std * math.sqrt(1.0 - decay * decay)
                self._offset = decay * self._offset + spread * self._rng.standard_normal(3)
        self._last = now if self._last is None else max(self._last, now)
        return self._offset.copy()
