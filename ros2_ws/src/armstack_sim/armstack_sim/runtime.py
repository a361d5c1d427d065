"""The simulator's hardware loop: MuJoCo physics with the emulated servo bus in the loop.

`SimRuntime` couples a `SimWorld` to a `DynamixelBusEmulator` the way real servos couple
a controller to an arm: each physics step the servos' profiled position references
(what the driver wrote on the bus) become the joints' position setpoints, and the
joints' measured state goes back into the servos' Present Position / Velocity /
Current registers. The joint <-> tick map is armstack_common.servo_config, the same
one the driver uses, so calibration is consistent by construction.

`run_realtime` paces physics to the wall clock (catching up after a slow iteration,
never running ahead), and `snapshot` hands a consistent copy of the state to the
camera thread so rendering never holds the physics lock. Plain module: no rclpy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import mujoco
import numpy as np

from armstack_common.servo_config import ServoBusConfig
from armstack_common.stats import RollingStats

from armstack_sim.dynamixel_bus import DynamixelBusEmulator
from armstack_sim.world import SimWorld

logger = logging.getLogger(__name__)

# Motor torque per ampere of an XM430-W350 (4.1 N m stall torque at 2.3 A, 12 V), used to
# report joint effort as the servo's Present Current. The gripper's finger force acts on
# the servo through a ~2 cm crank.
_TORQUE_PER_AMP = 1.78  # N m / A
_GRIPPER_CRANK = 0.02  # m


@dataclass(frozen=True)
class RuntimeConfig:
    """Pacing of the simulated hardware."""

    real_time_factor: float = 1.0  # simulated seconds per wall second
    max_catch_up_steps: int = 50  # physics steps per iteration after a stall, at most
    step_stats_window: int = 2000  # physics steps in step_time_us (4 s at 500 Hz)

    def __post_init__(self) -> None:
        if not 0.05 <= self.real_time_factor <= 20.0:
            raise ValueError(
                f"RuntimeConfig.real_time_factor must be in [0.05, 20], got {self.real_time_factor}"
            )
        if self.step_stats_window < 1:
            raise ValueError(
                f"RuntimeConfig.step_stats_window must be >= 1, got {self.step_stats_window}"
            )
        if self.max_catch_up_steps < 1:
            raise ValueError(
                f"RuntimeConfig.max_catch_up_steps must be >= 1, got {self.max_catch_up_steps}"
            )


class SimRuntime:
    """Steps the world with the bus in the loop; thread-safe snapshot for rendering."""

    def __init__(
        self,
        world: SimWorld,
        bus: DynamixelBusEmulator,
        servo_config: ServoBusConfig,
        config: RuntimeConfig | None = None,
    ) -> None:
        if list(servo_config.joint_names) != list(world.joint_names):
            raise ValueError(
                f"servo config joints {servo_config.joint_names} differ from the world's "
                f"actuated joints {list(world.joint_names)} (order matters)"
            )
        self.world = world
        self.bus = bus
        self.servo_config = servo_config
        self.config = config or RuntimeConfig()
        self.lock = threading.Lock()
        self._snapshot = mujoco.MjData(world.model)
        self._held = world.joint_positions()  # setpoint of a joint whose torque is off
        self._effort_scale = np.array(
            [_TORQUE_PER_AMP] * (len(world.joint_names) - 1) + [_TORQUE_PER_AMP / _GRIPPER_CRANK]
        )
        self.step_time_us = RollingStats(self.config.step_stats_window)
        self.steps = 0
        self._stop = threading.Event()
        self.publish_present()

    def reset(self, seed: int | None) -> None:
        """A new episode: world reset, servos told the arm is where the world put it."""
        with self.lock:
            self.world.reset(seed)
            self._held = self.world.joint_positions()
            self._publish_present_locked()

    def publish_present(self) -> None:
        with self.lock:
            self._publish_present_locked()

    def _publish_present_locked(self) -> None:
        q = self.world.joint_positions()
        ticks = self.servo_config.joint_to_ticks(q)
        velocity = self.servo_config.joint_velocity_to_units(self.world.joint_velocities())
        amps = self.world.joint_efforts() / self._effort_scale
        current = self.servo_config.amps_to_current_units(amps)
        self.bus.set_present_array(ticks, velocity, current)

    def _servo_setpoints(self) -> np.ndarray:
        """(7,) joint setpoints from the servos' profiled references; a servo with its
        torque off holds where it was (the simulated arm has no brake-free sag)."""
        references = self.bus.position_references()
        q = self.world.joint_positions()
        setpoints = np.empty(len(self.servo_config.joints))
        for k, (joint, (torque_enabled, ticks)) in enumerate(zip(self.servo_config.joints,
                                                                  references)):
            if torque_enabled:
                setpoints[k] = joint.to_joint(ticks)
                self._held[k] = q[k]
            else:
                setpoints[k] = self._held[k]
        return setpoints

    def step(self) -> None:
        """One physics step with the servos in the loop."""
        t0 = time.perf_counter()
        dt = self.world.timestep
        with self.lock:
            self.bus.step(dt)
            self.world.set_joint_targets(self._servo_setpoints())
            self.world.step(1)
            self._publish_present_locked()
        self.steps += 1
        self.step_time_us.add((time.perf_counter() - t0) * 1e6)

    def snapshot(self) -> tuple[mujoco.MjData, float]:
        """A copy of the physics state and the wall time it was taken (for a camera frame)."""
        with self.lock:
            mujoco.mj_copyData(self._snapshot, self.world.model, self.world.data)
            taken = time.time()
        return self._snapshot, taken

    def run_realtime(self) -> None:
        """Step physics in pace with the wall clock until `stop()`."""
        dt = self.world.timestep / self.config.real_time_factor
        next_due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            due = int((now - next_due) / dt) + 1
            if due > self.config.max_catch_up_steps:
                # Too far behind (a stall): drop the backlog rather than fast-forward.
                next_due = now
                due = 1
            for _ in range(max(due, 0)):
                self.step()
                next_due += dt
            sleep = next_due - time.monotonic()
            if sleep > 0:
                self._stop.wait(sleep)

    def stop(self) -> None:
        self._stop.set()

    def real_time_ratio(self, wall_seconds: float, steps_before: int) -> float:
        """Simulated seconds per wall second over an interval (diagnostics)."""
        if wall_seconds <= 0:
            return 0.0
        return (self.steps - steps_before) * self.world.timestep / wall_seconds
