#!/usr/bin/env python3
"""How a policy's grasps miss their cubes, over episode traces (eval_policy_inprocess --trace-dir).

Every close the policy commanded within --aimed-within of a cube counts: how far the gripper
was from that cube's centre (median, p90), how many lifted it, and whether the miss grows
towards the centre of the layouts (a negative slope: a cube near an edge is reached short of
it, towards the middle, as a regression that has seen few edge layouts does). The first close
of each episode is the reach from the start pose to the first cube, before anything can have
gone wrong; short episodes (--time-limit 2.5) measure it in seconds each. Each lift ends
where the cube left the gripper: in the bin of the simulator's default scene, or outside it.
A close that moved a cube without lifting it pushed that cube; pushes that leave a cube off
the area the layouts are drawn from put it where no demonstration reached.

    python tools/eval_policy_inprocess.py --model policy/act_pick/policy.onnx --episodes 30 \\
        --trace-dir out/traces
    python tools/grasp_report.py out/traces
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from armstack_eval.trace import EpisodeTrace, find_grasps, grasp_bias
from armstack_sim.world import SimConfig


def main(argv: list[str] | None = None) -> int:
    sim = SimConfig()
    default_centre = (sum(sim.workspace_x) / 2.0, sum(sim.workspace_y) / 2.0)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("traces", type=Path, nargs="+", help="trace directories or episode_*.npz files")
    p.add_argument("--centre", type=float, nargs=2, default=default_centre, metavar=("X", "Y"),
                   help="m, centre of the layouts in base_link (default: the simulator's "
                        "workspace centre, %(default)s)")
    p.add_argument("--aimed-within", type=float, default=0.06,
                   help="m: closes farther than this from every cube are left out")
    p.add_argument("--first-within", type=float, default=0.015,
                   help="m: count the episodes whose first close was this near a cube's centre")
    args = p.parse_args(argv)
    for path in args.traces:
        if not path.exists():
            p.error(f"{path} not found (traces are written by tools/eval_policy_inprocess.py "
                    "--trace-dir)")
    files = sorted(f for path in args.traces
                   for f in (path.glob("episode_*.npz") if path.is_dir() else [path]))
    if not files:
        p.error(f"no episode_*.npz in {[str(t) for t in args.traces]} "
                "(written by tools/eval_policy_inprocess.py --trace-dir)")
    per_episode = [find_grasps(EpisodeTrace.load(f), in_bin=sim.in_bin) for f in files]
    grasps = [g for episode in per_episode for g in episode]
    try:
        bias = grasp_bias(grasps, tuple(args.centre), args.aimed_within)
    except ValueError as exc:
        p.error(str(exc))
    print(f"{len(files)} episodes, {len(grasps)} closes; {bias.grasps} within "
          f"{args.aimed_within * 100:.0f} cm of a cube, {bias.lifted} of them lifted it")
    print(f"gripper to cube centre: median {bias.offset_median * 100:.1f} cm, "
          f"p90 {bias.offset_p90 * 100:.1f} cm")
    print(f"miss = slope * (cube - centre {args.centre[0]:.3f}, {args.centre[1]:.3f}) + bias: "
          f"slope x {bias.slope[0]:+.3f}, y {bias.slope[1]:+.3f}; "
          f"bias x {bias.bias[0] * 100:+.2f} cm, y {bias.bias[1] * 100:+.2f} cm")
    lifts = [g for g in grasps if g.lifted]
    released = [g.release for g in lifts if g.release is not None]
    in_bin = sum(r.in_bin for r in released)
    print(f"{len(lifts)} lifts: {in_bin} let go into the bin, {len(released) - in_bin} came to "
          f"rest outside it (dropped on the way or let go beside it), "
          f"{len(lifts) - len(released)} still held at the end")
    pushes = [push for g in grasps for push in g.pushed]
    (x0, x1), (y0, y1) = sim.workspace_x, sim.workspace_y
    off_area = sum(not (x0 <= p.to[0] <= x1 and y0 <= p.to[1] <= y1) for p in pushes)
    moved = f", {np.median([p.moved for p in pushes]) * 100:.1f} cm median" if pushes else ""
    print(f"{sum(bool(g.pushed) for g in grasps)} closes pushed a cube without lifting it "
          f"({len(pushes)} pushes{moved}); {off_area} left the cube off the layouts' area "
          f"(x {x0:g}..{x1:g}, y {y0:g}..{y1:g} m)")
    first = np.array([episode[0].offset for episode in per_episode if episode])
    print(f"first close of each episode ({len(first)} of {len(files)} closed): median "
          f"{np.median(first) * 100:.1f} cm, p90 {np.percentile(first, 90) * 100:.1f} cm from "
          f"the nearest cube's centre; {int(np.sum(first <= args.first_within))} within "
          f"{args.first_within * 100:.1f} cm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
