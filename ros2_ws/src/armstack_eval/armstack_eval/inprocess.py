"""Closed-loop evaluation of an exported chunk policy in the MuJoCo world, in one process.

It runs the same pieces the nodes wrap, without ROS between them: `SimWorld` physics, the
calibrated camera's RGB-D render at the camera rate, the detector (`OnnxDetector`) and the
localization with its tracker (`ObjectLocalizer`), both configured from config/perception.yaml,
the policy node's `ObservationAssembler`, the ONNX runner and one `ChunkBuffer`. Joint-space
actions are servo goals by joint name, as the driver writes them; end-effector actions go through
the IK node's `IKController` with config/ik.yaml (its solve, checks and motion limits). The goals
move the joints through the servos' velocity profiles (`ProfiledJoints`, config/robot/
dynamixel.yaml), as on the emulated bus. Without those two limits an arm follows a policy much
faster than it did in the demonstrations, and policies that work on the graph fail here.

What it leaves out is the graph's timing: inference is synchronous (simulated time waits for
it), so every chunk arrives with zero latency. That makes it a quick, repeatable way to compare
policies and chunk-buffer modes (about 5 s of wall time per 20 s episode here, against 25 s
through the graph); the figure that counts is the graph's (tools/evaluate_policy.py).

Success is the simulator's task: every cube rests in the bin. An episode ends when that has
held for `settle` s, or at `time_limit` s of simulated time.

With `start_at_miss` an episode measures recovery: before its clock starts, the scripted expert
(config/teleop.yaml's motion) drives the arm through the same IK and servos, misses one cube
(drawn with the scene's seed) on purpose and closes beside it; the policy takes over from there,
the gripper closed on nothing or on an edge, as after a grasp of its own that went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from armstack_camera.calibration import CameraModel
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import config_file, resolve_model, urdf_path
from armstack_common.robot_names import EE_ACTION_NAMES
from armstack_common.servo_config import load_default_servo_config
from armstack_common.transforms import matrix_to_quat_xyzw
from armstack_detector.node_config import DetectorNodeConfig
from armstack_detector.onnx_runner import OnnxDetector
from armstack_ik.controller import EECommand, IKController, Outcome
from armstack_ik.node_config import IK_NODE_PARAMS, ik_node_config
from armstack_localization.node_config import LocalizationNodeConfig
from armstack_localization.pipeline import ObjectLocalizer
from armstack_policy.actions import ActionLayout
from armstack_policy.chunk_buffer import MODES, ChunkBuffer, ChunkBufferConfig, StepStatus
from armstack_policy.observation import DetectedObject, ObservationAssembler, ObservationConfig
from armstack_policy.onnx_policy import OnnxPolicy
from armstack_sim.expert import ExpertConfig, PickPlaceExpert, observe
from armstack_sim.profiled_joints import ProfiledJoints
from armstack_sim.world import SimWorld

from armstack_eval.trace import EpisodeTrace

OBJECT_SOURCES = ("perception", "ground_truth")
DETECTOR_TOOL = "tools/train_detector.py"  # makes the detector model perception runs


@dataclass(frozen=True)
class InProcessEvalConfig:
    """One evaluation run; validated on construction (errors name the field)."""

    episodes: int = 100
    seed: int = 100_000  # first episode's scene seed (+1 per episode); recordings start low
    time_limit: float = 45.0  # simulated s per episode (the expert needs about 20)
    settle: float = 0.5  # s every cube must rest in the bin to end the episode early
    camera_fps: float = 30.0  # perception rate (config/perception.yaml's camera)
    objects: str = "perception"  # or ground_truth: the true cube centres, all present
    # Chunk buffer (config/policy.yaml's meaning)
    mode: str = "async_latency_compensated"
    inference_period: int = 2  # control steps between inferences (not receding_horizon)
    n_action_steps: int = 0  # receding_horizon: 0 = the card's
    ensemble_coeff: float = 0.01
    favour: str = "oldest"
    blend_steps: int = 5
    # Joint positions (simulator order) the arm is driven to before the episode clock starts;
    # empty: the simulator's home. The graph evaluation starts at the expert's rest pose
    # (armstack_eval.episodes.sim_start_pose), and so does tools/eval_policy_inprocess.py.
    start_positions: tuple[float, ...] = ()
    # Simulated s before the episode clock starts, while the arm reaches start_positions and
    # the camera and perception run, as they do on the graph between episodes: the first
    # observation then has the tracker's confirmed objects, not an empty scene.
    lead_in: float = 1.5
    # Start each episode after the expert's deliberate miss of one cube (see the module doc).
    start_at_miss: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"InProcessEvalConfig.{name} {message}, got {getattr(self, name)!r}")

        for name in ("episodes", "inference_period"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, "must be an int >= 1")
        for name in ("time_limit", "settle", "camera_fps", "lead_in"):
            if not getattr(self, name) > 0.0:
                fail(name, "must be > 0")
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in self.start_positions):
            fail("start_positions", "must be finite joint positions")
        if self.objects not in OBJECT_SOURCES:
            fail("objects", f"must be one of {OBJECT_SOURCES}")
        if self.mode not in MODES:
            fail("mode", f"must be one of {MODES}")
        if not isinstance(self.n_action_steps, int) or self.n_action_steps < 0:
            fail("n_action_steps", "must be an int >= 0")


@dataclass(frozen=True)
class EpisodeOutcome:
    seed: int
    success: bool
    in_bin: dict[str, bool]
    layout: dict[str, tuple[float, float]]  # each cube's x, y in base_link at the reset, m
    sim_time: float  # s
    time_to_success: float | None  # s, when every cube first rested in the bin
    inferences: int
    inference_ms_mean: float
    dry_steps: int  # control steps with no chunk covering them (the buffer held)
    ik_failures: int
    wall_s: float
    missed_before: str | None = None  # start_at_miss: the cube the expert missed

    def to_dict(self) -> dict:
        return asdict(self)


def node_params(config_name: str, node: str) -> dict:
    """A node's ros__parameters in config/<config_name> (the launch files' parameter files)."""
    raw = yaml.safe_load(config_file(config_name).read_text(encoding="utf-8"))
    return raw[f"/**/{node}"]["ros__parameters"]


def camera_frames(world: SimWorld, frames: int, fps: float) -> Iterator[int]:
    """Advance the world `frames` camera frames (1/fps s of physics each), the arm holding its
    targets; yields each frame's index once its physics is done (a perception lead-in)."""
    steps = max(1, round(1.0 / (fps * world.timestep)))
    for i in range(frames):
        world.step(steps)
        yield i


