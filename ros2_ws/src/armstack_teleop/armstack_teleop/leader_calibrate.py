"""Calibrate the leader arm: hold it in a reference pose and print the offset_ticks for its file.

    ros2 run armstack_teleop leader_calibrate [--config robot/leader_dynamixel.yaml] [--port /dev/ttyUSB1]
                                              [--pose 0 0 0 0 0 0 0]

The reference pose (rad / m per leader joint, in the file's order) defaults to all zeros: the
follower's zero pose with the gripper closed. The leader's directions and scales stay as the
file states them (set a direction by moving the joint and watching the follower in the
simulator). The offsets are averaged over `--samples` readings and printed as YAML lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from armstack_common import paths
from armstack_common.servo_config import ServoConfigError, load_servo_config
from armstack_teleop.leader import calibrate_offsets
from armstack_teleop.leader_bus import LeaderBus, LeaderBusError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leader_calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="robot/leader_dynamixel.yaml",
                        help="leader file, absolute or relative to armstack's config/ (default: %(default)s)")
    parser.add_argument("--port", default="", help="serial port (default: the file's)")
    parser.add_argument("--pose", type=float, nargs="+", default=None,
                        help="reference pose per leader joint, rad or m (default: zeros)")
    parser.add_argument("--samples", type=int, default=20, help="readings to average (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = Path(args.config) if Path(args.config).is_absolute() else paths.config_file(args.config)
        leader = load_servo_config(path, paths.urdf_path())
    except (ServoConfigError, FileNotFoundError) as exc:
        print(f"leader_calibrate: {exc}", file=sys.stderr)
        return 1
    pose = np.zeros(len(leader.joints)) if args.pose is None else np.array(args.pose)
    if pose.shape != (len(leader.joints),):
        print(f"leader_calibrate: --pose needs {len(leader.joints)} values ({', '.join(leader.joint_names)})",
              file=sys.stderr)
        return 2
    bus = LeaderBus(leader, args.port or None)
    try:
        bus.connect()
        readings = np.array([bus.read_ticks() for _ in range(max(args.samples, 1))])  # (S, J)
    except LeaderBusError as exc:
        print(f"leader_calibrate: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    offsets = calibrate_offsets(leader, readings.mean(axis=0), pose)
    print(f"# offset_ticks for {path} (reference pose {pose.tolist()}):")
    print("joints:")
    for name, offset in offsets.items():
        print(f"  {name}:\n    offset_ticks: {offset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
