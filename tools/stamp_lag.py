#!/usr/bin/env python3
"""How old each message is when it arrives: receive time minus header stamp, per topic, on a
running graph (start it first, e.g. `./armstack launch launch/record.launch.yaml`).

armstack's commands carry the stamp of the observation they answer (so camera-to-bus latency
can be measured), which makes a command's stamp older than its send time. Anything that
orders commands by stamp (a recorder's action clock, a plot) sees them that much early; this
tool measures by how much.

    python tools/stamp_lag.py --seconds 20
    python tools/stamp_lag.py --topics joint_command,objects --namespace /arm_left
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

# topic -> message type, importable by name (module, class)
KNOWN_TOPICS = {
    "joint_states": ("sensor_msgs.msg", "JointState"),
    "joint_command": ("sensor_msgs.msg", "JointState"),
    "ee_command": ("armstack_interfaces.msg", "EndEffectorCommand"),
    "objects": ("vision_msgs.msg", "Detection3DArray"),
    "detections": ("vision_msgs.msg", "Detection2DArray"),
    "camera/color/image_raw": ("sensor_msgs.msg", "Image"),
}


def summary(lags_ms: np.ndarray) -> str:
    return (f"n {len(lags_ms):6d}  median {np.median(lags_ms):7.1f}  p90 "
            f"{np.percentile(lags_ms, 90):7.1f}  p99 {np.percentile(lags_ms, 99):7.1f}  max "
            f"{lags_ms.max():7.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", default="joint_states,joint_command,ee_command",
                        help=f"comma-separated, of {sorted(KNOWN_TOPICS)}")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--namespace", default="", help="of the graph's topics")
    args = parser.parse_args(argv)
    topics = [t for t in args.topics.split(",") if t]
    unknown = [t for t in topics if t not in KNOWN_TOPICS]
    if unknown:
        parser.error(f"unknown topics {unknown}; known: {sorted(KNOWN_TOPICS)}")

    import importlib

    import rclpy  # here: --help works without a ROS environment
    from rclpy.qos import qos_profile_sensor_data

    rclpy.init()
    node = rclpy.create_node("stamp_lag_probe", namespace=args.namespace or None)
    lags: dict[str, list[float]] = {t: [] for t in topics}

    def on_message(topic: str):
        def callback(msg) -> None:
            now = node.get_clock().now().nanoseconds
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if stamp:
                lags[topic].append((now - stamp) / 1e6)
        return callback

    for topic in topics:
        module, name = KNOWN_TOPICS[topic]
        msg_type = getattr(importlib.import_module(module), name)
        # best effort matches both kinds of publisher; a probe must not slow the graph down
        node.create_subscription(msg_type, topic, on_message(topic), qos_profile_sensor_data)
    end = time.monotonic() + args.seconds
    try:
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(f"receive time - header stamp over {args.seconds:.0f} s "
          f"({platform.machine()}, {platform.processor() or 'cpu'}, "
          f"{len(os.sched_getaffinity(0))} cores):")
    for topic in topics:
        values = np.array(lags[topic])
        print(f"{topic:>24}  " + (summary(values) if len(values) else "no messages"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
