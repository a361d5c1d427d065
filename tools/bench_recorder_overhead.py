#!/usr/bin/env python3
"""Does recording disturb control? Period jitter of a 50 Hz control timer, recorder off vs on.

Three processes on one machine, in a private ROS domain and namespace:
- a sensor publisher (this script with --role sensors): camera images (640x480 rgb8) and
  objects at 30 Hz, joint_states and joint_command at 50 Hz, each stamped;
- the control loop (this process): an rclpy node with a 50 Hz timer that reads joint_states
  and publishes a command each tick, as the ik or driver node does; it logs every tick's time;
- the recorder node (armstack_recorder recorder_node) with config/recorder.yaml (codec and
  preset overridable): not running ("off"), running but not recording ("idle": it receives
  and buffers every stream), recording an episode ("on").
Phases cycle off/idle/on `--rounds` times so drifting background load spreads over all three.
Jitter = |tick period - 20 ms|; reported as median / p99 / max per condition, plus the
recorder's own episode reports (frames, drops, effective rate).

    source .venv/armstack_env.sh
    python tools/bench_recorder_overhead.py --seconds 10 --rounds 4 [--codec libsvtav1 --preset 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from armstack_common.machine import cpu_model
from armstack_common.robot_names import JOINT_NAMES

PERIOD = 0.02  # s, the control loop's period
_REPO = Path(__file__).resolve().parents[1]


def recorder_command() -> list[str]:
    from ament_index_python.packages import get_package_prefix

    script = Path(get_package_prefix("armstack_recorder")) / "lib/armstack_recorder/recorder_node"
    return [str(script)] if script.is_file() else \
        [sys.executable, "-m", "armstack_recorder.recorder_node"]


# ---------------------------------------------------------------------- sensor publisher


def run_sensors(namespace: str, width: int, height: int) -> None:
    """Publish the robot's streams until SIGINT/SIGTERM; stamps are capture times."""
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image, JointState
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    rclpy.init()
    node = rclpy.create_node("bench_sensors", namespace=namespace)
    pubs = {"joint_states": node.create_publisher(JointState, "joint_states", 10),
            "joint_command": node.create_publisher(JointState, "joint_command", 10),
            "image": node.create_publisher(Image, "camera/color/image_raw", 10),
            "objects": node.create_publisher(Detection3DArray, "objects", 10)}
    rng = np.random.default_rng(0)
    # a few distinct frames, so the encoder sees motion rather than one still image
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes() for _ in range(8)]
    count = [0]

    def stamp() -> Time:
        ns = node.get_clock().now().nanoseconds
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def joints(topic: str) -> None:
        msg = JointState(name=list(JOINT_NAMES), position=[0.1 * i for i in range(7)])
        msg.header.stamp = stamp()
        pubs[topic].publish(msg)

    def camera() -> None:
        now = stamp()
        img = Image(height=height, width=width, encoding="rgb8", step=width * 3)
        img.header.stamp, img.data = now, frames[count[0] % len(frames)]
        count[0] += 1
        pubs["image"].publish(img)
        array = Detection3DArray()
        array.header.stamp, array.header.frame_id = now, "base_link"
        det = Detection3D()
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = "red_cube", 0.9
        det.results.append(hyp)
        array.detections.append(det)
        pubs["objects"].publish(array)

    node.create_timer(PERIOD, lambda: joints("joint_states"))
    node.create_timer(PERIOD, lambda: joints("joint_command"))
    node.create_timer(1 / 30, camera)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


# ---------------------------------------------------------------------- control loop


