"""The graph split over two hosts: two Linux network namespaces joined by a veth pair.

Host A (the robot computer) runs the simulator (camera topics, servo bus), perception
(detector with a tiny generated model, localization) and the driver; host B (a motion
computer) runs the IK node. A probe node in each namespace subscribes to the camera image,
detections, objects, joint_states and joint_command; the probe on B also commands the arm's
current pose on ee_command (as a policy would), so IK on B drives the driver on A.

What it shows: discovery and data over the veth with Fast DDS's defaults, as a user runs it
(SPDP multicast works on the veth with only the /24's connected route: no default route, no
XML profile, no ROS_STATIC_PEERS); the motion loop across hosts; and the latency the network
hop adds: for each message received on both hosts, arrival on B minus arrival on A (same
machine, same clock). The veth's byte counter proves the images crossed it rather than
Fast DDS's shared memory (/dev/shm is common to all namespaces of a machine). On one host the
images go through shared memory (host a's loopback carries almost nothing), across hosts
through UDP: most of the added time is that switch, not the veth. Forcing
FASTDDS_BUILTIN_TRANSPORTS=UDPv4 on every process makes the same-host figure about equal to
the cross-host one (measured on the 2-core development machine).

Needs root (ip netns); skipped with the reason otherwise. Namespaces are always deleted.
Figures are printed (run with -s), not asserted: timings belong to benchmarks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FRAME_BYTES = 640 * 480 * 3  # one rgb8 frame of the simulated camera
PROBE_TOPICS = {  # topic -> (message type, QoS kind)
    "camera/color/image_raw": ("sensor_msgs/msg/Image", "image"),
    "detections": ("vision_msgs/msg/Detection2DArray", "results"),
    "objects": ("vision_msgs/msg/Detection3DArray", "results"),
    "joint_states": ("sensor_msgs/msg/JointState", "default"),
    "joint_command": ("sensor_msgs/msg/JointState", "default"),
}
MEASURE_S = 10.0


# --- the probe: runs inside a namespace as `python test_multihost_netns.py probe ...` -------

def probe_main(out_path: str, duration: float, command: bool) -> None:
    """Record (header stamp, arrival) of every message on PROBE_TOPICS for `duration` s after
    the first camera frame, then write them to out_path as JSON (ns integers)."""
    import importlib

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node(f"probe_{os.getpid()}")
    qos = {"image": QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
           "results": QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
           "default": QoSProfile(depth=10)}
    seen: dict[str, list[tuple[int, int]]] = {t: [] for t in PROBE_TOPICS}

    def record(msg: Any, topic: str) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        seen[topic].append((stamp, time.time_ns()))

    for topic, (type_name, kind) in PROBE_TOPICS.items():
        package, _, name = type_name.split("/")
        cls = getattr(importlib.import_module(f"{package}.msg"), name)
        node.create_subscription(cls, topic, lambda m, t=topic: record(m, t), qos[kind])
    if command:
        from test_monitoring_layouts import command_current_pose

        command_current_pose(node)
    deadline = time.monotonic() + 60.0  # discovery and start-up, bounded
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if seen["camera/color/image_raw"]:
            deadline = min(deadline, time.monotonic() + duration)
    Path(out_path).write_text(json.dumps(seen))
    node.destroy_node()
    rclpy.shutdown()


# --- the two hosts --------------------------------------------------------------------------

class TwoHosts:
    """Network namespaces a and b joined by a veth pair (a: 10.231.0.1, b: 10.231.0.2),
    named after the test process's pid."""

    def __init__(self, tag: str) -> None:
        self.ns = (f"armstack_{tag}_a", f"armstack_{tag}_b")
        self.links = (f"as{tag}a", f"as{tag}b")  # interface names: 15 characters at most
        self.addrs = ("10.231.0.1/24", "10.231.0.2/24")

    def create(self) -> None:
        """Raises CalledProcessError (with ip's message) where namespaces are not permitted."""
        _ip("netns", "add", self.ns[0])
        _ip("netns", "add", self.ns[1])
        _ip("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
        for ns, link, addr in zip(self.ns, self.links, self.addrs, strict=True):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", addr, "dev", link)
            _ip("-n", ns, "link", "set", "lo", "up")  # nodes on one host talk over loopback
            _ip("-n", ns, "link", "set", link, "up")

    def tx_bytes(self, host: int, link: str | None = None) -> int:
        """Bytes sent so far on host's end of the veth (or on another of its interfaces)."""
        [stats] = json.loads(_ip("-j", "-s", "-n", self.ns[host], "link", "show", "dev",
                                 link or self.links[host]))
        return int(stats["stats64"]["tx"]["bytes"])

    def close(self) -> None:
        for ns in self.ns:  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @staticmethod
    def remove_stale() -> None:
        """Namespaces left by a run that was killed before its clean-up (its pid is gone)."""
        listed = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
        for entry in json.loads(listed.stdout or "[]"):
            match = re.fullmatch(r"armstack_(\d+)_[ab]", entry["name"])
            if match and not Path(f"/proc/{match.group(1)}").exists():
                subprocess.run(["ip", "netns", "del", entry["name"]], capture_output=True)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class InNamespace:
    """A command run with `ip netns exec`; stopped with SIGINT like a terminal's Ctrl-C."""

    def __init__(self, ns: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                     cwd=REPO)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()


def launch_files(tmp: Path) -> tuple[Path, Path]:
    """Host a: sim + perception + driver; host b: the IK node."""
    from test_monitoring_layouts import tiny_detector

    link = str(tmp / "servo_bus")
    config = REPO / "config"
    robot = [
        {"include": {"file": str(REPO / "launch/sim.launch.yaml"), "arg": [
            {"name": "seed", "value": "3"}, {"name": "camera_rate", "value": "15.0"},
            {"name": "servo_port_link", "value": link}]}},
        {"include": {"file": str(REPO / "launch/perception.launch.yaml"), "arg": [
            {"name": "camera", "value": "sim"},
            {"name": "detector_model", "value": tiny_detector(tmp / "center_box.onnx")}]}},
        {"node": {"pkg": "armstack_driver", "exec": "driver_node", "name": "driver",
                  "param": [{"from": str(config / "driver.yaml")},
                            {"name": "port", "value": link}]}},
    ]
    motion = [{"node": {"pkg": "armstack_ik", "exec": "ik_node", "name": "ik",
                        "param": [{"from": str(config / "ik.yaml")}]}}]
    files = (tmp / "robot_host.launch.yaml", tmp / "motion_host.launch.yaml")
    for path, entities in zip(files, (robot, motion), strict=True):
        path.write_text(yaml.safe_dump({"launch": entities}, sort_keys=False))
    return files


@pytest.fixture(scope="module")
def split_graph(tmp_path_factory):
    """Runs both hosts and a probe on each; yields the probes' records on a and on b, the bytes
    host a sent on (veth, loopback) meanwhile, and the hosts' launch logs."""
    pytest.importorskip("rclpy")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed")
    from graph import unique_domain_id

    tmp = tmp_path_factory.mktemp("netns")
    TwoHosts.remove_stale()
    hosts = TwoHosts(str(os.getpid()))
    try:
        hosts.create()
    except subprocess.CalledProcessError as exc:
        hosts.close()
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id()), PYTHONUNBUFFERED="1")
    launcher = [sys.executable, "-m", "armstack_bringup.cli", "launch"]
    running: list[InNamespace] = []
    try:
        robot_file, motion_file = launch_files(tmp)
        running.append(InNamespace(hosts.ns[0], [*launcher, str(robot_file)], tmp / "a.log", env))
        running.append(InNamespace(hosts.ns[1], [*launcher, str(motion_file)], tmp / "b.log", env))
        before = hosts.tx_bytes(0), hosts.tx_bytes(0, "lo")
        probes = []
        for host, mode in ((0, "listen"), (1, "command")):
            out = tmp / f"probe_{host}.json"
            argv = [sys.executable, __file__, "probe", str(out), str(MEASURE_S), mode]
            probes.append((out, InNamespace(hosts.ns[host], argv, tmp / f"probe_{host}.log", env)))
            running.append(probes[-1][1])
        for out, probe in probes:
            probe.proc.wait(timeout=90.0)
            assert out.exists(), f"probe failed:\n{probe.log()}\nhost logs:\n" + "\n".join(
                r.log()[-2000:] for r in running)
        records = [json.loads(out.read_text()) for out, _ in probes]
        sent = hosts.tx_bytes(0) - before[0], hosts.tx_bytes(0, "lo") - before[1]
        yield records[0], records[1], sent, [r.log() for r in running]
    finally:
        for process in reversed(running):
            process.stop()
        hosts.close()