def detector_path(value: str) -> Path:
    """The detector model a user named (armstack_common.paths.resolve_model)."""
    return resolve_model(value, made_by=DETECTOR_TOOL)


class Perception:
    """RGB-D frame -> objects in base_link: the detector and localization nodes' logic."""

    def __init__(self, world: SimWorld, detector_model: Path) -> None:
        det_params = node_params("perception.yaml", "detector")
        loc_params = node_params("perception.yaml", "localization")
        det_cfg = DetectorNodeConfig.from_params({**det_params, "model_path": str(detector_model)})
        self.detector = OnnxDetector(det_cfg.detector_config(str(detector_model)))
        self.localizer = ObjectLocalizer(LocalizationNodeConfig.from_params(loc_params))
        cal = world.camera_intrinsics
        K = np.array([[cal.fx, 0.0, cal.cx], [0.0, cal.fy, cal.cy], [0.0, 0.0, 1.0]])
        self.camera = CameraModel(cal.width, cal.height, K, tuple(cal.distortion),
                                  frame_id=cal.frame_id)
        self.world = world

    def reset(self) -> None:
        """A new scene: forget the last one's tracks."""
        self.localizer = ObjectLocalizer(self.localizer.config)

    def objects(self) -> list[DetectedObject]:
        rgb, depth_m = self.world.render_rgbd()
        detections, _ = self.detector.detect(rgb)
        names = self.detector.class_names
        labels = [names.get(int(c), str(int(c))) for c in detections.class_ids]
        depth_mm = np.clip(np.nan_to_num(depth_m) * 1000.0, 0, 65535).astype(np.uint16)
        placed, _ = self.localizer.process(detections.boxes, detections.scores, labels, depth_mm,
                                           self.camera, self.world.camera_pose())
        return [DetectedObject(p.label, p.score, tuple(p.position)) for p in placed]


