"""Joint goals through the servos' velocity-based profiles, without a bus.

On the graph a goal position written to a servo does not become the motor's setpoint at once:
the servo's trajectory generator ramps to it at Profile Acceleration, no faster than Profile
Velocity (`EmulatedServo`, as the X-series firmware). Code that drives `SimWorld` directly
(the in-process policy evaluation) uses `ProfiledJoints` to get the same motion: the same
trapezoid in each servo's tick frame, with the limits of config/robot/dynamixel.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from armstack_common.servo_config import ServoBusConfig

from armstack_sim.dynamixel_servo import TrapezoidProfile, velocity_based_limits

if TYPE_CHECKING:
    from armstack_sim.world import SimWorld


class ProfiledJoints:
    """Goal joint positions (J,) -> profiled joint setpoints (J,), stepped at physics rate."""

    def __init__(self, config: ServoBusConfig) -> None:
        self.joints = config.joints
        self._profiles = [TrapezoidProfile() for _ in self.joints]
        self._limits = [velocity_based_limits(j.profile_velocity, j.profile_acceleration)
                        for j in self.joints]
        self._setpoints = np.zeros(len(self.joints))

    def reset(self, positions: np.ndarray) -> None:
        """At rest at `positions` (J,), with those as goals."""
        for profile, joint, q in zip(self._profiles, self.joints, positions, strict=True):
            profile.reset(float(joint.to_ticks(q)))

    def set_goals(self, positions: np.ndarray) -> None:
        for profile, joint, q in zip(self._profiles, self.joints, positions, strict=True):
            profile.target = float(joint.to_ticks(q))

    def step(self, dt: float) -> np.ndarray:
        """Advance every profile by dt s; the setpoints (J,) (a view, overwritten next step)."""
        for k, (profile, joint, (vmax, amax)) in enumerate(
                zip(self._profiles, self.joints, self._limits, strict=True)):
            profile.step(dt, vmax, amax)
            self._setpoints[k] = joint.to_joint(profile.position)
        return self._setpoints

    def drive(self, world: SimWorld, seconds: float) -> None:
        """Advance `world` by `seconds` (at least one physics step), its joint setpoints
        following the profiles at every physics step, as the servos' firmware does."""
        for _ in range(max(1, round(seconds / world.timestep))):
            world.set_joint_targets(self.step(world.timestep))
            world.step(1)
