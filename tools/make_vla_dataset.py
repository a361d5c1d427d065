#!/usr/bin/env python3
"""Language-conditioned pick-and-place demonstrations from the simulator, as a LeRobot v3.0
dataset written by the recorder's writer (the loading path the recorder's datasets take).

Each episode resets the MuJoCo world (all cubes at random poses), picks one cube at random,
phrases an instruction naming its colour ("put the red cube in the bin", or one of the other
templates) and lets the scripted expert move only that cube into the bin. Frames are sampled
at --fps as the recorder samples the graph: observation.state = measured joints,
observation.images.<camera> = the calibrated camera's frame, observation.environment_state =
the true cube centres, or with `--objects perception` the cubes as the perception stack
localizes them in that frame (the detector and localization nodes' logic on the rendered RGB-D
frame, after a lead-in that lets the tracker confirm them, as the recorder records the
localization's output: a cube in the gripper is then often not seen). Perception costs a
detector run per frame: ~10x the time per episode on a 2-core CPU. action = the expert's
ee_command (x, y, z, qx, qy, qz, qw, gripper; qw >= 0), task = the instruction. Only episodes
where the named cube ends in the bin and no other cube does are kept.

What the policy sees and does here is what it will see and do in the graph:
- The expert's commands go through the IK node's controller and the servos' motion profiles
  (armstack_eval.inprocess.JointTargets, armstack_sim.ProfiledJoints), as in the graph and in
  tools/eval_vla_inprocess.py. Commanding the simulator's joints directly gives an arm that
  tracks faster than the servos let it, and a policy trained on it stalls in states it never
  saw.
- Frames are stored at the camera's resolution (default) and shrunk at training time, as the
  policy node shrinks live frames. Video keeps colour at half resolution (yuv420p): stored at
  the network's 96x128, the few-pixel cubes' colours smear (per-pixel error against the live
  frame: p99 above 0.05) and a policy trained on them fails on live frames; stored at the
  camera's size and then shrunk, p99 below 0.03 and max below 0.25. Both bounds are checked by
  test_vla_tools.py::test_stored_frames_match_live_frames_after_decoding.

The expert holds still while the gripper closes (close_time) and opens (open_time), and grasps
with the finger axis of `--grasp-yaw`: by default the recording sessions' settings
(config/teleop.yaml); the gripper servo's profile needs those times.

    python tools/make_vla_dataset.py --out ~/armstack_data/vla_sim --episodes 200 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_common", "armstack_sim", "armstack_recorder", "armstack_eval",
             "armstack_policy", "armstack_ik"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

import cv2  # noqa: E402
from armstack_common.kinematics import ArmKinematics  # noqa: E402
from armstack_common.paths import urdf_path  # noqa: E402
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES  # noqa: E402
from armstack_common.servo_config import load_default_servo_config  # noqa: E402
from armstack_common.transforms import matrix_to_quat_xyzw  # noqa: E402
from armstack_eval.inprocess import (  # noqa: E402
    OBJECT_SOURCES,
    JointTargets,
    Perception,
    camera_frames,
    detector_path,
    ground_truth_objects,
    node_params,
)
from armstack_policy.actions import ActionLayout  # noqa: E402
from armstack_recorder.lerobot_dataset import (  # noqa: E402
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.observation import (  # noqa: E402
    Detection,
    ObjectSlots,
    ee_action,
)
from armstack_recorder.video import CODECS, VideoConfig  # noqa: E402
from armstack_sim.expert import GRASP_YAWS, ExpertConfig, PickPlaceExpert, observe  # noqa: E402
from armstack_sim.profiled_joints import ProfiledJoints  # noqa: E402
from armstack_sim.world import CUBE_PALETTE, SimConfig, SimWorld  # noqa: E402

logger = logging.getLogger("make_vla_dataset")

TEMPLATES = (
    "put the {color} cube in the bin",
    "place the {color} cube into the bin",
    "pick up the {color} cube and drop it in the bin",
    "move the {color} block to the bin",
)
CAMERA = "color"
ROBOT_TYPE = "armstack_6dof"
BASE_FRAME = "base_link"


@dataclass(frozen=True)
class EpisodeSpec:
    seed: int
    target: str  # object name, e.g. "red_cube"
    instruction: str


@dataclass(frozen=True)
class EpisodeOutcome:
    spec: EpisodeSpec
    frames: int
    kept: bool
    reason: str  # why it was dropped ("" when kept)


def episode_spec(world: SimWorld, seed: int, templates: tuple[str, ...] = TEMPLATES) -> EpisodeSpec:
    """Target and instruction of the episode with this seed (drawn apart from the cube poses)."""
    rng = np.random.default_rng((seed, 1))
    target = world.object_names[rng.integers(len(world.object_names))]
    color = world.object_pose(target).color
    template = templates[rng.integers(len(templates))]
    return EpisodeSpec(seed, target, template.format(color=color))


def camera_frame(world: SimWorld, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the calibrated camera at size (H, W), resized with INTER_AREA as
    armstack_policy.observation.image_feature resizes camera frames for a policy."""
    rgb, _ = world.render_rgbd()
    if rgb.shape[:2] == tuple(size):
        return rgb
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@dataclass
class ArmPath:
    """ee actions -> joints, the graph's way: the IK node's controller, then the servos'
    motion profiles."""

    kinematics: ArmKinematics
    joint_targets: JointTargets
    servos: ProfiledJoints

    @classmethod
    def for_world(cls, world: SimWorld) -> ArmPath:
        return cls(ArmKinematics(urdf_path()),
                   JointTargets(ActionLayout("ee", tuple(EE_ACTION_NAMES)), world.joint_names),
                   ProfiledJoints(load_default_servo_config()))

    def reset(self, world: SimWorld) -> None:
        self.joint_targets.reset(world.joint_positions())
        self.servos.reset(world.joint_positions())


