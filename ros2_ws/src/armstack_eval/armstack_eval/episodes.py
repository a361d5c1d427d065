"""The episode sequence of an evaluation. Plain module: the ROS side is behind `GraphView`.

Per episode, with the policy as controller: policy/stop, sim/reset (a new random scene, seed +1),
wait for the simulator's task status of the new scene, command the start pose on joint_command
while the arm settles (the reset puts the simulated arm at home, but the driver still holds the
goal of the last episode's end and would pull it back there: every episode must start from the
same pose, as a real-robot evaluation resets the arm), longer than the IK node's resync time so
it restarts from the measured joints; policy/reset, policy/start; then wait until the simulator
reports every object in the bin, or the timeout; policy/stop.

With an instruction template (a VLA), each episode names one cube of the new scene, chosen by
the scene's seed: the instruction ("put the red cube in the bin") goes out on policy/instruction
right after the reset, while the arm settles, and the episode succeeds when that cube is in the
bin and no other is.

With the scripted expert (teleop source "expert") the expert resets the scene and starts each
take itself, so the runner follows `teleop/episode`: an episode runs from the start of a take
to its end (the expert saves or discards it), or to the timeout (the runner discards it).
Either way success and its time come from `sim/task_status`, the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from armstack_eval.episode import EpisodeLog, EpisodeResult, Traces, summarize
from armstack_eval.graph_launch import CONTROLLERS
from armstack_eval.metrics import COMMAND, OBJECTS

logger = logging.getLogger(__name__)

POLL = 0.05  # s between looks at the graph's state while waiting
START_POSE_PERIOD = 0.02  # s between start-pose commands (the driver's command watchdog is 0.5 s)


@dataclass(frozen=True)
class TaskSnapshot:
    """The latest sim/task_status."""

    scene: int  # the simulator's episode index
    seed: int
    in_bin: dict[str, bool]
    success: bool
    sim_time: float  # s since the scene's reset
    stamp: float  # wall time of the physics state


@dataclass(frozen=True)
class TeleopSnapshot:
    """The latest teleop/episode (armstack_interfaces/EpisodeStatus)."""

    state: str  # idle | recording | finished
    take: int
    take_start: float  # s, 0 when unknown


class GraphView(Protocol):
    """What the sequence needs of the running graph (the runner node implements it)."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def alive(self) -> bool: ...
    def call(self, service: str, timeout: float) -> tuple[bool, str]: ...
    def task_status(self) -> TaskSnapshot | None: ...
    def teleop_status(self) -> TeleopSnapshot | None: ...
    def driver_faulted(self) -> bool: ...
    def joint_positions(self, names: tuple[str, ...]) -> tuple[float, ...] | None: ...
    def command_joints(self, names: tuple[str, ...], positions: tuple[float, ...]) -> None: ...
    def instruct(self, text: str) -> None: ...
    def episode_started(self, index: int, seed: int | None) -> None: ...
    def episode_ended(self) -> None: ...


def sim_start_pose(positions: tuple[float, ...] | None = None) -> dict[str, tuple]:
    """RunnerConfig fields for starting every episode at `positions` of the simulator's joints
    (default: the scripted expert's rest pose, where the demonstrations it records start, so a
    policy trained on them starts where it learnt to)."""
    from armstack_common.kinematics import ArmKinematics  # pinocchio, MuJoCo: only when asked
    from armstack_common.paths import urdf_path
    from armstack_sim.expert import ExpertConfig, rest_joint_positions
    from armstack_sim.world import ACTUATED_JOINTS, SimConfig

    if positions is None:
        positions = tuple(float(v) for v in rest_joint_positions(
            ExpertConfig(), ArmKinematics(urdf_path()), SimConfig().home_q))
    if len(positions) != len(ACTUATED_JOINTS):
        raise ValueError(f"a start pose needs {len(ACTUATED_JOINTS)} values "
                         f"({', '.join(ACTUATED_JOINTS)}), got {len(positions)}")
    return {"start_joints": tuple(ACTUATED_JOINTS), "start_positions": tuple(positions)}


def start_pose_arg(text: str) -> tuple[float, ...]:
    """argparse type of a --start-pose: comma-separated joint positions."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def named_cube(objects: list[str], seed: int | None) -> str:
    """The object an instructed episode names: one of the scene's, drawn with its seed."""
    return random.Random(seed).choice(sorted(objects))


def instruction_for(template: str, target: str) -> str:
    """template with {color} replaced by the object's colour word ("red_cube" -> "red")."""
    return template.format(color=target.split("_")[0])


class RunnerError(RuntimeError):
    """The graph did not do what an episode needs (a service missing, no scene reset)."""


