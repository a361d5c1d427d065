#!/usr/bin/env python3
"""Evaluate an exported ACT or Diffusion policy in the MuJoCo world, in one process (no ROS).

The simulator, the perception logic (detector + localization from config/perception.yaml), the
policy node's observation assembly and chunk buffer run in one loop with synchronous inference
(armstack_eval.inprocess says exactly what is and is not the graph). Quick and repeatable: use
it to compare chunk-buffer modes and checkpoints; the graph figure is tools/evaluate_policy.py.

    python tools/eval_policy_inprocess.py --model policy/act_pick/policy.onnx --episodes 100
    python tools/eval_policy_inprocess.py --model policy/act_pick/policy.onnx \
        --mode temporal_ensemble --inference-period 1 --episodes 50
    python tools/eval_policy_inprocess.py --model policy/dp_pick/policy.onnx --episodes 2 \
        --trace-dir out/dp_traces      # every step saved; each failure's grasps printed
    python tools/eval_policy_inprocess.py --model policy/act_pick/policy.onnx --episodes 20 \
        --start-at-miss                # recovery: from a grasp that closed beside its cube

A failed episode prints where its cubes started and, with --trace-dir, each grasp: where the
gripper closed, how far from the nearest cube, and what came up (armstack_eval.trace).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from armstack_common.paths import resolve_model
from armstack_eval.episodes import sim_start_pose, start_pose_arg
from armstack_eval.inprocess import (
    OBJECT_SOURCES,
    InProcessEvalConfig,
    InProcessEvaluator,
    detector_path,
    summarize,
)
from armstack_eval.trace import EpisodeTrace, find_grasps
from armstack_policy.chunk_buffer import FAVOUR, MODES
from armstack_policy.onnx_policy import MAKERS, DiffusionRunner, RunnerConfig, load_policy
from armstack_sim.world import SimConfig, SimWorld


def main() -> int:
    d = InProcessEvalConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--model", required=True, help="policy .onnx: a path, or one under models/")
    p.add_argument("--episodes", type=int, default=d.episodes)
    p.add_argument("--seed", type=int, default=d.seed, help="scene seed of the first episode")
    p.add_argument("--time-limit", type=float, default=d.time_limit, help="simulated s")
    p.add_argument("--start-pose", type=start_pose_arg, default=None, metavar="Q1,...,Q7",
                   help="joint positions every episode starts from, in the simulator's joint "
                        "order (default: the scripted expert's rest pose, as the graph evaluation)")
    p.add_argument("--objects", choices=OBJECT_SOURCES, default=d.objects)
    p.add_argument("--detector-model", default="detector/detector.onnx")
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--inference-period", type=int, default=d.inference_period,
                   help="control steps between inferences (receding_horizon: n_action_steps)")
    p.add_argument("--n-action-steps", type=int, default=d.n_action_steps)
    p.add_argument("--ensemble-coeff", type=float, default=d.ensemble_coeff)
    p.add_argument("--favour", choices=FAVOUR, default=d.favour)
    p.add_argument("--blend-steps", type=int, default=d.blend_steps)
    p.add_argument("--workspace-x", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="x range of the cubes' centres in base_link, m (default: the "
                        "simulator's, as the graph evaluation); a strip at an edge tests layouts "
                        "a policy saw least")
    p.add_argument("--workspace-y", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="y range of the cubes' centres, m (default: the simulator's)")
    p.add_argument("--start-at-miss", action="store_true",
                   help="recovery: each episode starts after the scripted expert has missed a "
                   "cube on purpose, the gripper closed beside it (armstack_eval.inprocess)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--num-inference-steps", type=int, default=0,
                   help="diffusion policies: DDIM steps (0: the model card's)")
    p.add_argument("--diffusion-samples", type=int, default=0,
                   help="diffusion policies: chunks sampled per observation; above 1, the "
                        "mean of the half nearest their medoid is played (0: the model card's)")
    p.add_argument("--json", type=Path, help="write the summary and every episode here")
    p.add_argument("--trace-dir", type=Path,
                   help="save each episode's step-by-step trace here (episode_SEED.npz, "
                        "armstack_eval.trace.EpisodeTrace) and print a failure's grasps")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = InProcessEvalConfig(
        episodes=args.episodes, seed=args.seed, time_limit=args.time_limit, objects=args.objects,
        mode=args.mode, inference_period=args.inference_period,
        n_action_steps=args.n_action_steps, ensemble_coeff=args.ensemble_coeff,
        favour=args.favour, blend_steps=args.blend_steps,
        start_positions=sim_start_pose(args.start_pose)["start_positions"],
        start_at_miss=args.start_at_miss)
    try:
        runner = RunnerConfig(intra_op_threads=args.threads,
                              num_inference_steps=args.num_inference_steps,
                              diffusion_samples=args.diffusion_samples)
    except ValueError as exc:
        p.error(str(exc))
    policy = load_policy(resolve_model(args.model, MAKERS), runner)
    detector = detector_path(args.detector_model) if args.objects == "perception" else None
    scene = {name: tuple(value) for name, value in
             (("workspace_x", args.workspace_x), ("workspace_y", args.workspace_y)) if value}
    try:
        world = SimWorld(SimConfig(**scene))
    except ValueError as exc:
        p.error(str(exc))
    evaluator = InProcessEvaluator(policy, config, detector, world)
    outcomes = []
    if args.trace_dir:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(config.episodes):
            trace = EpisodeTrace(world.object_names) if args.trace_dir else None
            o = evaluator.run(i, trace)
            if trace is not None:
                trace.save(args.trace_dir / f"episode_{o.seed}.npz")
            outcomes.append(o)
            rate = sum(x.success for x in outcomes) / len(outcomes)
            print(f"episode {i:3d} seed {o.seed}: {'success' if o.success else 'FAIL   '} "
                  f"in bin {sum(o.in_bin.values())}/{len(o.in_bin)}, sim {o.sim_time:4.1f} s, "
                  f"inference {o.inference_ms_mean:5.1f} ms, dry {o.dry_steps}, "
                  f"wall {o.wall_s:4.1f} s; so far {rate:.0%}", flush=True)
            if not o.success:
                print("    cubes at the start (x, y m): " + ", ".join(
                    f"{name} {x:.3f} {y:.3f}" for name, (x, y) in o.layout.items())
                    + (f"; the expert missed {o.missed_before}" if o.missed_before else ""),
                    flush=True)
                for grasp in (find_grasps(trace, in_bin=world.config.in_bin)
                              if trace is not None else []):
                    print(f"    grasp {grasp.describe()}", flush=True)
    finally:
        evaluator.close()
    summary = summarize(outcomes, config, evaluator.buffer_config)
    summary["model"] = str(args.model)
    summary["date"] = datetime.now().isoformat(timespec="seconds")
    if isinstance(policy, DiffusionRunner):
        summary["num_inference_steps"] = policy.num_steps
        summary["diffusion_samples"] = policy.samples
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary,
                                         "episodes": [o.to_dict() for o in outcomes]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