class ControlLoop:
    """A 50 Hz timer that reads joint_states and publishes a command, logging tick times."""

    def __init__(self, namespace: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_control", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._latest: JointState | None = None
        self._pub = self.node.create_publisher(JointState, "bench/command", 10)
        self.node.create_subscription(JointState, "joint_states", self._on_state, 10)
        self.ticks: list[float] = []
        self.recording = False
        self.node.create_timer(PERIOD, self._tick)
        self.reports: list[dict] = []
        self.node.create_subscription(String, "recorder/episode_report",
                                      lambda m: self.reports.append(json.loads(m.data)), 10)
        self.clients = {name: self.node.create_client(Trigger, f"recorder/{name}")
                        for name in ("start", "save")}

    def _on_state(self, msg) -> None:
        self._latest = msg

    def _tick(self) -> None:
        self.ticks.append(time.monotonic())
        if self._latest is not None:
            self._pub.publish(self._latest)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.002)

    def measure(self, seconds: float) -> np.ndarray:
        """|period - PERIOD| of every tick in `seconds`, in ms."""
        self.ticks = []
        self.spin_for(seconds)
        return np.abs(np.diff(self.ticks) - PERIOD) * 1e3

    def call(self, name: str, timeout: float = 60.0) -> tuple[bool, str]:
        from std_srvs.srv import Trigger

        client = self.clients[name]
        end = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > end:
                raise TimeoutError(f"recorder/{name} not available")
            self.spin_for(0.05)
        future = client.call_async(Trigger.Request())
        while not future.done():
            if time.monotonic() > end:
                raise TimeoutError(f"no answer from recorder/{name}")
            self.spin_for(0.01)
        result = future.result()
        return result.success, result.message

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(jitter_ms: np.ndarray) -> str:
    return (f"median {np.median(jitter_ms):6.3f} ms   p99 {np.percentile(jitter_ms, 99):6.3f} ms"
            f"   max {jitter_ms.max():7.3f} ms   ({jitter_ms.size} periods)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--codec", choices=("libsvtav1", "libx264"),
                        help="default: config/recorder.yaml's")
    parser.add_argument("--preset", help="encoder preset; default: config/recorder.yaml's")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--role", choices=("bench", "sensors"), default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--namespace", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sensors":
        run_sensors(args.namespace, args.width, args.height)
        return 0

    namespace = f"/bench_recorder_{os.getpid()}"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    tmp = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    sensors = subprocess.Popen([sys.executable, __file__, "--role", "sensors", "--namespace",
                                namespace, "--width", str(args.width), "--height",
                                str(args.height)])
    loop = ControlLoop(namespace)
    off, idle, on, cpu_idle, cpu_on = [], [], [], [], []
    # the preset quoted: ROS parses -p values as YAML, and an SVT-AV1 preset like 12 is a string
    overrides = [arg for key, value in (("video_codec", args.codec),
                                        ("video_preset", None if args.preset is None
                                         else f"'{args.preset}'"))
                 if value is not None for arg in ("-p", f"{key}:={value}")]
    codec = " ".join(overrides[1::2]) or "config/recorder.yaml's video settings"
    try:
        loop.spin_for(2.0)  # discovery, first messages
        for rnd in range(args.rounds):
            off.append(loop.measure(args.seconds))
            recorder = subprocess.Popen(
                [*recorder_command(), "--ros-args", "-r", f"__ns:={namespace}",
                 "--params-file", str(_REPO / "config/recorder.yaml"),
                 "-p", f"dataset_root:={tmp / 'ds'}", *overrides,
                 "-p", f"image_size:=[{args.height}, {args.width}]", "-p", "task:=bench"],
                stdout=subprocess.DEVNULL)
            try:
                loop.spin_for(2.0)  # discovery: the recorder sees every stream before it starts
                before = cpu_seconds(recorder.pid)
                idle.append(loop.measure(args.seconds))
                cpu_idle.append((cpu_seconds(recorder.pid) - before) / args.seconds)
                ok, message = loop.call("start")
                if not ok:
                    raise RuntimeError(f"recorder/start: {message}")
                before = cpu_seconds(recorder.pid)
                on.append(loop.measure(args.seconds))
                cpu_on.append((cpu_seconds(recorder.pid) - before) / args.seconds)
                print(f"round {rnd + 1}: {loop.call('save')[1]}", flush=True)
            finally:
                stop(recorder)
            loop.spin_for(1.0)
    finally:
        loop.close()
        stop(sensors)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{cpu_model()}, {os.cpu_count()} cores; 50 Hz control timer in its own process; "
          f"{args.width}x{args.height} rgb8 at 30 Hz, {codec}; "
          f"{args.rounds} x {args.seconds:.0f} s per condition")
    print(f"recorder off:  {summary(np.concatenate(off))}")
    print(f"recorder idle: {summary(np.concatenate(idle))}")
    print(f"recorder on:   {summary(np.concatenate(on))}")
    print(f"recorder process CPU: idle {np.mean(cpu_idle) * 100:.0f} %, recording "
          f"{np.mean(cpu_on) * 100:.0f} % of one core")
    for report in loop.reports:
        print(f"  episode {report['episode_index']}: {report['frames']} frames, "
              f"{report['effective_rate_hz']} Hz effective, dropped {report['dropped_by_reason']}, "
              f"encoder blocked {report['encoder_blocked_s']} s, save {report['save_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