def _latencies_ms(records: list[list[int]]) -> np.ndarray:
    return np.array([(arrival - stamp) / 1e6 for stamp, arrival in records])


def _paired_delay_ms(a: list[list[int]], b: list[list[int]]) -> np.ndarray:
    """For each stamp received on both hosts: arrival on b minus arrival on a."""
    first_a = {}
    for stamp, arrival in a:
        first_a.setdefault(stamp, arrival)
    return np.array([(arrival - first_a[stamp]) / 1e6 for stamp, arrival in b if stamp in first_a])


def test_perception_reaches_the_other_host_over_the_veth(split_graph):
    on_a, on_b, (veth_bytes, _), logs = split_graph
    for topic in ("camera/color/image_raw", "detections", "objects", "joint_states"):
        assert on_a[topic], f"{topic} not received on its own host a:\n{logs[0][-3000:]}"
        assert on_b[topic], f"{topic} published on host a never reached host b"
    frames_b = len(on_b["camera/color/image_raw"])
    assert veth_bytes >= 0.9 * FRAME_BYTES * frames_b, (
        f"{frames_b} frames reached b but only {veth_bytes} bytes left a's veth: "
        "they did not cross the network")


def test_motion_side_on_the_other_host_commands_the_driver(split_graph):
    on_a, on_b, _, logs = split_graph
    assert on_b["joint_command"], f"IK on host b published no joint_command:\n{logs[1][-3000:]}"
    assert on_a["joint_command"], "joint_command from host b never reached the driver's host a"
    assert np.all(_latencies_ms(on_a["joint_command"]) > 0)


