#!/usr/bin/env python3
"""Per-command cost of the ik node's logic (armstack_ik.controller.IKController).

tools/bench_ik.py times single IK solves from random seeds; the ik node instead tracks a
stream of nearby targets, seeded from its last command, and adds checks and motion limits.
This times `submit` + `step` per command, with the node's default parameters, for:
- tracking: a 50 Hz stream along a circle (radius 6 cm, 4 s per turn) with a swaying
  orientation, the way a policy or teleop drives the arm;
- unreachable: targets 1 m out of reach, which exhaust the restart budget and are held.

    python tools/bench_ik_controller.py --seconds 60
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pinocchio as pin

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_common", "armstack_ik"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.machine import cpu_model  # noqa: E402
from armstack_common.paths import urdf_path  # noqa: E402
from armstack_ik.controller import EECommand, IKController, Outcome  # noqa: E402
from armstack_ik.node_config import IK_NODE_PARAMS, ik_node_config  # noqa: E402

PERIOD = 0.02  # s, the 50 Hz control period
START = np.array([0.0, -0.3, 0.4, 0.0, 0.5, 0.0, 0.01])  # arm (6) + left_finger


def quaternion(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix (3, 3)."""
    q = pin.Quaternion(np.ascontiguousarray(rotation))
    return np.array([q.x, q.y, q.z, q.w])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def run(controller: IKController, poses: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Per-command seconds of submit + step over `poses` sent every PERIOD; held count."""
    controller.set_measured(controller.joint_names, START, 0.0)
    times = np.empty(len(poses))
    held = 0
    for k, pose in enumerate(poses):
        t = k * PERIOD
        cmd = EECommand(pose[:3, 3], quaternion(pose[:3, :3]), 0.02, t, "base_link")
        t0 = time.perf_counter()
        outcome = controller.submit(cmd, t).outcome
        controller.step(t)
        times[k] = time.perf_counter() - t0
        held += outcome is Outcome.HELD
    return times, held


def describe(name: str, seconds: np.ndarray, held: int) -> str:
    ms = seconds * 1e3
    return (
        f"{name:12s} {len(ms):6d} commands: median {np.median(ms):.3f} ms, "
        f"p99 {np.percentile(ms, 99):.3f} ms, max {ms.max():.2f} ms; held {held}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the tracking stream")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    cfg = ik_node_config({spec.name: spec.default for spec in IK_NODE_PARAMS})
    controller = IKController(urdf_path(), cfg.ik, cfg.controller)
    home = controller.kinematics.fk(START[:-1]).copy()

    steps = int(args.seconds / PERIOD)
    circle = []
    for k in range(steps):
        phase = 2.0 * math.pi * k * PERIOD / 4.0
        pose = home.copy()
        pose[:3, 3] += 0.06 * np.array([math.cos(phase) - 1.0, math.sin(phase), 0.5 * math.sin(2 * phase)])
        pose[:3, :3] = rot_z(0.3 * math.sin(phase)) @ home[:3, :3]
        circle.append(pose)
    far = home.copy()
    far[:3, 3] += (1.0, 0.0, 0.0)

    print(f"machine: {cpu_model()}, nproc={os.cpu_count()}, python {platform.python_version()}")
    print(
        f"parameters: node defaults (max_restarts {cfg.ik.max_restarts}, velocity_scale "
        f"{cfg.controller.velocity_scale}); submit + step per command"
    )
    print(describe("tracking", *run(controller, circle)))
    controller = IKController(urdf_path(), cfg.ik, cfg.controller)
    print(describe("unreachable", *run(controller, [far] * 500)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
