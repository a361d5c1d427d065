#!/usr/bin/env python3
"""Benchmark the arm IK (armstack_common.kinematics) the way TRAC-IK is benchmarked.

Each trial draws a random joint configuration within the limits, takes its forward
kinematics as the target pose (so every target is reachable), and solves from a second,
independent random configuration as the seed. Prints median / p99 solve time and the
success rate, with the machine it ran on.

    python tools/bench_ik.py --poses 10000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / "armstack_common"))

from armstack_common.kinematics import ArmKinematics, IKConfig  # noqa: E402
from armstack_common.machine import cpu_model  # noqa: E402
from armstack_common.paths import urdf_path  # noqa: E402


def run(poses: int, seed: int, kin: ArmKinematics) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    times = np.empty(poses)
    successes = 0
    iterations = np.empty(poses)
    worst_pos = 0.0
    for trial in range(poses):
        target = kin.fk(kin.random_configuration(rng)).copy()
        start = kin.random_configuration(rng)
        t0 = time.perf_counter()
        result = kin.ik(target, start)
        times[trial] = time.perf_counter() - t0
        iterations[trial] = result.iterations
        if result.success:
            successes += 1
            # Check the claim against an independent forward pass.
            reached = kin.fk(result.q)
            worst_pos = max(worst_pos, float(np.linalg.norm(reached[:3, 3] - target[:3, 3])))
    times_ms = times * 1e3
    return {
        "median_ms": float(np.median(times_ms)),
        "mean_ms": float(np.mean(times_ms)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "max_ms": float(np.max(times_ms)),
        "success_rate": successes / poses,
        "median_iterations": float(np.median(iterations)),
        "worst_position_error_m": worst_pos,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=10000, help="number of random target poses")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the trials")
    parser.add_argument(
        "--urdf", type=Path, default=None, help="URDF (default: config/robot/arm.urdf)"
    )
    args = parser.parse_args()
    if args.poses < 1:
        parser.error("--poses must be >= 1")

    t0 = time.perf_counter()
    kin = ArmKinematics(args.urdf or urdf_path(), IKConfig())
    setup_ms = (time.perf_counter() - t0) * 1e3
    stats = run(args.poses, args.seed, kin)
    cfg = kin.config
    print(f"machine: {cpu_model()}, nproc={os.cpu_count()}, python {platform.python_version()}")
    print(f"chain: {', '.join(kin.joint_names)} -> {kin.ee_frame} ({setup_ms:.0f} ms to load)")
    print(
        f"tolerance: {cfg.position_tolerance * 1e3:g} mm, {cfg.orientation_tolerance:g} rad; "
        f"targets: FK of random configurations, seeds random ({args.poses} poses)"
    )
    print(
        f"solve time: median {stats['median_ms']:.3f} ms, mean {stats['mean_ms']:.3f} ms, "
        f"p99 {stats['p99_ms']:.3f} ms, max {stats['max_ms']:.2f} ms"
    )
    print(
        f"success: {stats['success_rate'] * 100:.2f} %, median iterations "
        f"{stats['median_iterations']:.0f}, worst position error of successes "
        f"{stats['worst_position_error_m'] * 1e3:.4f} mm"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
