#!/usr/bin/env python3
"""Evaluate an exported VLA policy in the MuJoCo world, in process (no ROS): the success rate of
language-conditioned pick-and-place and the policy's inference rate on this CPU.

Per episode: the world is reset with seed S+i (every cube at a random pose), one cube is named
in an instruction ("put the red cube in the bin"), and the policy runs closed loop at the
card's rate: every n_action_steps control steps the calibrated camera is rendered, resized as
the policy node resizes it (armstack_policy.observation.image_feature) and, with the measured
joints, decoded by the ONNX runner (armstack_policy.vla_decode) into a chunk; the chunk buffer
(receding horizon) hands out one ee action per step, and IK (armstack_common.kinematics, what
the IK node wraps) turns it into joint targets. A VLA with object tokens (its card declares
observation.environment_state) also gets the localized objects: every control step (the camera
rate) the detector and localization run on the rendered RGB-D frame, as the perception nodes
do, after a lead-in that lets the tracker confirm the cubes (or, with --objects ground_truth,
the true cube centres). Inference is synchronous (simulated time waits
for it), so this measures what the policy decides, not the graph's latency.

Success: the named cube rests in the bin and no other cube does, when the episode ends (the
named cube has rested in the bin for --settle s, or --time-limit passed).

    python tools/eval_vla_inprocess.py --model models/vla_pick/policy.onnx --episodes 100
        --trace-dir out/vla_traces     # every step saved; each failure's grasps printed

With --trace-dir a failed episode prints each grasp: where the gripper closed, how far from
the nearest cube, and what came up (armstack_eval.trace; tools/grasp_report.py reads the
traces of many episodes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_common", "armstack_sim", "armstack_policy", "armstack_eval", "armstack_camera",
             "armstack_detector", "armstack_localization", "armstack_ik"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.servo_config import load_default_servo_config  # noqa: E402
from armstack_eval.inprocess import (  # noqa: E402
    OBJECT_SOURCES,
    JointTargets,
    Perception,
    camera_frames,
    detector_path,
    ground_truth_objects,
)
from armstack_eval.trace import EpisodeTrace, find_grasps  # noqa: E402
from armstack_policy.actions import ActionLayout  # noqa: E402
from armstack_policy.chunk_buffer import ChunkBuffer, ChunkBufferConfig  # noqa: E402
from armstack_policy.observation import (  # noqa: E402
    ENV_STATE_KEY,
    IMAGE_PREFIX,
    STATE_KEY,
    ObjectMemory,
    image_feature,
    object_slots,
)
from armstack_policy.onnx_policy import CARD_FILE, RunnerConfig  # noqa: E402
from armstack_policy.vla_decode import VLADecodeConfig, VLARunner, load_vla_policy  # noqa: E402
from armstack_sim.profiled_joints import ProfiledJoints  # noqa: E402
from armstack_sim.world import SimConfig, SimWorld  # noqa: E402
from make_vla_dataset import TEMPLATES, episode_spec  # noqa: E402 - the training episodes' draw

logger = logging.getLogger("eval_vla_inprocess")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run; validated on construction."""

    episodes: int = 100
    seed: int = 100_000  # first episode's seed (the generated training data starts at 0)
    templates: tuple[str, ...] = TEMPLATES[:1]
    time_limit: float = 20.0  # simulated s
    settle: float = 1.0  # s the named cube must rest in the bin to end early
    objects: str = "perception"  # object tokens' source (cards with object slots only)
    lead_in: float = 1.5  # s of camera frames before the first inference (tracker start-up)

    def __post_init__(self) -> None:
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise ValueError(f"EvalConfig.episodes must be an int >= 1, got {self.episodes!r}")
        if not self.templates or not all("{color}" in t for t in self.templates):
            raise ValueError("EvalConfig.templates must be texts containing {color}")
        if not self.time_limit > 0.0 or not self.settle > 0.0 or not self.lead_in >= 0.0:
            raise ValueError("EvalConfig.time_limit and settle must be > 0 s, lead_in >= 0 s")
        if self.objects not in OBJECT_SOURCES:
            raise ValueError(f"EvalConfig.objects must be one of {OBJECT_SOURCES}, "
                             f"got {self.objects!r}")


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    instruction: str
    target: str
    success: bool
    in_bin: dict[str, bool]
    sim_time: float  # s
    inferences: int
    inference_ms_mean: float
    ik_failures: int


