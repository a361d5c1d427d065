#!/usr/bin/env python3
"""Record evaluations in a model's card: graph runs (tools/evaluate_policy.py report
directories) and in-process runs (tools/eval_policy_inprocess.py --json files).

Each graph report's summary.json becomes one row of the card's evaluation.graph: chunk mode,
episodes, success rate, time to completion, jerk and the policy's control-period jitter, with
the seed and date of the run. Each in-process JSON becomes one row of evaluation.in_process:
chunk mode and the buffer's settings, objects (perception or ground truth), episodes, success
rate, cubes in the bin and inference time, with the seed and the runner's settings.
model_card.json and MODEL_CARD.md beside the model are rewritten; the copy of the card inside
the ONNX file keeps the card as exported. The rows given replace the card's rows of their kind,
unless --append adds them after the rows already there.

    python tools/record_evaluation.py --model models/policy/act_pick/policy.onnx \\
        out/eval-act-async out/eval-act-ensemble out/eval-act-receding
    python tools/record_evaluation.py --model models/policy/act_pick/policy.onnx --append out/eval-more
    python tools/record_evaluation.py --model models/policy/dp_pick/policy.onnx \\
        --in-process out/dp_1000.json out/dp_1010.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_learning.export import CARD_JSON, record_evaluation  # noqa: E402


def evaluation_row(report_dir: Path) -> dict:
    """The card's summary of one evaluation report; ValueError names what is missing."""
    path = report_dir / "summary.json"
    if not path.is_file():
        raise ValueError(f"{path} not found (written by tools/evaluate_policy.py --out DIR)")
    document = json.loads(path.read_text(encoding="utf-8"))
    meta, summary = document.get("meta", {}), document.get("summary")
    if not summary:
        raise ValueError(f"{path}: no episode finished, nothing to record")
    diag = summary.get("diagnostics", {})
    return {
        "tool": "tools/evaluate_policy.py (whole graph, simulator, servo bus on a pty)",
        "chunk_mode": meta.get("chunk_mode"),
        "policy_params": meta.get("policy_params") or {},
        "episodes": summary["episodes"],
        "successes": summary["successes"],
        "success_rate": summary["success_rate"],
        "first_seed": meta.get("first_seed"),
        "timeout_s": meta.get("timeout_s"),
        "end_reasons": summary.get("end_reasons"),
        "time_to_completion_s_median": summary["time_to_completion_s"]["median"],
        "jerk_rms_rad_s3_median": summary["jerk_rms_rad_s3"]["median"],
        "policy_control_jitter_ms": {k: diag.get(f"policy_control_jitter_ms_{k}")
                                     for k in ("median", "p99", "max")},
        "policy_missed_periods_per_min": (summary.get("policy_missed_periods") or {}).get("per_minute"),
        "date": meta.get("date"),
    }


def in_process_row(path: Path) -> dict:
    """The card's summary of one tools/eval_policy_inprocess.py --json file."""
    if not path.is_file():
        raise ValueError(f"{path} not found (written by tools/eval_policy_inprocess.py --json)")
    summary = json.loads(path.read_text(encoding="utf-8")).get("summary")
    if not summary or "config" not in summary or "chunk_buffer" not in summary:
        raise ValueError(f"{path}: no summary with its config and chunk buffer (not an "
                         "eval_policy_inprocess.py --json file, or one written before the "
                         "summary kept the chunk buffer)")
    config = summary["config"]
    row = {
        "tool": "tools/eval_policy_inprocess.py (in-process MuJoCo, the nodes' perception, "
                "observation and chunk-buffer logic, synchronous inference, no ROS graph)",
        "chunk_mode": config["mode"],
        "chunk_buffer": summary["chunk_buffer"],  # the ChunkBufferConfig that played the chunks
        "objects": config["objects"],
        "start_at_miss": config.get("start_at_miss", False),
        "episodes": summary["episodes"],
        "successes": summary["successes"],
        "success_rate": summary["success_rate"],
        "first_seed": config["seed"],
        "time_limit_s": config["time_limit"],
        "cubes_in_bin_mean": summary.get("cubes_in_bin_mean"),
        "inference_ms_mean": summary.get("inference_ms_mean"),
        "date": summary.get("date"),
    }
    for key in ("num_inference_steps", "diffusion_samples"):
        if key in summary:
            row[key] = summary[key]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the exported policy.onnx")
    parser.add_argument("--append", action="store_true",
                        help="keep the card's rows and add these after those of their kind (a "
                        "run already in the card is refused)")
    parser.add_argument("reports", type=Path, nargs="*", help="evaluate_policy --out dirs")
    parser.add_argument("--in-process", type=Path, nargs="+", default=[], metavar="JSON",
                        help="eval_policy_inprocess.py --json files")
    args = parser.parse_args(argv)
    if not args.reports and not args.in_process:
        parser.error("give graph report directories, --in-process JSON files, or both")
    card_path = args.model.with_name(CARD_JSON)
    if not card_path.is_file():
        parser.error(f"{card_path} not found (written by tools/export_policy.py)")
    try:
        new = {"graph": [(r, evaluation_row(r)) for r in args.reports],
               "in_process": [(p, in_process_row(p)) for p in args.in_process]}
    except ValueError as exc:
        parser.error(str(exc))
    new = {kind: sources for kind, sources in new.items() if sources}
    evaluation = json.loads(card_path.read_text(encoding="utf-8")).get("evaluation") or {}
    for kind, sources in new.items():
        kept = (evaluation.get(kind) or []) if args.append else []
        for source, row in sources:
            if row in kept:
                parser.error(f"{source}: this evaluation is already in {card_path}")
        evaluation[kind] = kept + [row for _, row in sources]
    record_evaluation(card_path, evaluation)
    for kind, sources in new.items():
        for _, row in sources:
            params = row.get("policy_params") or {k: row[k] for k in ("diffusion_samples",)
                                                   if k in row}
            params = " ".join(f"{k}={v}" for k, v in params.items())
            print(f"{kind} {row['chunk_mode']}{' ' + params if params else ''}: "
                  f"{row['successes']}/{row['episodes']} ({100 * row['success_rate']:.0f} %)")
    print(f"recorded in {card_path} and {card_path.with_name('MODEL_CARD.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
