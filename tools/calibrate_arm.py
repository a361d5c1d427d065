#!/usr/bin/env python3
"""Calibrate a real arm's servo map: offsets, directions and the gripper's ticks per metre.

With every servo's torque off, you pose the arm by hand; the tool reads present positions and
writes a copy of dynamixel.yaml (comments kept) with the measured values:

1. the reference pose (default: every joint at 0 as in the URDF, gripper closed) gives each
   joint's offset_ticks;
2. moving each joint in turn in its positive direction gives its direction (the sign of the
   change); opening the gripper fully (URDF upper limit) gives ticks_per_metre.

    source .venv/armstack_env.sh
    python tools/calibrate_arm.py --port /dev/ttyUSB0              # -> config/robot/dynamixel.calibrated.yaml
    python tools/calibrate_arm.py --port /dev/ttyUSB0 --output config/robot/dynamixel.yaml

Stop the driver first (one program per port). The tool applies the driver's own bus setup
(armstack_driver.bus: Homing Offset 0, Drive Mode 0, operating modes), so the ticks it reads are
the ones the driver will convert.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from armstack_common import paths
from armstack_common.servo_config import ServoBusConfig, load_servo_config

MIN_MOVE_TICKS = 200  # ~17 degrees: a deliberate move, not a wobble
MAX_SPREAD_TICKS = 20  # samples of one pose must agree this well (the arm held still)


class CalibrationError(RuntimeError):
    pass


def axis_hints(urdf: Path) -> dict[str, str]:
    """Per joint, how its positive direction looks (from the URDF axis)."""
    words = {
        "z": "counter-clockwise seen from above",
        "y": "pitching forward / down (right-hand rule about +y, the arm's left)",
        "x": "rolling clockwise seen from behind, looking along +x",
    }
    hints = {}
    for joint in ET.parse(urdf).getroot().iter("joint"):
        axis_el = joint.find("axis")
        axis = np.array([float(v) for v in axis_el.attrib["xyz"].split()]) if axis_el is not None else None
        if joint.attrib.get("type") == "prismatic":
            hints[joint.attrib["name"]] = "opening the gripper fully"
        elif axis is not None:
            k = int(np.argmax(np.abs(axis)))
            text = words["xyz"[k]]
            hints[joint.attrib["name"]] = text if axis[k] > 0 else f"the opposite of {text}"
    return hints


def read_pose(bus, samples: int) -> np.ndarray:
    """(J,) mean present ticks over `samples` sync reads; refuses a moving arm."""
    rows = []
    for _ in range(samples):
        for _attempt in range(bus.options.io_attempts):
            reading = bus.read_state()
            if reading.ok:
                break
        else:
            raise CalibrationError(f"sync read failed {bus.options.io_attempts} times: {reading.failures}")
        rows.append(reading.ticks)
        time.sleep(0.02)
    rows = np.array(rows)  # (samples, J)
    spread = rows.max(axis=0) - rows.min(axis=0)
    if spread.max() > MAX_SPREAD_TICKS:
        moving = [bus.config.joints[k].joint for k in np.flatnonzero(spread > MAX_SPREAD_TICKS)]
        raise CalibrationError(f"the arm moved while being read ({', '.join(moving)}): hold it still")
    return rows.mean(axis=0)


def prompt(text: str) -> None:
    print(f"{text}\n  ... then press Enter", flush=True)
    if sys.stdin.readline() == "":
        raise CalibrationError("input closed")


def measure(bus, reference: np.ndarray, samples: int, attempts: int = 3) -> dict[str, dict[str, float]]:
    """Interactive part: {joint: {offset_ticks, direction[, ticks_per_metre]}}."""
    config: ServoBusConfig = bus.config
    hints = axis_hints(paths.urdf_path())
    pose_text = ", ".join(f"{j.joint}={q:g}" for j, q in zip(config.joints, reference, strict=True))

    def reference_step() -> np.ndarray:
        prompt(f"Pose the arm at the reference pose ({pose_text})")
        return read_pose(bus, samples)

    ref_ticks = _with_retries(reference_step, attempts)
    results: dict[str, dict[str, float]] = {}
    previous = ref_ticks
    for k, joint in enumerate(config.joints):
        target = joint.max_position if joint.prismatic else None
        hint = hints.get(joint.joint, "its positive direction")
        text = (f"Move {joint.joint} (id {joint.servo_id}) {hint}" if joint.prismatic else
                f"Move {joint.joint} (id {joint.servo_id}) by about a quarter turn, {hint}")

        def step(text=text, previous=previous, k=k):
            prompt(text + "; keep the other joints still")
            ticks = read_pose(bus, samples)
            if abs(ticks[k] - previous[k]) < MIN_MOVE_TICKS:
                raise CalibrationError(f"{config.joints[k].joint} moved only "
                                       f"{abs(ticks[k] - previous[k]):.0f} ticks (need {MIN_MOVE_TICKS})")
            return ticks

        ticks = _with_retries(step, attempts)
        delta = ticks[k] - previous[k]
        direction = 1 if delta > 0 else -1
        entry: dict[str, float] = {"direction": direction}
        per_unit = joint.ticks_per_unit
        if joint.prismatic and target:
            per_unit = abs(ticks[k] - ref_ticks[k]) / (target - reference[k])
            entry["ticks_per_metre"] = round(per_unit, 1)
        entry["offset_ticks"] = round(float(ref_ticks[k] - direction * per_unit * reference[k]))
        results[joint.joint] = entry
        previous = ticks
    return results


def _with_retries(action, attempts: int):
    """Run `action`, repeating it after a CalibrationError (the user tries again)."""
    for _ in range(attempts - 1):
        try:
            return action()
        except CalibrationError as exc:
            if str(exc) == "input closed":
                raise
            print(f"  {exc}; once more.", flush=True)
    return action()


def rewrite_yaml(text: str, results: dict[str, dict[str, float]]) -> str:
    """The YAML text with each joint's measured keys replaced (inserted after its `id:` line
    when absent); every other line, comments included, stays as it was."""
    out: list[str] = []
    in_joints = False
    pending: dict[str, float] = {}  # keys of the current joint not written yet
    id_line = -1  # index in `out` of the current joint's id line
    indent = "    "

    def insert_missing() -> None:
        for offset, (key, value) in enumerate(pending.items(), start=1):
            out.insert(id_line + offset, f"{indent}{key}: {_fmt(value)}")
        pending.clear()

    for line in text.splitlines():
        if re.match(r"^joints:", line):
            in_joints = True
        elif in_joints and (m := re.match(r"^  (\w+):\s*(#.*)?$", line)):
            insert_missing()
            pending = dict(results.get(m.group(1), {}))
        elif in_joints and re.match(r"^\S", line):
            insert_missing()
            in_joints = False
        elif in_joints and (m := re.match(r"^(\s+)(\w+):(\s*)([^#\s]+)(.*)$", line)):
            indent, key = m.group(1), m.group(2)
            if key == "id":
                id_line = len(out)
            if key in pending:
                line = f"{indent}{key}:{m.group(3) or ' '}{_fmt(pending.pop(key))}{m.group(5)}"
        out.append(line)
    insert_missing()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"# Calibrated by tools/calibrate_arm.py on {stamp}.\n" + "\n".join(out) + "\n"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None,
                        help="bus file to start from (default: config/robot/dynamixel.yaml)")
    parser.add_argument("--port", help="serial port (default: the file's port)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write (default: dynamixel.calibrated.yaml next to --config)")
    parser.add_argument("--reference", default=None,
                        help="reference pose, comma-separated joint values in file order (default: zeros)")
    parser.add_argument("--samples", type=int, default=10, help="sync reads averaged per pose")
    parser.add_argument("--io-attempts", type=int, default=3,
                        help="tries of a setup read/write whose reply is lost (noisy bus)")
    args = parser.parse_args()

    from armstack_driver.bus import BusError, BusOptions, DynamixelBus

    source = args.config or paths.config_file("robot/dynamixel.yaml")
    output = args.output or source.with_name("dynamixel.calibrated.yaml")
    config = load_servo_config(source, paths.urdf_path())
    reference = np.zeros(len(config.joints))
    if args.reference:
        reference = np.array([float(v) for v in args.reference.split(",")])
        if reference.shape != (len(config.joints),) or not np.all(np.isfinite(reference)):
            parser.error(f"--reference needs {len(config.joints)} numbers")
    try:
        options = BusOptions(io_attempts=args.io_attempts)
    except ValueError as exc:
        parser.error(str(exc))
    bus = DynamixelBus(config, args.port, options)
    try:
        bus.connect()
        bus.configure()
        failed = bus.disable_torque()
        if failed:
            raise BusError(f"torque off not confirmed: {failed}")
        print(f"Connected to {len(config.joints)} servos on {bus.port_name}; torque is off.", flush=True)
        results = measure(bus, reference, args.samples)
    except (BusError, CalibrationError) as exc:
        print(f"calibration failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.disconnect()
    output.write_text(rewrite_yaml(source.read_text(), results))
    load_servo_config(output, paths.urdf_path())  # the result must be a valid bus file
    for name, entry in results.items():
        print(f"  {name:13s} " + "  ".join(f"{k}={_fmt(v)}" for k, v in entry.items()))
    print(f"Wrote {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
