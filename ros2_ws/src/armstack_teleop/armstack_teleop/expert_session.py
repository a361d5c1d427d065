"""Unattended demonstrations in the simulator: the scripted expert as a teleop source.

`ExpertSession` runs armstack_sim's `PickPlaceExpert` once per episode and drives the episode
controller like an operator would: reset the scene (the node calls `sim/reset`), wait until
the arm and the objects are observed after the reset, start a take, stream the expert's
ee targets, and when the expert is done save the take if every cube rests in the bin
(otherwise discard it and redo the episode on the next scene), then reset again; the
controller ends the session once `target_episodes` takes are saved. The expert sees what the
graph measures: object poses from `sim/ground_truth` and the ee pose by FK of `joint_states`
(or the simulator's `sim/ee_pose`), so its commands take the same path to the arm as a
person's (teleop -> IK -> driver) and the recorder records them the same way.

A take that the operator ends from outside (key, service) is followed by a reset too.

With `start_at_miss` the expert first misses one cube (drawn per take) on purpose, unrecorded,
and the take starts once that grasp has closed beside the cube: it shows the way back from a
failed grasp (open, approach again, grasp) and the rest of the task, but not the deliberate
miss. Recorded, a miss is a command a policy learns to copy; what follows is what it lacks.

Times are float seconds of one clock (the node's ROS clock; object stamps come from it too).
Plain module: no rclpy.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from armstack_sim.expert import ExpertAction, ExpertConfig, ExpertObservation, PickPlaceExpert
from armstack_sim.expert import Phase as ExpertPhase
from armstack_sim.world import ObjectPose, inside_bin

from armstack_teleop.command_noise import CommandNoise, CommandNoiseConfig
from armstack_teleop.episode import EpisodeStatus, Event, State

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpertSessionConfig:
    """Scene facts the expert needs and the session's timing."""

    expert: ExpertConfig = field(default_factory=ExpertConfig)
    # The simulator's bin (armstack_sim.world.SimConfig): centre (x, y) on the table, floor
    # height, square inner opening and wall height, in base_link.
    bin_center: tuple[float, float] = (0.16, -0.27)
    bin_floor_height: float = 0.006  # m
    bin_inner_size: float = 0.13  # m
    bin_wall_height: float = 0.05  # m
    time_limit: float = 60.0  # s per take; beyond, the take is discarded
    # After sim/reset no command is sent this long: the IK node restarts from the measured
    # joints only after its resync_after (1 s) without commands, and the arm settles.
    settle_after_reset: float = 1.5  # s
    max_observation_age: float = 0.5  # s; older object poses or joint states hold the expert
    keep_failures: bool = False  # save takes that end with a cube outside the bin
    # Of the expert's deliberate misses (ExpertConfig.miss_rate) over the session; -1 draws one.
    seed: int = 0
    # Takes start after a deliberate miss of one cube, drawn per take (see the module doc).
    start_at_miss: bool = False
    # Offsets the executed command during takes (command_noise: DART); `action` stays clean.
    noise: CommandNoiseConfig = field(default_factory=CommandNoiseConfig)
    # s between attempts when sim/reset fails; short, as at start the service is often not yet
    # discovered, and an attempt costs nothing while it is missing.
    reset_retry_period: float = 0.5

    def __post_init__(self) -> None:
        if len(self.bin_center) != 2:
            raise ValueError(f"ExpertSessionConfig.bin_center must be (x, y), got {self.bin_center}")
        for name in ("bin_inner_size", "bin_wall_height", "time_limit", "max_observation_age",
                     "reset_retry_period"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ExpertSessionConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("bin_floor_height", "settle_after_reset"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"ExpertSessionConfig.{name} must be >= 0, got {getattr(self, name)}")
        phases = {p.value for p in ExpertPhase}
        if not set(self.noise.quiet_phases) <= phases:
            raise ValueError(f"ExpertSessionConfig.noise.quiet_phases "
                             f"{sorted(set(self.noise.quiet_phases) - phases)} are not expert "
                             f"phases ({', '.join(sorted(phases))})")
        if self.start_at_miss and not self.expert.miss_offset > 0.0:
            raise ValueError("ExpertSessionConfig.start_at_miss needs ExpertConfig.miss_offset > 0 "
                             "(a miss that aims at the cube is no miss)")


@dataclass(frozen=True)
class Observation:
    """What the graph measured, with the stamps (s) of its two sources."""

    ee_pose: np.ndarray  # (4, 4) ee_link in base_link
    gripper: float  # m, left_finger
    objects: Mapping[str, ObjectPose]
    objects_stamp: float
    state_stamp: float  # of the joint state (or true ee pose) behind ee_pose


class Phase(enum.Enum):
    NEED_RESET = "need_reset"
    RESETTING = "resetting"  # sim/reset called, no answer yet
    SETTLING = "settling"
    MISSING = "missing"  # start_at_miss: the unrecorded deliberate miss before the take
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ExpertStep:
    """One tick: an ee target to publish, an episode event to apply, whether to call sim/reset."""

    action: ExpertAction | None = None
    # The command to execute when it differs from `action` (the config's noise); the clean
    # `action` is then what a recording keeps as the label.
    executed: ExpertAction | None = None
    event: Event | None = None
    request_reset: bool = False
    note: str | None = None  # worth a log line


class ExpertSession:
    def __init__(self, config: ExpertSessionConfig) -> None:
        self.config = config
        self.phase = Phase.NEED_RESET
        self._expert: PickPlaceExpert | None = None
        self._retry_at = float("-inf")
        self._reset_at = 0.0
        self._take_started = 0.0
        self._missed = False  # start_at_miss: the deliberate miss has been commanded
        self._holding = False  # observations went stale during the take
        self.results: list[dict[str, bool]] = []  # per finished take: cube -> in the bin
        self._rng = np.random.default_rng(None if config.seed == -1 else config.seed)
        self._noise = CommandNoise(config.noise, config.seed) if config.noise.enabled else None

    @property
    def bin_floor_center(self) -> np.ndarray:
        """(3,)"""
        return np.array([*self.config.bin_center, self.config.bin_floor_height])

    def in_bin(self, obj: ObjectPose) -> bool:
        """Centre within the bin's opening and below its rim (as SimWorld.object_in_bin)."""
        return inside_bin(obj.position, self.config.bin_center, self.config.bin_inner_size,
                          self.config.bin_wall_height)

    def reset_done(self, now: float, ok: bool, message: str) -> str:
        """The answer of sim/reset; returns a line for the log."""
        if self.phase is not Phase.RESETTING:
            return f"late sim/reset answer ignored: {message}"
        if ok:
            self.phase, self._reset_at = Phase.SETTLING, now
            return f"scene reset: {message}"
        self.phase, self._retry_at = Phase.NEED_RESET, now + self.config.reset_retry_period
        return f"sim/reset failed ({message}); retrying in {self.config.reset_retry_period:g} s"

    def tick(self, now: float, status: EpisodeStatus, obs: Observation | None) -> ExpertStep:
        step = self._tick(now, status, obs)
        if self._noise is None or step.action is None or step.action.done:
            return step
        pose = step.action.ee_pose.copy()
        pose[:3, 3] += self._noise.offset(now, step.action.phase)
        return dataclasses.replace(step, executed=dataclasses.replace(step.action, ee_pose=pose))

    def _tick(self, now: float, status: EpisodeStatus, obs: Observation | None) -> ExpertStep:
        if status.state is State.FINISHED:
            self.phase, self._expert = Phase.STOPPED, None
            return ExpertStep()
        if status.state is State.IDLE and status.target_saved:
            return ExpertStep()  # the recorder's verdicts decide whether more takes are needed
        if self.phase is Phase.RUNNING and status.state is not State.RECORDING:
            self.phase, self._expert = Phase.NEED_RESET, None
            return ExpertStep(note="take ended from outside the expert: resetting the scene")
        if self.phase is Phase.NEED_RESET and now >= self._retry_at:
            self.phase = Phase.RESETTING
            return ExpertStep(request_reset=True)
        if self.phase is Phase.SETTLING and self._observed_after_reset(now, obs):
            assert obs is not None
            return self._begin(now, status, obs)
        if self.phase in (Phase.MISSING, Phase.RUNNING):
            return self._run(now, obs)
        return ExpertStep()

    def _observed_after_reset(self, now: float, obs: Observation | None) -> bool:
        if now < self._reset_at + self.config.settle_after_reset or obs is None or not obs.objects:
            return False
        return min(obs.objects_stamp, obs.state_stamp) > self._reset_at

    def _begin(self, now: float, status: EpisodeStatus, obs: Observation) -> ExpertStep:
        # A take an operator already started is adopted rather than restarted (and has no
        # unrecorded miss before it).
        idle = status.state is State.IDLE
        forced = (str(self._rng.choice(sorted(obs.objects)))
                  if self.config.start_at_miss and idle else None)
        self._expert = PickPlaceExpert(
            self.config.expert, self.bin_floor_center, self.config.bin_inner_size, sorted(obs.objects),
            rng=self._rng, forced_miss=forced,
        )
        self.phase = Phase.MISSING if forced else Phase.RUNNING
        self._take_started, self._holding, self._missed = now, False, False
        if self._noise is not None:
            self._noise.reset()
        action = self._expert.act(self._expert_observation(now, obs))
        note = f"expert: {len(obs.objects)} objects"
        if forced:
            return ExpertStep(action=action, note=f"{note}; missing {forced} before the take starts")
        return ExpertStep(action=action, event=Event.START if idle else None, note=note)

    def _run(self, now: float, obs: Observation | None) -> ExpertStep:
        assert self._expert is not None
        if now - self._take_started > self.config.time_limit:
            started = self.phase is Phase.RUNNING
            self.phase, self._expert = Phase.NEED_RESET, None
            return ExpertStep(event=Event.DISCARD if started else None,
                              note=f"expert: take exceeded {self.config.time_limit:g} s, discarded")
        if obs is None or now - min(obs.objects_stamp, obs.state_stamp) > self.config.max_observation_age:
            # Said once per stale spell, not at every tick.
            note = None if self._holding else "expert holds: object poses or joint states are stale"
            self._holding = True
            return ExpertStep(note=note)
        if self._holding:
            self._holding = False
            note = "expert resumes: observations are fresh again"
        else:
            note = None
        action = self._expert.act(self._expert_observation(now, obs))
        if self.phase is Phase.MISSING:
            return self._after_miss(action, note)
        if not action.done:
            return ExpertStep(action=action, note=note)
        in_bin = {name: self.in_bin(pose) for name, pose in obs.objects.items()}
        self.results.append(in_bin)
        success = all(in_bin.values())
        self.phase, self._expert = Phase.NEED_RESET, None
        missed = sorted(name for name, ok in in_bin.items() if not ok)
        if success or self.config.keep_failures:
            note = "expert done: all objects in the bin" if success else f"expert done, kept despite {missed}"
            return ExpertStep(action=action, event=Event.SAVE, note=note)
        where = ", ".join(f"{name} at ({', '.join(f'{v:.3f}' for v in obs.objects[name].position)})"
                          for name in missed)
        note = f"expert done but {missed} not in the bin ({where} m): discarded"
        return ExpertStep(action=action, event=Event.DISCARD, note=note)

    def _after_miss(self, action: ExpertAction, note: str | None) -> ExpertStep:
        """start_at_miss: the take starts with the first command after the deliberate miss."""
        if action.deliberate:
            self._missed = True
            return ExpertStep(action=action, note=note)
        if not self._missed and not action.done:
            return ExpertStep(action=action, note=note)
        if action.done:  # cannot happen (the forced miss is always retried); not a take
            self.phase, self._expert = Phase.NEED_RESET, None
            return ExpertStep(action=action, note="expert done before its deliberate miss")
        self.phase = Phase.RUNNING
        return ExpertStep(action=action, event=Event.START,
                          note=f"expert missed {action.target} on purpose: the take starts")

    @staticmethod
    def _expert_observation(now: float, obs: Observation) -> ExpertObservation:
        return ExpertObservation(time=now, ee_pose=obs.ee_pose, gripper=obs.gripper, objects=obs.objects)
