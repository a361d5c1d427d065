#!/usr/bin/env python3
"""Run the scripted pick-and-place expert in the MuJoCo world, in process.

An episode resets the world with seed S+i (random cube poses), then the expert puts
every cube into the bin; it succeeds when all cubes rest inside the bin. Prints one
line per episode and the success rate.

    python tools/run_expert.py --episodes 100 --seed 0

With --servo-profiles the joint targets go through the servos' velocity profiles
(config/robot/dynamixel.yaml) as they do on the graph's servo bus; the gripper then takes about
a second to close, so pass the graph's expert timing too (config/teleop.yaml):

    python tools/run_expert.py --servo-profiles --close-time 1.2 --open-time 1.0 --grasp-yaw azimuth --pick-order listed --miss-rate 0.3
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_common", "armstack_sim"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.kinematics import ArmKinematics  # noqa: E402
from armstack_common.paths import urdf_path  # noqa: E402
from armstack_common.servo_config import load_default_servo_config  # noqa: E402
from armstack_sim.expert import GRASP_YAWS, PICK_ORDERS, ExpertConfig, run_episode  # noqa: E402
from armstack_sim.profiled_joints import ProfiledJoints  # noqa: E402
from armstack_sim.world import CUBE_PALETTE, SimConfig, SimWorld  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument(
        "--colors",
        default="red,green,blue",
        help=f"comma-separated cube colours, from {','.join(CUBE_PALETTE)}",
    )
    parser.add_argument("--grasp-yaw", choices=GRASP_YAWS, default=ExpertConfig.grasp_yaw,
                        help="finger axis of the grasps: square to the cube, or the wrist's "
                        "natural direction (armstack_sim.expert.ExpertConfig.grasp_yaw)")
    parser.add_argument("--miss-rate", type=float, default=ExpertConfig.miss_rate,
                        help="probability that a first grasp aims beside the cube on purpose "
                        "(ExpertConfig.miss_rate)")
    parser.add_argument("--miss-offset", type=float, default=ExpertConfig.miss_offset,
                        help="m, how far beside the cube a deliberate miss aims")
    parser.add_argument("--pick-order", choices=PICK_ORDERS, default=ExpertConfig.pick_order,
                        help="which cube next (ExpertConfig.pick_order)")
    parser.add_argument("--close-time", type=float, default=ExpertConfig.close_time,
                        help="s the gripper is given to close (ExpertConfig.close_time)")
    parser.add_argument("--open-time", type=float, default=ExpertConfig.open_time,
                        help="s the gripper is given to open (ExpertConfig.open_time)")
    parser.add_argument("--servo-profiles", action="store_true",
                        help="move the joints through the servos' velocity profiles, as the "
                        "graph's servo bus does")
    parser.add_argument("--time-limit", type=float, default=60.0, help="simulated s per episode")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the expert's retries")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    world = SimWorld(SimConfig(cube_colors=tuple(args.colors.split(","))))
    kinematics = ArmKinematics(urdf_path())
    try:
        expert_config = ExpertConfig(grasp_yaw=args.grasp_yaw, miss_rate=args.miss_rate,
                                     miss_offset=args.miss_offset, pick_order=args.pick_order,
                                     close_time=args.close_time, open_time=args.open_time)
    except ValueError as err:
        parser.error(str(err))
    servos = ProfiledJoints(load_default_servo_config()) if args.servo_profiles else None
    successes = 0
    t0 = time.perf_counter()
    for i in range(args.episodes):
        result = run_episode(
            world, kinematics, args.seed + i, expert_config, time_limit=args.time_limit,
            servos=servos,
        )
        successes += result.success
        missed = [name for name, inside in result.in_bin.items() if not inside]
        print(
            f"episode {i:4d} seed {result.seed:6d}: {'success' if result.success else 'FAIL   '} "
            f"sim {result.sim_time:5.1f} s, wall {result.wall_time:5.2f} s, "
            f"ik failures {result.ik_failures}"
            + (f", deliberate misses {result.misses}" if result.misses else "")
            + (f", not in bin: {', '.join(missed)}" if missed else ""),
            flush=True,
        )
    wall = time.perf_counter() - t0
    print(
        f"success rate: {successes}/{args.episodes} = {100.0 * successes / args.episodes:.1f} % "
        f"({len(world.object_names)} cubes per episode, all must end in the bin); "
        f"wall time {wall:.1f} s ({wall / args.episodes:.2f} s per episode)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