def test_added_latency_of_the_network_hop(split_graph):
    on_a, on_b, (veth_bytes, lo_bytes), _ = split_graph
    print(f"\nhost a sent {veth_bytes / 1e6:.1f} MB on the veth, {lo_bytes / 1e6:.1f} MB on "
          "loopback; "
          f"{len(on_a['camera/color/image_raw'])} frames of {FRAME_BYTES / 1e6:.2f} MB reached "
          f"the probe on a, {len(on_b['camera/color/image_raw'])} the probe on b")
    print(f"\n{'topic':<24}{'same host p50/p95 ms':>22}{'other host p50/p95 ms':>23}"
          f"{'added p50/p95 ms':>18}{'frames':>8}")
    for topic in ("camera/color/image_raw", "detections", "objects", "joint_states"):
        same, other = _latencies_ms(on_a[topic]), _latencies_ms(on_b[topic])
        added = _paired_delay_ms(on_a[topic], on_b[topic])
        assert len(added) >= 3, f"{topic}: only {len(added)} messages seen on both hosts"
        assert np.all(np.isfinite(added)) and np.all(same > 0) and np.all(other > 0)
        row = [np.percentile(x, q) for x in (same, other, added) for q in (50, 95)]
        print(f"{topic:<24}{row[0]:>12.1f}/{row[1]:<9.1f}{row[2]:>13.1f}/{row[3]:<9.1f}"
              f"{row[4]:>8.1f}/{row[5]:<9.1f}{len(added):>6}")


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    probe_main(sys.argv[2], float(sys.argv[3]), sys.argv[4] == "command")
