#!/usr/bin/env python3
"""CPU cost of the evaluation's episode runner node (armstack_eval.runner_node) beside a graph.

The runner shares the machine with the graph it evaluates, so what it spends the graph lacks.
A second process publishes what the runner hears from a running graph at the graph's rates:
joint_states at the driver's 200 Hz, joint_command and ee_command at 50 Hz, a diagnostics array
of 8 statuses at 1 Hz. The runner node logs them into an open episode, as during an evaluation.
Prints the machine and, over runs, the median and p99 of the runner process's CPU (% of one
core) and the joint_states rate it received.

    python tools/bench_eval_runner.py [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import numpy as np
from armstack_common.machine import describe
from armstack_common.testing import measure_beside, unique_domain_id

SOURCE = textwrap.dedent("""
    import time
    import rclpy
    from armstack_interfaces.msg import EndEffectorCommand
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import JointState
    from armstack_common.robot_names import JOINT_NAMES

    rclpy.init()
    node = rclpy.create_node("bench_graph")
    states = node.create_publisher(JointState, "joint_states", 50)
    joint_command = node.create_publisher(JointState, "joint_command", 10)
    ee_command = node.create_publisher(EndEffectorCommand, "ee_command", 10)
    diagnostics = node.create_publisher(DiagnosticArray, "diagnostics", 10)
    names = list(JOINT_NAMES)
    tick, next_t = 0, time.monotonic()
    while True:  # 200 Hz; killed by the benchmark
        next_t += 0.005
        tick += 1
        stamp = node.get_clock().now().to_msg()
        state = JointState(name=names, position=[0.1] * 7, velocity=[0.0] * 7, effort=[0.0] * 7)
        state.header.stamp = stamp
        states.publish(state)
        if tick % 4 == 0:
            joint_command.publish(state)
            command = EndEffectorCommand()
            command.header.stamp = stamp
            ee_command.publish(command)
        if tick % 200 == 0:
            array = DiagnosticArray()
            array.header.stamp = stamp
            array.status = [DiagnosticStatus(name=f"node{i}: status", values=[
                KeyValue(key=f"key{k}", value="1.0") for k in range(8)]) for i in range(8)]
            diagnostics.publish(array)
        time.sleep(max(0.0, next_t - time.monotonic()))
""")

RUNNER = textwrap.dedent("""
    import json, sys, time
    import rclpy
    from rclpy.context import Context
    from armstack_eval.episode import EpisodeLog
    from armstack_eval.runner_node import EpisodeRunnerNode

    seconds = float(sys.argv[1])
    context = Context()
    rclpy.init(context=context)
    log = EpisodeLog()
    log.open(time.time(), "ee_command")
    node = EpisodeRunnerNode(context, log)
    time.sleep(3.0)  # discovery and the first messages
    cpu, seen = time.process_time(), node.joint_states_seen()
    time.sleep(seconds)
    cpu, seen = time.process_time() - cpu, node.joint_states_seen() - seen
    print(json.dumps({"cpu_share": cpu / seconds, "joint_states_hz": seen / seconds}))
    node.close()
    rclpy.try_shutdown(context=context)
""")


def run_once(seconds: float) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id("bench_eval_runner")))
    return measure_beside(SOURCE, RUNNER, [str(seconds)], env, timeout=seconds + 60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    p.add_argument("--runs", type=int, default=3, help="runs")
    args = p.parse_args()
    print(f"machine: {describe()}")
    print("runner node hearing joint_states 200 Hz, joint_command and ee_command 50 Hz, "
          f"diagnostics 1 Hz; {args.runs} x {args.seconds:g} s")
    runs = [run_once(args.seconds) for _ in range(args.runs)]
    cpu = 100.0 * np.array([r["cpu_share"] for r in runs])
    rate = np.median([r["joint_states_hz"] for r in runs])
    print(f"runner CPU {np.median(cpu):.1f} % of a core median, {np.percentile(cpu, 99):.1f} p99; "
          f"joint_states received {rate:.0f} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
