#!/usr/bin/env python3
"""CPU cost of a node's executor: rclpy's EventsExecutor against its SingleThreadedExecutor.

A node process shaped like armstack's control nodes spins through `armstack_common.shutdown`
(the path every node's main takes) with ARMSTACK_EXECUTOR set to each kind: it subscribes to
joint_states, which a second process publishes at 100 Hz, and publishes a command from a 50 Hz
timer. Each run measures the node's CPU over the window and its timer's periods. Prints, per
kind, the median and p99 over runs of the CPU share (% of one core) and, over every period of
every run, the timer period's median / p99 / max.

    python tools/bench_executor.py [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

try:
    from armstack_common.executors import EXECUTOR_ENV, EXECUTOR_KINDS
    from armstack_common.machine import describe
    from armstack_common.testing import measure_beside, unique_domain_id
except ImportError:  # run from a source checkout without the packages installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws/src/armstack_common"))
    from armstack_common.executors import EXECUTOR_ENV, EXECUTOR_KINDS
    from armstack_common.machine import describe
    from armstack_common.testing import measure_beside, unique_domain_id

SOURCE = textwrap.dedent("""
    import sys, time
    import rclpy
    from sensor_msgs.msg import JointState
    rclpy.init()
    node = rclpy.create_node("bench_source")
    pub = node.create_publisher(JointState, "joint_states", 10)
    msg = JointState(name=[f"j{i}" for i in range(7)], position=[0.1] * 7)
    next_t = time.monotonic()
    while True:
        next_t += 0.01
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(max(0.0, next_t - time.monotonic()))
""")

NODE = textwrap.dedent("""
    import json, sys, threading, time
    import rclpy
    from sensor_msgs.msg import JointState
    from armstack_common import shutdown

    seconds = float(sys.argv[1])
    stop = shutdown.init(None, "bench_node")
    node = rclpy.create_node("bench_node")
    pub = node.create_publisher(JointState, "joint_command", 10)
    received, ticks = [0], []
    latest = [None]

    def on_state(msg):
        received[0] += 1
        latest[0] = msg

    def on_timer():
        ticks.append(time.monotonic())
        if latest[0] is not None:
            pub.publish(JointState(name=list(latest[0].name), position=list(latest[0].position)))

    node.create_subscription(JointState, "joint_states", on_state, 10)
    node.create_timer(0.02, on_timer)
    # Settle (discovery, first messages), then measure for `seconds`.
    measure = {}
    threading.Timer(2.0, lambda: measure.update(cpu=time.process_time(), n=len(ticks),
                                                received=received[0])).start()
    threading.Timer(2.0 + seconds, stop.set).start()
    shutdown.spin(node, stop)
    cpu = time.process_time() - measure["cpu"]
    periods = [b - a for a, b in zip(ticks[measure["n"]:], ticks[measure["n"] + 1:])]
    print(json.dumps({"cpu_share": cpu / seconds, "received": received[0] - measure["received"],
                      "periods": periods}))
    node.destroy_node()
    rclpy.try_shutdown()
""")


def run_once(kind: str, seconds: float) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id()), **{EXECUTOR_ENV: kind})
    return measure_beside(SOURCE, NODE, [str(seconds)], env, timeout=seconds + 60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    p.add_argument("--runs", type=int, default=3, help="runs per executor kind, alternating")
    args = p.parse_args()
    print(f"machine: {describe()}")
    print(f"node: 100 Hz joint_states in (another process), 50 Hz timer publishing; "
          f"{args.runs} x {args.seconds:g} s per executor")
    results: dict[str, list[dict]] = {kind: [] for kind in EXECUTOR_KINDS}
    for _ in range(args.runs):
        for kind in EXECUTOR_KINDS:
            results[kind].append(run_once(kind, args.seconds))
    for kind, runs in results.items():
        cpu = 100.0 * np.array([r["cpu_share"] for r in runs])
        periods = 1e3 * np.concatenate([r["periods"] for r in runs])
        rate = np.mean([r["received"] for r in runs]) / args.seconds
        print(f"{kind:>7}: CPU {np.median(cpu):5.1f} % of a core median, "
              f"{np.percentile(cpu, 99):5.1f} p99; timer period ms median "
              f"{np.median(periods):.2f} p99 {np.percentile(periods, 99):.2f} "
              f"max {periods.max():.2f}; joint_states received {rate:.0f} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
