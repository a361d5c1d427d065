#!/usr/bin/env python3
"""Benchmark ChunkBuffer.action_at per control step in each mode (budget: < 0.1 ms per step).

Replays a 50 Hz control loop on simulated time (no sleeping): a new chunk arrives every 5-10
steps, observed 1-4 steps before it arrives (inference latency), control calls jitter by +-2 ms.
An extra row ensembles a chunk every step with a ring of chunk_size (ACT's setting, the worst
case). Prints median / p99 / max microseconds per `action_at` and per `add_chunk`.

    python tools/bench_chunk_buffer.py [--steps 20000] [--chunk-size 100] [--action-dim 7]
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:
    from armstack_common.machine import cpu_model
    from armstack_policy.chunk_buffer import ChunkBuffer, ChunkBufferConfig, StepStatus
except ImportError:  # run from a source checkout without the packages installed
    for _pkg in ("armstack_common", "armstack_policy"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws/src" / _pkg))
    from armstack_common.machine import cpu_model
    from armstack_policy.chunk_buffer import ChunkBuffer, ChunkBufferConfig, StepStatus

WARMUP_STEPS = 500
BUDGET_US = 100.0


def replay(config: ChunkBufferConfig, steps: int, period: tuple[int, int],
           seed: int) -> dict[str, np.ndarray]:
    """Run the loop; returns per-call nanoseconds for action_at and add_chunk, and depths."""
    rng = np.random.default_rng(seed)
    k, d, dt = config.chunk_size, config.action_dim, config.dt
    # A small pool of smooth chunks, so generating data stays out of the timed calls.
    pool = np.cumsum(rng.normal(scale=0.01, size=(16, k, d)), axis=1)  # (16, k, D)
    buf = ChunkBuffer(config)
    step_ns = np.empty(steps, dtype=np.int64)
    add_ns: list[int] = []
    depths = np.empty(steps, dtype=np.int64)
    holds = 0
    next_arrival = 0
    clock = time.perf_counter_ns
    for s in range(steps):
        if s >= next_arrival:
            latency = int(rng.integers(1, 5))
            chunk, t_obs = pool[s % len(pool)], (s - latency) * dt
            t0 = clock()
            buf.add_chunk(chunk, t_obs)
            add_ns.append(clock() - t0)
            next_arrival = s + int(rng.integers(period[0], period[1] + 1))
        t_now = s * dt + rng.uniform(-0.002, 0.002)
        t0 = clock()
        result = buf.action_at(t_now)
        step_ns[s] = clock() - t0
        holds += result.status is not StepStatus.OK
        depths[s] = buf.depth
    return {"step": step_ns[WARMUP_STEPS:], "add": np.array(add_ns[10:]),
            "depth": depths[WARMUP_STEPS:], "holds": np.array([holds])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    k, d = args.chunk_size, args.action_dim
    cases = [
        ("temporal_ensemble", {}, (5, 10)),
        ("receding_horizon", {"n_action_steps": k // 2}, (5, 10)),
        ("async_latency_compensated", {}, (5, 10)),
        ("temporal_ensemble (chunk every step, ring=k)", {"max_chunks": k}, (1, 1)),
    ]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"machine: {cpu_model()}; nproc {os.cpu_count()} (usable {affinity}); "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"k={k}, D={d}, dt=0.02 s, {args.steps} steps per mode ({WARMUP_STEPS} warm-up "
          f"excluded); chunk every 5-10 steps, latency 1-4 steps, jitter +-2 ms")
    header = (f"{'mode':46s} {'step med':>9s} {'p99':>7s} {'max':>7s}   "
              f"{'add med':>8s} {'p99':>7s}  {'depth':>5s} {'holds':>5s}")
    print(header + "\n" + "-" * len(header))
    for label, overrides, period in cases:
        mode = label.split(" ")[0]
        config = ChunkBufferConfig(mode=mode, chunk_size=k, action_dim=d, **overrides)
        r = replay(config, args.steps, period, args.seed)
        step_us, add_us = r["step"] / 1e3, r["add"] / 1e3
        verdict = "ok" if np.percentile(step_us, 99) < BUDGET_US else "OVER BUDGET"
        print(f"{label:46s} {np.median(step_us):8.1f}u {np.percentile(step_us, 99):6.1f}u "
              f"{step_us.max():6.0f}u   {np.median(add_us):7.1f}u "
              f"{np.percentile(add_us, 99):6.1f}u  {r['depth'].mean():5.1f} "
              f"{int(r['holds'][0]):5d}  {verdict}")
    print(f"budget: p99 < {BUDGET_US:.0f} us per step (u = microseconds; max includes "
          "scheduler noise from other processes)")


if __name__ == "__main__":
    main()