@dataclass(frozen=True)
class RunnerConfig:
    controller: str = "policy"  # one of graph_launch.CONTROLLERS
    episodes: int = 10
    timeout: float = 60.0  # s per episode, from the controller's start
    settle: float = 1.5  # s after sim/reset before the policy starts, at least
    # Joint positions commanded while settling (the simulator's home pose); empty: none. The
    # policy starts once the measured joints are within start_tolerance of them (rad; m for
    # the gripper): after a success the arm is over the bin, further than `settle` lets the
    # servos' motion profiles bring it back, and a policy started there is off its data.
    start_joints: tuple[str, ...] = ()
    start_positions: tuple[float, ...] = ()
    start_tolerance: float = 0.02
    service_timeout: float = 10.0  # s per service call (discovery included)
    start_timeout: float = 30.0  # s for a scene reset to show, or for the expert's next take
    # The policy controller publishes on ee_command; a joint-space policy on joint_command.
    command_topic: str = COMMAND
    # What the controller's commands are computed from, for its latency: perception's objects,
    # or the camera frame itself (the expert's ground truth and image policies keep its stamp).
    controller_input: str = OBJECTS
    # Policy episodes name one cube in an instruction ({color}: its colour word), for a VLA;
    # success is then that cube in the bin and no other. Empty: every cube in the bin.
    instruction_template: str = ""

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"RunnerConfig.controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if self.episodes < 1:
            raise ValueError(f"RunnerConfig.episodes must be >= 1, got {self.episodes}")
        for name in ("timeout", "service_timeout", "start_timeout", "start_tolerance"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"RunnerConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.settle < 0.0:
            raise ValueError(f"RunnerConfig.settle must be >= 0, got {self.settle}")
        if self.instruction_template and (self.controller != "policy"
                                          or "{color}" not in self.instruction_template):
            raise ValueError("RunnerConfig.instruction_template needs the policy controller and a "
                             f"{{color}} field, got {self.instruction_template!r} with "
                             f"{self.controller!r}")
        if len(self.start_joints) != len(self.start_positions):
            raise ValueError(f"RunnerConfig.start_positions must give one value per start_joints "
                             f"name, got {len(self.start_positions)} for {len(self.start_joints)}")


class EpisodeSequence:
    def __init__(self, graph: GraphView, log: EpisodeLog, cfg: RunnerConfig,
                 progress: Callable[[str], None] = print) -> None:
        self.graph, self.log, self.cfg, self.progress = graph, log, cfg, progress
        self._last_take = 0
        self._target: str | None = None  # the cube this episode's instruction names
        self._instruction: str | None = None
        # Finished episodes, kept here so an interrupted run can still be reported.
        self.results: list[EpisodeResult] = []
        self.traces: list[Traces] = []

    def run(self) -> tuple[list[EpisodeResult], list[Traces]]:
        """Run the episodes; stops early (with what it has) if the graph dies."""
        try:
            for index in range(self.cfg.episodes):
                if not self.graph.alive():
                    self.progress("the graph stopped: no further episodes")
                    break
                result, trace = self._episode(index)
                self.results.append(result)
                self.traces.append(trace)
        finally:
            if self.cfg.controller == "expert" and self.graph.alive():
                self.graph.call("teleop/end_session", self.cfg.service_timeout)
        return self.results, self.traces

    # ---------------------------------------------------------------- one episode
    def _episode(self, index: int) -> tuple[EpisodeResult, Traces]:
        label = f"episode {index + 1}/{self.cfg.episodes}"
        if self.cfg.controller == "policy":
            started, scene = self._begin_policy()
        else:
            started, scene = self._begin_expert()
        status = self.graph.task_status()
        seed = status.seed if status is not None and status.scene == scene else None
        self.log.open(started, self.cfg.command_topic)
        self.graph.episode_started(index, seed)
        said = f": {self._instruction!r}" if self._instruction else ""
        self.progress(f"{label}: started (scene {scene}, seed {seed}){said}")
        reason, t_success, last = "graph_failed", None, None
        try:
            reason, t_success, last = self._wait_end(scene, started, label)
        finally:
            ended = self.graph.now()
            self._stop(reason)
            streams = self.log.close()
            self.graph.episode_ended()
        measured, trace = summarize(streams, started, self.cfg.controller_input)
        result = EpisodeResult(
            index=index, controller=self.cfg.controller, seed=seed, scene=scene,
            success=t_success is not None, end_reason=reason, duration_s=ended - started,
            time_to_success_s=t_success, in_bin=dict(last.in_bin) if last else {},
            sim_time_s=last.sim_time if last else None, instruction=self._instruction,
            target=self._target, **measured)
        outcome = f"success in {t_success:.1f} s" if result.success else f"failed ({reason})"
        self.progress(f"{label}: {outcome}; in the bin: "
                      f"{sum(result.in_bin.values())}/{len(result.in_bin)}")
        if self.graph.driver_faulted():
            ok, message = self.graph.call("driver/enable", self.cfg.service_timeout)
            self.progress(f"{label}: the driver had stopped on a fault; driver/enable: {message}")
            if not ok:
                logger.error("driver/enable failed: %s", message)
        return result, trace

    def _require(self, service: str) -> str:
        ok, message = self.graph.call(service, self.cfg.service_timeout)
        if not ok:
            raise RunnerError(f"{service} failed: {message}")
        return message

    def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = self.graph.now() + timeout
        while not predicate():
            if not self.graph.alive():
                raise RunnerError(f"the graph stopped while waiting for {what}")
            if self.graph.now() > deadline:
                raise RunnerError(f"timed out after {timeout:g} s waiting for {what}")
            self.graph.sleep(POLL)

    def _begin_policy(self) -> tuple[float, int]:
        self._require("policy/stop")
        self._wait_for(lambda: self.graph.task_status() is not None, self.cfg.start_timeout, "sim/task_status")
        before = self.graph.task_status().scene
        self._require("sim/reset")
        self._wait_for(lambda: self.graph.task_status().scene > before, self.cfg.start_timeout,
                       "the new scene on sim/task_status")
        if self.cfg.instruction_template:
            status = self.graph.task_status()
            self._target = named_cube(list(status.in_bin), status.seed)
            self._instruction = instruction_for(self.cfg.instruction_template, self._target)
            self.graph.instruct(self._instruction)  # arrives while the arm settles
        settled = self.graph.now() + self.cfg.settle
        deadline = settled + self.cfg.start_timeout
        while (off_pose := self._start_pose_offsets()) or self.graph.now() < settled:
            if self.graph.now() > deadline:
                raise RunnerError(f"the arm did not reach the start pose within "
                                  f"{self.cfg.settle + self.cfg.start_timeout:g} s of sim/reset: "
                                  f"{off_pose}")
            if self.cfg.start_joints:
                self.graph.command_joints(self.cfg.start_joints, self.cfg.start_positions)
            self.graph.sleep(START_POSE_PERIOD)
        self._require("policy/reset")
        self._require("policy/start")
        return self.graph.now(), self.graph.task_status().scene

    def _start_pose_offsets(self) -> str:
        """The start joints further than start_tolerance from the start pose ("": none)."""
        if not self.cfg.start_joints:
            return ""
        measured = self.graph.joint_positions(self.cfg.start_joints)
        if measured is None:
            return "no joint_states with every start joint"
        return ", ".join(f"{n} {m - p:+.3f}" for n, m, p in zip(
            self.cfg.start_joints, measured, self.cfg.start_positions, strict=True)
            if abs(m - p) > self.cfg.start_tolerance)

    def _begin_expert(self) -> tuple[float, int]:
        def new_take() -> bool:
            teleop = self.graph.teleop_status()
            return teleop is not None and teleop.state == "recording" and teleop.take > self._last_take

        self._wait_for(new_take, self.cfg.start_timeout, "the expert's next take on teleop/episode")
        teleop = self.graph.teleop_status()
        self._last_take = teleop.take
        started = teleop.take_start if teleop.take_start > 0 else self.graph.now()
        status = self.graph.task_status()
        if status is None:
            raise RunnerError("no sim/task_status from the simulator")
        return started, status.scene

    def _wait_end(self, scene: int, started: float, label: str) -> tuple[str, float | None, TaskSnapshot | None]:
        t_success, last, shown = None, None, -1
        while True:
            status = self.graph.task_status()
            if status is not None and status.scene == scene:
                last = status
                placed = sum(status.in_bin.values())
                if placed != shown:
                    shown = placed
                    self.progress(f"{label}: {placed}/{len(status.in_bin)} in the bin at "
                                  f"{max(status.stamp - started, 0.0):.1f} s")
                if self._solved(status) and t_success is None:
                    t_success = max(status.stamp - started, 0.0)
                    if self.cfg.controller == "policy":
                        return "success", t_success, last
            if self.cfg.controller == "expert":
                teleop = self.graph.teleop_status()
                if teleop is not None and (teleop.state != "recording" or teleop.take != self._last_take):
                    return ("success" if t_success is not None else "controller_finished"), t_success, last
            if not self.graph.alive():
                return "graph_failed", t_success, last
            if self.graph.now() - started > self.cfg.timeout:
                return "timeout", t_success, last
            self.graph.sleep(POLL)

    def _solved(self, status: TaskSnapshot) -> bool:
        """Every cube in the bin; with a named cube, that one and no other."""
        if self._target is None:
            return status.success
        return status.in_bin.get(self._target, False) and not any(
            placed for name, placed in status.in_bin.items() if name != self._target)

    def _stop(self, reason: str) -> None:
        if self.cfg.controller == "policy":
            ok, message = self.graph.call("policy/stop", self.cfg.service_timeout)
            if not ok:
                logger.error("policy/stop failed: %s", message)
        elif reason == "timeout":
            # The expert's take is still running: end it (it resets for the next one).
            self.graph.call("teleop/discard_episode", self.cfg.service_timeout)
