#!/usr/bin/env python3
"""Timing of the policy node's 50 Hz control timer, measured on the real node.

Launches policy_node (its own process, a private ROS domain) on a tiny generated policy
(armstack_policy.proof_models: the exported I/O of ACT or Diffusion, negligible compute unless
--chunk/--steps make it bigger) and plays its inputs from this process: joint_states at 100 Hz
and objects at 30 Hz stamped 30 ms in the past, as the camera pipeline would. After --seconds it
prints what the node itself measured (diagnostics: control-period jitter median / p99 / max,
missed periods, inference time) and the joint_command rate seen here.

    source .venv/armstack_env.sh
    python tools/bench_policy_node.py --seconds 60 [--kind diffusion] [--load 1]

--load N runs N busy processes alongside (a shared 2-core machine running detection and IK).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from armstack_common.machine import cpu_model
from armstack_common.stats import RollingStats
from armstack_common.timeutil import sec_to_stamp_fields
from armstack_policy.proof_models import JOINT_NAMES, ProofSpec, write_proof_model
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

DIAGNOSTICS_PERIOD = 1.0  # s


def node_command() -> list[str]:
    from ament_index_python.packages import get_package_prefix

    script = Path(get_package_prefix("armstack_policy")) / "lib" / "armstack_policy" / "policy_node"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "armstack_policy.policy_node"]


def busy() -> None:
    while True:
        sum(i * i for i in range(10000))


class Feeder:
    """joint_states and objects in, joint_command receive times and diagnostics out."""

    def __init__(self, node) -> None:
        self.node = node
        self.received: list[float] = []
        self.diagnostics: dict[str, str] = {}
        self.state_pub = node.create_publisher(JointState, "joint_states", 10)
        self.objects_pub = node.create_publisher(Detection3DArray, "objects", 10)
        node.create_subscription(JointState, "joint_command",
                                 lambda _: self.received.append(time.monotonic()), 10)
        node.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, 10)
        node.create_timer(0.01, self._state)
        node.create_timer(1 / 30, self._objects)

    def _stamp(self, delay: float) -> Time:
        t = self.node.get_clock().now().nanoseconds * 1e-9 - delay
        sec, nanosec = sec_to_stamp_fields(t)
        return Time(sec=sec, nanosec=nanosec)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": policy"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def _state(self) -> None:
        msg = JointState(name=list(JOINT_NAMES), position=[0.1, -0.2, 0.3, 0.0, 0.4, 0.0, 0.01])
        msg.header.stamp = self._stamp(0.0)
        self.state_pub.publish(msg)

    def _objects(self) -> None:
        msg = Detection3DArray()
        msg.header.stamp = self._stamp(0.03)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = "red_cube", 0.9
        hypothesis.pose.pose.position.x = 0.3
        det = Detection3D()
        det.results.append(hypothesis)
        msg.detections.append(det)
        self.objects_pub.publish(msg)


def run(args: argparse.Namespace, model: Path) -> tuple[dict[str, str], list[float], str]:
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [*node_command(), "--ros-args", "-p", f"model_path:={model}", "-p", "start_running:=true",
         "-p", f"chunk_mode:={args.mode}", "-p", f"diagnostics_period:={DIAGNOSTICS_PERIOD}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_policy_feeder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    feeder = Feeder(node)
    try:
        deadline = time.monotonic() + 30.0
        while not feeder.received:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("policy_node produced no joint_command:\n"
                                   + Path(log.name).read_text())
            executor.spin_once(timeout_sec=0.01)
        # The node's statistics run from its start (a 60 s window at 50 Hz); one more report
        # after the measured time covers all of it.
        start = time.monotonic()
        while time.monotonic() < start + args.seconds + 1.5 * DIAGNOSTICS_PERIOD:
            executor.spin_once(timeout_sec=0.01)
        received = [t for t in feeder.received if start <= t <= start + args.seconds]
        return feeder.diagnostics, received, Path(log.name).read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10.0)
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        os.unlink(log.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time (<= 60 s "
                        "is fully covered by the node's statistics window)")
    parser.add_argument("--kind", choices=("act", "diffusion"), default="act")
    parser.add_argument("--chunk", type=int, default=100, help="chunk size (actions)")
    parser.add_argument("--mode", default="async_latency_compensated",
                        help="chunk_mode parameter of the node")
    parser.add_argument("--load", type=int, default=0, help="busy processes alongside")
    args = parser.parse_args()
    spec = ProofSpec(kind=args.kind, chunk_size=args.chunk,
                     n_obs_steps=2 if args.kind == "diffusion" else 1,
                     num_inference_steps=10)
    loaders = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.load)]
    for p in loaders:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = write_proof_model(tmp, spec).path
            values, received, log = run(args, model)
    finally:
        for p in loaders:
            p.terminate()
    if not values:
        print(f"no diagnostics received; node log:\n{log}")
        return 1
    ticks = int(values["control_ticks"])
    missed = int(values["missed_periods"])
    minutes = ticks * 0.02 / 60.0
    periods = RollingStats(len(received) or 1)
    for a, b in zip(received[:-1], received[1:], strict=True):
        periods.add((b - a) * 1e3)
    seen = periods.summary()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.load} busy process(es) alongside")
    print(f"policy: proof {args.kind}, chunk {args.chunk}, mode {args.mode}; node ran {ticks} "
          f"control ticks ({ticks * 0.02:.0f} s)")
    jitter = {k: float(values[f"control_jitter_ms_{k}"]) for k in ("median", "p99", "max")}
    print(f"control-period jitter |period - 20 ms| (node): median {jitter['median']:.3f} ms, "
          f"p99 {jitter['p99']:.3f} ms, max {jitter['max']:.3f} ms")
    print(f"missed periods: {missed} ({missed / minutes:.2f} per minute)")
    print(f"inference (node): median {float(values['inference_ms_median']):.3f} ms, "
          f"p99 {float(values['inference_ms_p99']):.3f} ms; "
          f"chunks accepted {values['chunks_accepted']}, holds (dry) {values['hold_dry']}")
    print(f"joint_command received here: {len(received) / args.seconds:.2f} Hz, interval "
          f"median {seen['median']:.2f} ms, p99 {seen['p99']:.2f} ms, max {seen['max']:.2f} ms "
          "(includes DDS and this process's own scheduling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
