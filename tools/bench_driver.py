#!/usr/bin/env python3
"""Driver cycle figures over the emulated servo bus.

Runs the driver's own bus loop (armstack_driver.loop.DriverLoop: sync read + safety + sync write,
the code the node runs, without ROS) against the simulator's hardware loop (MuJoCo physics with
the Dynamixel bus emulator in the loop, armstack_sim.runtime.SimRuntime), which is started in a
child process (so the two do not share a GIL, as with the simulator node) with wire timing on:
replies are never faster than the physical bus at the configured baud rate.
The arm follows a 0.5 Hz sine command streamed at 50 Hz with header stamps, so command latency is
measured too.

Reports median / p99 of the sync read, the sync write and the whole cycle, period jitter, missed
cycles at the target rate, the simulator's physics step time (its budget: 2 ms, one step) and
real-time ratio, and the machine (nproc, CPU model, load).

    source .venv/armstack_env.sh
    python tools/bench_driver.py                     # 60 s at 200 Hz
    python tools/bench_driver.py --rate 100 --duration 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from armstack_common.machine import cpu_model
from armstack_common.servo_config import ServoBusConfig, load_default_servo_config

STEP_STATS_WINDOW = 100_000  # physics steps kept for the figures (200 s at 500 Hz)


def serve(wire_timing: bool) -> None:
    """Child process: the simulator's hardware loop (armstack_sim.runtime.SimRuntime: MuJoCo
    physics with the emulated servos in the loop, paced to the wall clock, as in the sim node)
    until stdin closes; then one JSON line with its physics step figures."""
    from armstack_sim.dynamixel_bus import DynamixelBusEmulator, EmulatorOptions
    from armstack_sim.runtime import RuntimeConfig, SimRuntime
    from armstack_sim.world import SimConfig, SimWorld

    sys.setswitchinterval(0.0005)  # the serial thread must not wait for the physics thread
    config = load_default_servo_config()
    world = SimWorld(SimConfig())
    world.reset(0)
    bus = DynamixelBusEmulator(config, EmulatorOptions(wire_timing=wire_timing)).start()
    runtime = SimRuntime(world, bus, config, RuntimeConfig(step_stats_window=STEP_STATS_WINDOW))
    thread = threading.Thread(target=runtime.run_realtime, daemon=True)
    thread.start()
    print(bus.port_path, flush=True)
    start, steps_before = time.monotonic(), runtime.steps
    sys.stdin.read()  # the parent closes stdin when done
    ratio = runtime.real_time_ratio(time.monotonic() - start, steps_before)
    runtime.stop()
    thread.join()
    bus.stop()
    print(json.dumps({"physics_step_us": {k: round(v, 1) for k, v in
                                          runtime.step_time_us.summary().items()},
                      "physics_real_time_ratio": round(ratio, 3)}), flush=True)


def machine() -> dict[str, object]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def run(config: ServoBusConfig, port: str, rate_hz: float, duration_s: float) -> dict[str, object]:
    from armstack_driver.bus import DynamixelBus
    from armstack_driver.loop import DriverLoop, LoopConfig
    from armstack_driver.safety import JointLimits, MotionSupervisor, SafetyConfig, check_command

    bus = DynamixelBus(config, port)
    bus.connect()
    bus.configure()
    limits = JointLimits.from_servo_config(config)
    window = int(rate_hz * duration_s) + 100  # every cycle of the run in the statistics
    loop = DriverLoop(bus, MotionSupervisor(limits, SafetyConfig()),
                      LoopConfig(rate_hz=rate_hz, stats_window=window),
                      publish_state=lambda sample: None, publish_latency=lambda seconds: None)
    loop.start()
    try:
        ok, message = loop.request("enable")
        if not ok:
            raise RuntimeError(message)
        before = loop.status()
        names = list(config.joint_names)
        start = time.monotonic()
        while time.monotonic() - start < duration_s:
            t = time.monotonic() - start
            target = np.zeros(len(names))
            target[:6] = 0.4 * math.sin(2 * math.pi * 0.5 * t)
            target[6] = 0.015 + 0.01 * math.sin(2 * math.pi * 0.5 * t)
            check = check_command(names, target.tolist(), limits, SafetyConfig())
            loop.post_command(check, time.monotonic(), time.time())
            time.sleep(0.02)
        status = loop.status()
    finally:
        loop.stop()
        bus.disable_torque()
        bus.disconnect()
    return {
        "rate_hz": rate_hz,
        "duration_s": duration_s,
        "cycles": status.cycles - before.cycles,
        "missed_cycles": status.missed_cycles - before.missed_cycles,
        "read_failures": status.read_failures,
        "mode_at_end": status.mode,
        **{f"{name}_ms": {k: round(v, 3) for k, v in stats.items()} for name, stats in (
            ("sync_read", status.read_ms), ("sync_write", status.write_ms),
            ("cycle", status.cycle_ms), ("period", status.period_ms), ("jitter", status.jitter_ms),
            ("command_latency", status.latency_ms))},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="loop rate [Hz] (default 200)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured run [s] (default 60)")
    parser.add_argument("--no-wire-timing", action="store_true",
                        help="emulator answers at once (software alone, not a physical bus)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(not args.no_wire_timing)
        return 0

    sys.setswitchinterval(0.0005)  # as the driver node's main() does
    config = load_default_servo_config()
    child_args = [sys.executable, __file__, "--serve"] + (["--no-wire-timing"] if args.no_wire_timing else [])
    emulator = subprocess.Popen(child_args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = emulator.stdout.readline().strip()
        if not port:
            raise RuntimeError("the emulator process did not report its port")
        figures = {"machine": machine(), "wire_timing": not args.no_wire_timing,
                   "baudrate": config.baudrate, "servos": len(config.joints),
                   **run(config, port, args.rate, args.duration)}
    finally:
        emulator.stdin.close()
        simulator = emulator.stdout.read().strip()
        emulator.wait(10)
    if simulator:
        figures.update(json.loads(simulator.splitlines()[-1]))
    figures["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