def record_episode(world: SimWorld, arm: ArmPath, writer: LeRobotDatasetWriter,
                   spec: EpisodeSpec, expert_config: ExpertConfig, fps: int,
                   image_size: tuple[int, int], time_limit: float, tail: float,
                   perception: Perception | None = None, lead_in: float = 1.5) -> EpisodeOutcome:
    """Run the expert on spec.target and write the frames; save or discard by the outcome.
    With `perception`, the object slots are what it localizes in each frame (else the truth)."""
    world.reset(spec.seed)
    if perception is not None:
        perception.reset()
        for _ in camera_frames(world, round(lead_in * fps), fps):  # the arm at rest
            perception.objects()
    start = world.time  # after the lead-in
    arm.reset(world)
    expert = PickPlaceExpert(expert_config, world.bin_center, world.config.bin_inner_size,
                             [spec.target])
    slots = ObjectSlots(tuple(world.object_names))
    writer.start_episode(spec.instruction)
    frames, done_at = 0, None
    while world.time - start < time_limit:
        act = expert.act(observe(world, arm.kinematics))
        if act.done and done_at is None:
            done_at = world.time
        if done_at is not None and world.time - done_at >= tail:
            break
        action = ee_action(act.ee_pose[:3, 3], matrix_to_quat_xyzw(act.ee_pose[:3, :3]),
                           act.gripper, BASE_FRAME, BASE_FRAME)
        objects = (perception.objects() if perception is not None
                   else ground_truth_objects(world))
        detections = [Detection(o.label, o.score, tuple(o.position)) for o in objects]
        writer.add_frame(world.joint_positions().astype(np.float32), action,
                         slots.vector(detections, BASE_FRAME, BASE_FRAME),
                         {CAMERA: camera_frame(world, image_size)})
        frames += 1
        goals, _ = arm.joint_targets(action, world.joint_positions(), world.time)
        arm.servos.set_goals(goals)
        arm.servos.drive(world, 1.0 / fps)
    reason = ""
    if done_at is None:
        reason = f"expert not done within {time_limit} s"
    elif not world.object_in_bin(spec.target):
        reason = f"{spec.target} not in the bin"
    else:
        wrong = [n for n in world.object_names if n != spec.target and world.object_in_bin(n)]
        if wrong:
            reason = f"other cube(s) in the bin: {wrong}"
    if reason:
        writer.discard_episode()
    else:
        writer.save_episode()
    return EpisodeOutcome(spec, frames, not reason, reason)