_MISS_TIMEOUT = 60.0  # simulated s; the expert's miss comes after at most two picks


def teleop_expert_config() -> ExpertConfig:
    """The scripted expert as the teleop node runs it (config/teleop.yaml), so its moves here
    are the ones recorded on the graph."""
    # Imported here: only the recovery evaluation needs the teleop package.
    from armstack_teleop.node_config import default_values, teleop_config

    session = teleop_config(default_values() | node_params("teleop.yaml", "teleop")
                            | {"source": "expert"}).expert
    assert session is not None
    return session.expert


def ground_truth_objects(world: SimWorld) -> list[DetectedObject]:
    return [DetectedObject(p.name, 1.0, tuple(p.position)) for p in world.object_poses()]


class JointTargets:
    """A policy action -> the servos' goal positions for every simulator joint, by the graph's
    logic: joint actions by joint name (the driver's path); end-effector ones through the IK
    node's `IKController` with config/ik.yaml's parameters (its solve, the checks, and the motion
    limits on the commands), seeded with the measured joints. Stateful, like the node:
    `reset` at each episode start with the measured joints."""

    def __init__(self, layout: ActionLayout, joint_names: tuple[str, ...]) -> None:
        self.layout, self.joint_names = layout, joint_names
        if layout.kind == "joint":
            missing = [n for n in layout.names if n not in joint_names]
            if missing:
                raise ValueError(f"actions {missing} are not joints of the simulator "
                                 f"({list(joint_names)})")
            self._index = [joint_names.index(n) for n in layout.names]
            self.controller = None
        else:
            ik_node = ik_node_config({**{spec.name: spec.default for spec in IK_NODE_PARAMS},
                                      **node_params("ik.yaml", "ik")})
            self.controller = IKController(urdf_path(), ik_node.ik, ik_node.controller)
            missing = [n for n in self.controller.joint_names if n not in joint_names]
            if missing:
                raise ValueError(f"the IK node's joints {missing} are not joints of the "
                                 f"simulator ({list(joint_names)})")
            self._index = [joint_names.index(n) for n in self.controller.joint_names]
        self._targets = np.zeros(len(joint_names))

    def reset(self, measured: np.ndarray) -> None:
        """A new episode with the arm at `measured` (all simulator joints): targets hold it."""
        np.copyto(self._targets, measured)
        if self.controller is not None:
            self.controller.reset()  # no target, limiter state or clock

    def __call__(self, action: np.ndarray, measured: np.ndarray,
                 now: float) -> tuple[np.ndarray, bool]:
        """Goal positions (all joints) after `action` at time `now` (s), and whether it was
        used (False: an end-effector target the IK could not reach or refused; the arm keeps
        moving to the last good one)."""
        if self.controller is None:
            self._targets[self._index] = action
            return self._targets.copy(), True
        pose = self.layout.ee_pose(action)
        self.controller.set_measured(self.joint_names, measured, now)
        outcome = self.controller.submit(EECommand(
            pose.position, pose.quaternion, pose.gripper, now,
            self.controller.config.base_frame), now).outcome
        command = self.controller.step(now)
        if command is not None:
            self._targets[self._index] = command
        return self._targets.copy(), outcome is Outcome.TRACKING