class ObjectSlotSource:
    """The object slots a VLA with object tokens sees: each frame's localized objects (or the
    true ones), with the card's hold of a class not seen, as the policy node assembles them."""

    def __init__(self, world: SimWorld, card, perception: Perception | None) -> None:  # noqa: ANN001
        self.world, self.card, self.perception = world, card, perception
        self.memory = (ObjectMemory(len(card.object_classes), card.object_fields,
                                    card.object_hold) if card.object_hold > 0 else None)
        self.slots = np.zeros(len(card.object_classes) * len(card.object_fields), np.float32)

    def reset(self) -> None:
        if self.perception is not None:
            self.perception.reset()
        if self.memory is not None:
            self.memory.clear()

    def frame(self, now: float) -> None:
        objects = (self.perception.objects() if self.perception is not None
                   else ground_truth_objects(self.world))
        slots = object_slots(objects, self.card.object_classes, self.card.object_fields)
        self.slots = self.memory.fill(now, slots) if self.memory is not None else slots


def observation(world: SimWorld, runner: VLARunner,
                objects: ObjectSlotSource | None) -> dict[str, np.ndarray]:
    """The policy's features {key: (1, ...)} now: measured joints, the camera frame(s) and, for
    a VLA with object tokens, the latest object slots."""
    features = {STATE_KEY: world.joint_positions().astype(np.float32)[None]}
    rgb, _ = world.render_rgbd()
    for camera, h, w in runner.card.cameras:
        features[IMAGE_PREFIX + camera] = image_feature(rgb, (h, w))[None]
    if objects is not None:
        features[ENV_STATE_KEY] = objects.slots[None]
    return features


def run_episode(world: SimWorld, joint_targets: JointTargets, servos: ProfiledJoints,
                runner: VLARunner, objects: ObjectSlotSource | None,
                seed: int, template: str, cfg: EvalConfig,
                trace: EpisodeTrace | None = None) -> EpisodeResult:
    """One episode; `trace`, if given, gets every control step (armstack_eval.trace)."""
    card = runner.card
    spec = episode_spec(world, seed, (template,))
    target, instruction = spec.target, spec.instruction
    world.reset(seed)
    runner.set_instruction(instruction)
    runner.reset()
    if objects is not None:
        objects.reset()
        for i in camera_frames(world, round(cfg.lead_in / card.dt), card.fps):
            objects.frame(-cfg.lead_in + i * card.dt)
    buffer = ChunkBuffer(ChunkBufferConfig(
        mode="receding_horizon", chunk_size=card.chunk_size, action_dim=card.action_dim,
        dt=card.dt, max_chunks=2, n_action_steps=card.n_action_steps))
    joint_targets.reset(world.joint_positions())
    servos.reset(world.joint_positions())
    times, ik_failures, step, rested = [], 0, 0, 0.0
    start = world.time  # after the lead-in
    while world.time - start < cfg.time_limit and rested < cfg.settle:
        now = step * card.dt
        if objects is not None:
            objects.frame(now)
        if step % card.n_action_steps == 0:
            features = observation(world, runner, objects)
            t0 = time.perf_counter()
            chunk = runner.predict_chunk(features)  # (k, D)
            times.append(time.perf_counter() - t0)
            buffer.add_chunk(chunk, now)
        action = buffer.action_at(now).action  # (D,)
        goals, ok = joint_targets(action, world.joint_positions(), now)
        ik_failures += not ok
        servos.set_goals(goals)
        if trace is not None:
            trace.add_world(now, world, float(action[-1]))  # the gripper is the last element
        servos.drive(world, card.dt)
        step += 1
        rested = rested + card.dt if world.object_in_bin(target) else 0.0
    in_bin = {n: world.object_in_bin(n) for n in world.object_names}
    success = in_bin[target] and not any(v for n, v in in_bin.items() if n != target)
    return EpisodeResult(seed, instruction, target, success, in_bin, world.time - start,
                         len(times), 1e3 * float(np.mean(times)), ik_failures)


