"""End-effector commands to joint commands: IK, then velocity/acceleration/position limits.

`IKController` is the whole ik node minus ROS. Per command:
1. the command is checked (finite numbers, unit quaternion, frame, age) and refused with
   a reason when it fails, changing nothing;
2. the pose is solved by `ArmKinematics.ik`, seeded from the last sent command (at start,
   and after `resync_after` seconds without commands, from the measured joint state), so
   the solution stays on the branch the arm is on;
3. a solution within the acceptance tolerances becomes the target; otherwise the last
   good target is kept (held): the arm never jumps towards a failed solve;
4. `step` moves the sent command towards the target within the URDF position limits,
   the URDF velocity limits times `velocity_scale`, and the acceleration limits.
The gripper (left_finger) is the 7th commanded joint: its target is the command's opening
clipped to the finger's URDF limits, and it is rate-limited like the arm joints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from armstack_common.kinematics import ArmKinematics, IKConfig, IKResult

from .motion_limits import MotionLimiter, MotionLimits
from .robot_model import parse_joints


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of IKController (the IK solver's own are in IKConfig)."""

    base_frame: str = "base_link"  # the only frame_id commands may use
    gripper_joint: str = "left_finger"
    # A solve that did not converge to the IK tolerances within its restarts is still used
    # when its best attempt is this close (targets at the workspace boundary).
    accept_position_tolerance: float = 2e-3  # m
    accept_orientation_tolerance: float = 0.02  # rad, over the weighted axes
    velocity_scale: float = 0.5  # fraction of the URDF <limit velocity>
    arm_acceleration: tuple[float, ...] = (8.0, 8.0, 8.0, 8.0, 8.0, 8.0)  # rad/s^2, chain order
    gripper_acceleration: float = 0.5  # m/s^2
    max_command_age: float = 1.0  # s; 0 accepts any age
    quaternion_tolerance: float = 0.01  # allowed | |q| - 1 |
    # After a longer gap between steps the joints have stopped at the last command: the
    # next step restarts from rest (holding the command once, as the period is unknown).
    max_step_period: float = 0.05  # s
    # After this long without a command, restart from the measured joint state (the arm
    # may have been moved, or the driver restarted). 0 never resyncs.
    resync_after: float = 1.0  # s

    def __post_init__(self) -> None:
        if not self.base_frame:
            raise ValueError("ControllerConfig.base_frame must not be empty")
        if not self.gripper_joint:
            raise ValueError("ControllerConfig.gripper_joint must not be empty")
        for name in (
            "accept_position_tolerance",
            "accept_orientation_tolerance",
            "gripper_acceleration",
            "quaternion_tolerance",
            "max_step_period",
        ):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ControllerConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.velocity_scale <= 1.0:
            raise ValueError(f"ControllerConfig.velocity_scale must be in (0, 1], got {self.velocity_scale}")
        if not self.arm_acceleration or any(not a > 0.0 for a in self.arm_acceleration):
            raise ValueError(
                f"ControllerConfig.arm_acceleration must be values > 0, got {self.arm_acceleration}"
            )
        for name in ("max_command_age", "resync_after"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"ControllerConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class EECommand:
    """One end-effector command: pose of ee_link in `frame_id`, gripper opening."""

    position: np.ndarray  # (3,) m
    orientation: np.ndarray  # (4,) quaternion x, y, z, w
    gripper: float  # m, left_finger position
    stamp: float  # s, the observation's time (carried forward)
    frame_id: str


class Outcome(str, Enum):
    TRACKING = "tracking"  # the solution is the new target
    HELD = "held"  # a valid command the IK could not reach: the last good target is kept
    REJECTED = "rejected"  # not a usable command: nothing changed


class Issue(str, Enum):
    INVALID = "invalid"  # non-finite numbers or a non-unit quaternion
    WRONG_FRAME = "wrong_frame"
    STALE = "stale"  # stamp older than max_command_age (or as far in the future)
    NO_STATE = "no_state"  # no measured joint state to start from
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Submission:
    """What became of one command."""

    outcome: Outcome
    issue: Issue | None = None
    reason: str = ""
    position_error: float = math.nan  # m, of the IK's best attempt
    orientation_error: float = math.nan  # rad
    solve_time: float = 0.0  # s, IK only
    # The controller (re)started from the measured joint state before this command.
    synced: bool = False


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a unit quaternion (x, y, z, w)."""
    x, y, z, w = q
    return np.array(
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
        ]
    )


class IKController:
    """Joint commands (arm chain + gripper) from end-effector commands. Not thread-safe."""

    def __init__(self, urdf_path: str | Path, ik_config: IKConfig, config: ControllerConfig) -> None:
        self.urdf_path = Path(urdf_path)
        joints = {j.name: j for j in parse_joints(self.urdf_path.read_text())}
        self.kinematics = ArmKinematics(self.urdf_path, ik_config)
        arm = self.kinematics.joint_names
        self.joint_names: tuple[str, ...] = (*arm, config.gripper_joint)
        for name in self.joint_names:
            if name not in joints or joints[name].velocity is None or not joints[name].velocity > 0.0:
                raise ValueError(f"URDF {self.urdf_path}: joint {name!r} needs a <limit velocity> > 0")
        self._urdf_velocity = np.array([joints[n].velocity for n in self.joint_names])  # (n+1,)
        self.check_config(config, ik_config)
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Back to a new controller's state: no target, no motion, nothing measured, no clock
        (the kinematics and settings stay; e.g. a new episode in an evaluation)."""
        self._limiter = MotionLimiter(self._limits(self.config))
        self._target: np.ndarray | None = None  # (n+1,) last good target
        self._measured = np.full(len(self.joint_names), np.nan)  # (n+1,)
        self._measured_time: float | None = None
        self._last_step: float | None = None  # time of the last step; None: next one from rest
        self._last_activity: float | None = None  # time of the last step or sync

    # --- configuration ----------------------------------------------------------------------

    def check_config(self, config: ControllerConfig, ik_config: IKConfig) -> None:
        """Raise ValueError (naming the field) if the settings do not fit this arm."""
        n_arm = len(self.kinematics.joint_names)
        if len(config.arm_acceleration) != n_arm:
            raise ValueError(
                f"ControllerConfig.arm_acceleration needs {n_arm} values (one per "
                f"{', '.join(self.kinematics.joint_names)}), got {len(config.arm_acceleration)}"
            )
        if config.gripper_joint != self.joint_names[-1]:
            raise ValueError("ControllerConfig.gripper_joint cannot change on a running controller")
        for kind in ("position", "orientation"):
            accept = getattr(config, f"accept_{kind}_tolerance")
            solver = getattr(ik_config, f"{kind}_tolerance")
            if accept < solver:
                raise ValueError(
                    f"ControllerConfig.accept_{kind}_tolerance ({accept}) must be >= the IK "
                    f"{kind}_tolerance ({solver})"
                )

    def _limits(self, config: ControllerConfig) -> MotionLimits:
        kin = self.kinematics
        g_lower, g_upper = kin.joint_limits(config.gripper_joint)
        return MotionLimits(
            lower=np.append(kin.lower, g_lower),
            upper=np.append(kin.upper, g_upper),
            max_velocity=config.velocity_scale * self._urdf_velocity,
            max_acceleration=np.append(config.arm_acceleration, config.gripper_acceleration),
        )

    def reconfigure(self, ik_config: IKConfig, config: ControllerConfig) -> None:
        """Apply new settings live; the sent command, its velocity and the target stay.
        Raises ValueError (naming the field) and keeps the old settings when they do not fit."""
        self.check_config(config, ik_config)
        if ik_config != self.kinematics.config:
            self.kinematics = ArmKinematics(self.urdf_path, ik_config)
        self.config = config
        self._limiter.set_limits(self._limits(config))

    # --- state ------------------------------------------------------------------------------

    @property
    def limits(self) -> MotionLimits:
        return self._limiter.limits

    @property
    def command(self) -> np.ndarray | None:
        """The last sent joint command (n+1,) in `joint_names` order, or None before the first."""
        return self._limiter.position if self._limiter.initialized else None

    @property
    def target(self) -> np.ndarray | None:
        """The joint target (n+1,) the commands move towards, or None before the first."""
        return None if self._target is None else self._target.copy()

    @property
    def moving(self) -> bool:
        """True while the sent command has not settled on the target."""
        return self._target is not None and not self._limiter.settled(self._target)

    def set_measured(self, names: Sequence[str], positions: Sequence[float], now: float) -> None:
        """Record a measured joint state; joints not commanded here, and non-finite values,
        are ignored. Raises ValueError (recording nothing) when the lengths differ."""
        if len(names) != len(positions):
            raise ValueError(f"joint state has {len(names)} names but {len(positions)} positions")
        index = {name: i for i, name in enumerate(self.joint_names)}
        for name, value in zip(names, positions, strict=True):
            i = index.get(name)
            if i is not None and math.isfinite(value):
                self._measured[i] = value
        self._measured_time = now

    def measured_age(self, now: float) -> float | None:
        return None if self._measured_time is None else now - self._measured_time

    def tracking_error(self) -> float | None:
        """Largest |measured - commanded| over the arm joints (rad), or None if unknown."""
        command = self.command
        if command is None or np.isnan(self._measured[:-1]).any():
            return None
        return float(np.max(np.abs(self._measured[:-1] - command[:-1])))

    # --- commands ---------------------------------------------------------------------------

    def check_command(self, command: EECommand, now: float) -> tuple[Issue, str] | None:
        """Why `command` is not usable, or None."""
        cfg = self.config
        if command.frame_id != cfg.base_frame:
            return Issue.WRONG_FRAME, f"frame_id {command.frame_id!r} is not {cfg.base_frame!r}"
        values = np.concatenate([command.position, command.orientation, [command.gripper]])
        if values.shape != (8,) or not np.all(np.isfinite(values)):
            return Issue.INVALID, f"non-finite or misshaped pose/gripper {values.tolist()}"
        norm = float(np.linalg.norm(command.orientation))
        if abs(norm - 1.0) > cfg.quaternion_tolerance:
            return (
                Issue.INVALID,
                f"quaternion norm {norm:.4f} is not 1 (tolerance {cfg.quaternion_tolerance})",
            )
        age = now - command.stamp
        if cfg.max_command_age > 0.0 and abs(age) > cfg.max_command_age:
            when = "old" if age > 0 else "in the future"
            return Issue.STALE, f"stamp {abs(age):.3f} s {when} > max_command_age {cfg.max_command_age} s"
        return None

    def submit(self, command: EECommand, now: float) -> Submission:
        """Check and solve one command; on success it becomes the target of `step`."""
        problem = self.check_command(command, now)
        if problem is not None:
            return Submission(Outcome.REJECTED, *problem)
        synced = self._needs_sync(now)
        if synced:
            problem = self._sync_to_measured(now)
            if problem is not None:
                return Submission(Outcome.REJECTED, *problem)
        target = np.eye(4)
        target[:3, :3] = quaternion_matrix(command.orientation / np.linalg.norm(command.orientation))
        target[:3, 3] = command.position
        seed = self._limiter.position[:-1]  # (n,) the arm part of the last command
        t0 = time.perf_counter()
        result = self.kinematics.ik(target, seed)
        solve_time = time.perf_counter() - t0
        details = {
            "position_error": result.position_error,
            "orientation_error": result.orientation_error,
            "solve_time": solve_time,
            "synced": synced,
        }
        if not self._acceptable(result):
            reason = (
                f"unreachable: best IK attempt {result.position_error * 1e3:.1f} mm, "
                f"{result.orientation_error:.3f} rad off after {result.restarts} restarts"
            )
            return Submission(Outcome.HELD, Issue.UNREACHABLE, reason, **details)
        lower, upper = self.limits.lower[-1], self.limits.upper[-1]
        self._target = np.append(result.q, min(max(command.gripper, lower), upper))
        return Submission(Outcome.TRACKING, **details)

    def step(self, now: float) -> np.ndarray | None:
        """The next joint command (n+1,) towards the target, or None before the first command."""
        if self._target is None:
            return None
        elapsed = math.inf if self._last_step is None else now - self._last_step
        if elapsed <= 0.0:
            return self._limiter.position  # no time has passed: no motion allowed
        if elapsed > self.config.max_step_period:
            # At start or after a pause the joints rest at the last command and the period
            # of the coming steps is unknown: this step only starts the clock.
            self._limiter.stop()
            self._last_step = self._last_activity = now
            return self._limiter.position
        q = self._limiter.step(self._target, elapsed)
        self._last_step = self._last_activity = now
        return q

    def _acceptable(self, result: IKResult) -> bool:
        cfg = self.config
        return result.success or (
            result.position_error <= cfg.accept_position_tolerance
            and result.orientation_error <= cfg.accept_orientation_tolerance
        )

    def _needs_sync(self, now: float) -> bool:
        if not self._limiter.initialized:
            return True
        resync = self.config.resync_after
        return resync > 0.0 and self._last_activity is not None and now - self._last_activity > resync

    def _sync_to_measured(self, now: float) -> tuple[Issue, str] | None:
        missing = [n for n, v in zip(self.joint_names, self._measured, strict=True) if math.isnan(v)]
        if missing:
            return Issue.NO_STATE, f"no measured position yet for {', '.join(missing)}"
        self._limiter.reset(self._measured)
        self._target = self._limiter.position
        self._last_step = None
        self._last_activity = now
        return None