class InProcessEvaluator:
    """Runs episodes of one policy in one world (see the module doc)."""

    def __init__(self, policy: OnnxPolicy, config: InProcessEvalConfig,
                 detector_model: Path | None = None, world: SimWorld | None = None) -> None:
        self.policy, self.config = policy, config
        card = policy.card
        self.world = world or SimWorld()
        self.perception = (Perception(self.world, detector_model)
                           if config.objects == "perception" and card.object_classes else None)
        if config.objects == "perception" and card.object_classes and detector_model is None:
            raise ValueError("InProcessEvalConfig.objects 'perception' needs a detector model")
        missing = [n for n in card.state_names if n not in self.world.joint_names]
        if missing:
            raise ValueError(f"the card's state names {missing} are not joints of the simulator "
                             f"({list(self.world.joint_names)})")
        if config.start_positions and len(config.start_positions) != len(self.world.joint_names):
            raise ValueError(f"InProcessEvalConfig.start_positions needs one value per simulator "
                             f"joint ({list(self.world.joint_names)}), "
                             f"got {len(config.start_positions)}")
        self._state_index = [self.world.joint_names.index(n) for n in card.state_names]
        self.joint_targets = JointTargets(ActionLayout(card.action_kind, card.action_names),
                                          self.world.joint_names)
        self.servos = ProfiledJoints(load_default_servo_config())
        self._expert_ik: JointTargets | None = None  # start_at_miss, made when first needed
        # Ages are measured on simulated time, which waits for inference: the node's limits.
        self.observation_config = ObservationConfig.for_card(card)
        n = config.n_action_steps or card.n_action_steps
        self.buffer_config = ChunkBufferConfig(
            mode=config.mode, chunk_size=card.chunk_size, action_dim=card.action_dim, dt=card.dt,
            max_chunks=max(2, -(-card.chunk_size // config.inference_period) + 1),
            ensemble_coeff=config.ensemble_coeff, favour=config.favour,
            n_action_steps=min(n, card.chunk_size), blend_steps=config.blend_steps)

    def close(self) -> None:
        self.world.close()

    def run(self, index: int, trace: EpisodeTrace | None = None) -> EpisodeOutcome:
        """Episode `index` (scene seed config.seed + index); `trace`, if given, gets every
        control step (armstack_eval.trace)."""
        cfg, card, world = self.config, self.policy.card, self.world
        seed = cfg.seed + index
        started = time.perf_counter()
        world.reset(seed)
        layout = {o.name: (round(float(o.position[0]), 4), round(float(o.position[1]), 4))
                  for o in world.object_poses()}
        self.policy.reset()
        if self.perception is not None:
            self.perception.reset()
        assembler = ObservationAssembler(self.observation_config)
        buffer = ChunkBuffer(self.buffer_config)
        if cfg.start_positions:
            world.set_joint_targets(np.array(cfg.start_positions))
        for _ in camera_frames(world, max(1, round(cfg.lead_in * cfg.camera_fps)), cfg.camera_fps):
            if self.perception is not None:
                self.perception.objects()
        self.servos.reset(world.joint_positions())
        missed = self._miss_on_purpose(seed) if cfg.start_at_miss else None
        self.joint_targets.reset(world.joint_positions())
        times: list[float] = []
        step, dry, ik_failures, rested = 0, 0, 0, 0.0
        t_success, next_frame = None, 0.0
        period = self.buffer_config.n_action_steps if cfg.mode == "receding_horizon" \
            else cfg.inference_period
        steps = round(cfg.time_limit / card.dt)
        while step < steps and rested < cfg.settle:
            now = step * card.dt
            assembler.add_joint_state(now, card.state_names,
                                      world.joint_positions()[self._state_index])
            if card.object_classes and now >= next_frame - 1e-9:
                objects = (self.perception.objects() if self.perception is not None
                           else ground_truth_objects(world))
                assembler.add_objects(now, objects)
                next_frame += 1.0 / cfg.camera_fps
            if step % period == 0:
                assembly = assembler.assemble(now)
                if assembly.ready:
                    t0 = time.perf_counter()
                    chunk = self.policy.predict_chunk(assembly.features)
                    times.append(time.perf_counter() - t0)
                    buffer.add_chunk(chunk, assembly.stamp)
            out = buffer.action_at(now)
            if out.status in (StepStatus.DRY, StepStatus.EMPTY):
                dry += 1
            if out.action is not None:
                goals, ok = self.joint_targets(out.action, world.joint_positions(), now)
                ik_failures += not ok
                self.servos.set_goals(goals)
            if trace is not None:
                # The gripper is the last action element of both ee and joint policies.
                trace.add_world(now, world,
                                float(out.action[-1]) if out.action is not None else float("nan"))
            self.servos.drive(world, card.dt)
            step += 1
            if all(world.object_in_bin(n) for n in world.object_names):
                t_success = step * card.dt if t_success is None else t_success
                rested += card.dt
            else:
                t_success, rested = None, 0.0
        in_bin = {n: world.object_in_bin(n) for n in world.object_names}
        return EpisodeOutcome(
            seed=seed, success=all(in_bin.values()), in_bin=in_bin, layout=layout,
            sim_time=step * card.dt,
            time_to_success=t_success, inferences=len(times),
            inference_ms_mean=1e3 * float(np.mean(times)) if times else float("nan"),
            dry_steps=dry, ik_failures=ik_failures, wall_s=time.perf_counter() - started,
            missed_before=missed)

    def _miss_on_purpose(self, seed: int) -> str:
        """start_at_miss: the expert drives the arm (IK, servos) until its deliberate miss of a
        cube drawn with `seed` has closed, perception running at the camera rate; returns the
        cube. Raises RuntimeError if no miss comes within _MISS_TIMEOUT."""
        world, dt = self.world, self.policy.card.dt
        if self._expert_ik is None:
            self._expert_ik = JointTargets(ActionLayout("ee", EE_ACTION_NAMES), world.joint_names)
            self._kinematics = ArmKinematics(urdf_path())
            self._expert_config = teleop_expert_config()
        names = sorted(world.object_names)
        target = names[int(np.random.default_rng(seed).integers(len(names)))]
        expert = PickPlaceExpert(self._expert_config, world.bin_center,
                                 world.config.bin_inner_size, names, forced_miss=target)
        self._expert_ik.reset(world.joint_positions())
        t, next_frame, missing = 0.0, 0.0, False
        while True:
            action = expert.act(observe(world, self._kinematics))
            if missing and not action.deliberate:
                return target
            missing = missing or action.deliberate
            if t > _MISS_TIMEOUT or action.done:
                raise RuntimeError(f"seed {seed}: the expert's deliberate miss of {target} did "
                                   f"not come within {_MISS_TIMEOUT:g} s")
            command = np.concatenate((action.ee_pose[:3, 3],
                                      matrix_to_quat_xyzw(action.ee_pose[:3, :3]),
                                      [action.gripper]))
            goals, _ = self._expert_ik(command, world.joint_positions(), t)
            self.servos.set_goals(goals)
            if self.perception is not None and t >= next_frame - 1e-9:
                self.perception.objects()  # the tracker follows the scene as on the graph
                next_frame += 1.0 / self.config.camera_fps
            self.servos.drive(world, dt)
            t += dt


def summarize(outcomes: list[EpisodeOutcome], config: InProcessEvalConfig,
              buffer: ChunkBufferConfig) -> dict:
    """The run's figures, its config and `buffer`, the chunk buffer as it played the chunks."""
    n = len(outcomes)
    wins = [o for o in outcomes if o.success]
    ms = np.array([o.inference_ms_mean for o in outcomes if o.inferences])
    return {
        "episodes": n, "successes": len(wins), "success_rate": len(wins) / n if n else 0.0,
        "time_to_success_median_s": (float(np.median([o.time_to_success for o in wins]))
                                     if wins else None),
        "cubes_in_bin_mean": float(np.mean([sum(o.in_bin.values()) for o in outcomes])),
        "dry_steps_mean": float(np.mean([o.dry_steps for o in outcomes])),
        "inference_ms_mean": float(ms.mean()) if ms.size else None,
        "config": asdict(config),
        "chunk_buffer": asdict(buffer),
        "note": "in-process MuJoCo: synchronous inference (zero latency), the nodes' "
                "perception, observation and chunk-buffer logic, no ROS graph",
    }