def summarize(results: list[EpisodeResult], card_path: Path) -> dict:
    ms = np.array([r.inference_ms_mean for r in results])
    successes = sum(r.success for r in results)
    wrong = sum(any(v for n, v in r.in_bin.items() if n != r.target) for r in results)
    return {"tool": "tools/eval_vla_inprocess.py", "model_card": str(card_path),
            "episodes": len(results), "successes": successes,
            "success_rate": successes / len(results),
            "episodes_with_a_wrong_cube_in_bin": wrong,
            "inference_ms_mean": float(ms.mean()),
            "inference_hz": float(1e3 / ms.mean()),
            "note": "in-process MuJoCo, synchronous inference, receding horizon, one ORT thread"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--model", type=Path, required=True, help="exported VLA (policy.onnx)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode")
    p.add_argument("--all-templates", action="store_true",
                   help="phrase instructions with every training template, not only the first")
    p.add_argument("--time-limit", type=float, default=20.0, help="simulated s per episode")
    p.add_argument("--temperature", type=float, help="decoding temperature (default: card's)")
    p.add_argument("--objects", choices=OBJECT_SOURCES, default=EvalConfig.objects,
                   help="where a VLA with object tokens gets the objects from")
    p.add_argument("--detector-model", default="detector/detector.onnx",
                   help="detector of --objects perception: a path, or one under models/")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", type=Path, help="write the per-episode results and summary here")
    p.add_argument("--trace-dir", type=Path,
                   help="save each episode's step-by-step trace here (episode_SEED.npz, "
                        "armstack_eval.trace.EpisodeTrace) and print a failure's grasps")
    p.add_argument("--update-card", action="store_true",
                   help="store the summary as the evaluation of model_card.json and MODEL_CARD.md")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = EvalConfig(episodes=args.episodes, seed=args.seed, time_limit=args.time_limit,
                     templates=TEMPLATES if args.all_templates else TEMPLATES[:1],
                     objects=args.objects)
    runner = load_vla_policy(args.model, RunnerConfig(intra_op_threads=args.threads),
                             VLADecodeConfig(temperature=args.temperature))
    world = SimWorld(SimConfig())
    joint_targets = JointTargets(ActionLayout(runner.card.action_kind, runner.card.action_names),
                                 world.joint_names)
    servos = ProfiledJoints(load_default_servo_config())
    objects = None
    if runner.card.object_classes:
        perception = None
        if cfg.objects == "perception":
            perception = Perception(world, detector_path(args.detector_model))
        objects = ObjectSlotSource(world, runner.card, perception)
    results = []
    if args.trace_dir:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    for i in range(cfg.episodes):
        template = cfg.templates[i % len(cfg.templates)]
        trace = EpisodeTrace(world.object_names) if args.trace_dir else None
        r = run_episode(world, joint_targets, servos, runner, objects, cfg.seed + i, template,
                        cfg, trace)
        results.append(r)
        print(f"episode {i:3d} seed {r.seed}: {'success' if r.success else 'FAIL   '} "
              f"{r.instruction!r}, in bin {[n for n, v in r.in_bin.items() if v]}, "
              f"sim {r.sim_time:4.1f} s, inference {r.inference_ms_mean:5.1f} ms, "
              f"ik failures {r.ik_failures}", flush=True)
        if trace is not None:
            trace.save(args.trace_dir / f"episode_{r.seed}.npz")
            if not r.success:
                for grasp in find_grasps(trace, in_bin=world.config.in_bin):
                    print(f"    grasp {grasp.describe()}", flush=True)
    summary = summarize(results, args.model.with_name(CARD_FILE))
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary,
                                         "episodes": [asdict(r) for r in results]}, indent=2))
    if args.update_card:
        sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / "armstack_learning"))
        from armstack_learning.export import record_evaluation  # torch: only when asked
        record_evaluation(args.model.with_name(CARD_FILE), summary)
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