def open_writer(root: Path, fps: int, image_size: tuple[int, int], objects: tuple[str, ...],
                video: VideoConfig) -> LeRobotDatasetWriter:
    features = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(EE_ACTION_NAMES),
                           env_state_names=ObjectSlots(objects).names,
                           cameras=[CameraSpec(CAMERA, *image_size)])
    return LeRobotDatasetWriter(WriterConfig(root=root, fps=fps, robot_type=ROBOT_TYPE,
                                             features=features, video=video))


def _size(text: str) -> tuple[int, int]:
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}")
    return parts[0], parts[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--out", type=Path, required=True, help="dataset root (appended to if present)")
    p.add_argument("--episodes", type=int, required=True, help="episodes to attempt")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--fps", type=int, default=30, help="dataset rate (the recorder's default)")
    p.add_argument("--image-size", type=_size,
                   help="H,W of the stored frames (default: the camera's own; see the module doc "
                        "before storing them smaller)")
    p.add_argument("--colors", default="red,green,blue",
                   help=f"cube colours of every scene, from {','.join(CUBE_PALETTE)}")
    p.add_argument("--time-limit", type=float, default=30.0, help="simulated s per episode")
    p.add_argument("--tail", type=float, default=0.5,
                   help="s recorded at rest after the expert is done")
    teleop = node_params("teleop.yaml", "teleop")
    p.add_argument("--close-time", type=float, default=teleop["expert_close_time"],
                   help="s the expert waits for the gripper to close (default: config/teleop.yaml)")
    p.add_argument("--open-time", type=float, default=teleop["expert_open_time"],
                   help="s the expert waits for the gripper to open (default: config/teleop.yaml)")
    p.add_argument("--grasp-yaw", choices=GRASP_YAWS, default=teleop["expert_grasp_yaw"],
                   help="finger axis of the expert's grasps (default: config/teleop.yaml)")
    p.add_argument("--objects", choices=OBJECT_SOURCES, default="ground_truth",
                   help="source of observation.environment_state: the true centres, or the "
                        "detector and localization on each frame (what a policy sees on the "
                        "graph; ~10x slower)")
    p.add_argument("--detector-model", default="detector/detector.onnx",
                   help="detector of --objects perception: a path, or one under models/")
    p.add_argument("--codec", choices=CODECS, default="libx264")
    p.add_argument("--crf", type=int, default=18,
                   help="quality; low keeps the few-pixel cubes of small frames sharp")
    args = p.parse_args()
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    logging.basicConfig(level=logging.WARNING)
    world = SimWorld(SimConfig(cube_colors=tuple(args.colors.split(","))))
    arm = ArmPath.for_world(world)
    image_size = args.image_size or (world.calibration.height, world.calibration.width)
    video = VideoConfig(codec=args.codec, crf=args.crf)
    expert = ExpertConfig(close_time=args.close_time, open_time=args.open_time,
                          grasp_yaw=args.grasp_yaw)
    perception = None
    if args.objects == "perception":
        perception = Perception(world, detector_path(args.detector_model))
    kept, t0 = 0, time.perf_counter()
    with open_writer(args.out, args.fps, image_size, world.object_names, video) as writer:
        for i in range(args.episodes):
            spec = episode_spec(world, args.seed + i)
            out = record_episode(world, arm, writer, spec, expert, args.fps, image_size,
                                 args.time_limit, args.tail, perception)
            kept += out.kept
            print(f"episode seed {spec.seed:6d} {spec.instruction!r}: {out.frames} frames, "
                  + ("kept" if out.kept else f"DROPPED ({out.reason})"), flush=True)
        total = writer.num_episodes
    wall = time.perf_counter() - t0
    print(f"kept {kept}/{args.episodes} episodes ({total} in {args.out}); "
          f"{wall:.0f} s ({wall / args.episodes:.1f} s per episode)")
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
