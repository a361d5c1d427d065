#!/usr/bin/env python3
"""Evaluate a policy through the whole graph against the simulator.

sim -> detector -> localization -> policy -> IK -> driver (over the simulator's servo pty),
started with armstack's launcher; N randomized episodes; prints success rate, time to
completion, jerk and per-stage timing, and writes a report directory (summary.json,
summary.md, plots, camera.mp4). The policy sees only what the real robot would: joint_states
and the perception's objects, never the simulator's ground truth.

    source .venv/armstack_env.sh
    python tools/evaluate_policy.py --policy-model policy/act_pick/policy.onnx --episodes 20 \
        --mode receding_horizon --out out/eval-act
    python tools/evaluate_policy.py --controller expert --episodes 5   # the scripted expert

All options: --help (armstack_eval.evaluate).
"""

from __future__ import annotations

import sys

from armstack_eval.evaluate import main

if __name__ == "__main__":
    sys.exit(main(prog="evaluate_policy"))
