#!/usr/bin/env python3
"""Quantization error of the VLA's action tokenization on a dataset's actions, per dimension.

Every action of the dataset is turned into bin tokens and back into bin centres (the round
trip a VLA's output goes through) and compared with the recorded value. The bins are an
exported model's (--model: its card's ranges) or the ones training would build from this
dataset (min/max per dimension, --bins of them).

    python tools/vla_quantization.py --dataset DATA
    python tools/vla_quantization.py --dataset DATA --model models/vla_pick/policy.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_recorder", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_learning.features import (  # noqa: E402
    ACTION_KEY,
    ACTION_KINDS,
    ActionSpaceConfig,
    canonicalize_quaternions,
    feature_names,
)
from armstack_learning.normalize import NormalizationConfig, affine_from_stats  # noqa: E402
from armstack_policy.onnx_policy import find_card  # noqa: E402
from armstack_policy.vla_tokens import DEFAULT_NUM_BINS, ActionBins  # noqa: E402
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader  # noqa: E402
from armstack_recorder.stats import vector_stats  # noqa: E402


def dataset_actions(root: Path, kind: str) -> tuple[list[str], np.ndarray]:
    """Action names and (N, D) actions as training sees them (ee quaternions with qw >= 0)."""
    reader = LeRobotDatasetReader(root)
    names = feature_names(reader.features, ACTION_KEY)
    actions = np.asarray(reader.columns[ACTION_KEY], np.float32)
    quat = ActionSpaceConfig(kind=kind, names=tuple(names)).quaternion_index
    return names, canonicalize_quaternions(actions, quat) if quat else actions


def dataset_bins(actions: np.ndarray, num_bins: int) -> ActionBins:
    """The bins a VLA trained on these actions gets: the min/max action normalization's
    range, [offset - scale, offset + scale] (a constant dimension spans offset +- 1)."""
    offset, scale = affine_from_stats(vector_stats(actions), "min_max",
                                      NormalizationConfig().min_scale)
    offset, scale = offset.astype(np.float64), scale.astype(np.float64)
    return ActionBins(offset - scale, offset + scale, np.arange(num_bins), num_bins)


def report(names: list[str], bins: ActionBins, actions: np.ndarray) -> tuple[str, dict]:
    """A table and a JSON-ready dict of the per-dimension errors."""
    err = bins.quantization_error(actions)
    rows = [f"{'dim':>10} {'low':>10} {'high':>10} {'half bin':>10} {'max err':>10} "
            f"{'mean err':>10} {'clipped':>8}"]
    for i, name in enumerate(names):
        rows.append(f"{name:>10} {bins.low[i]:10.5f} {bins.high[i]:10.5f} "
                    f"{err.half_bin[i]:10.3e} {err.max_abs[i]:10.3e} {err.mean_abs[i]:10.3e} "
                    f"{int(err.clipped[i]):8d}")
    within = err.within_half_bin
    rows.append(f"{len(actions)} actions, {bins.num_bins} bins; max error within half a bin in "
                f"every dimension: {within}")
    data = {"actions": len(actions), "num_bins": bins.num_bins, "names": names,
            "half_bin": err.half_bin.tolist(), "max_abs_error": err.max_abs.tolist(),
            "mean_abs_error": err.mean_abs.tolist(), "clipped": err.clipped.tolist(),
            "within_half_bin": within}
    return "\n".join(rows), data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--dataset", type=Path, required=True, help="LeRobot v3.0 dataset root")
    p.add_argument("--model", type=Path, help="exported VLA whose card's bins to use")
    p.add_argument("--bins", type=int, default=DEFAULT_NUM_BINS, help="without --model")
    p.add_argument("--action-kind", choices=ACTION_KINDS, default="ee",
                   help="ee: quaternions put in qw >= 0 first, as training does")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    names, actions = dataset_actions(args.dataset, args.action_kind)
    if args.model:
        bins = ActionBins.from_dict(find_card(args.model)["vla"]["actions"])
    else:
        bins = dataset_bins(actions, args.bins)
    table, data = report(names, bins, actions)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
