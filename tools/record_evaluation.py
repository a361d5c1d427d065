#!/usr/bin/env python3
"""Record graph evaluations (tools/evaluate_policy.py report directories) in a model's card.

Each report's summary.json becomes one row of the card's evaluation: chunk mode, episodes,
success rate, time to completion, jerk and the policy's control-period jitter, with the seed
and date of the run. model_card.json and MODEL_CARD.md beside the model are rewritten; the
copy of the card inside the ONNX file keeps the card as exported. The reports given replace
the card's graph rows, unless --append adds them after the rows already there.

    python tools/record_evaluation.py --model models/policy/act_pick/policy.onnx \\
        out/eval-act-async out/eval-act-ensemble out/eval-act-receding
    python tools/record_evaluation.py --model models/policy/act_pick/policy.onnx --append out/eval-more
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the exported policy.onnx")
    parser.add_argument("--append", action="store_true",
                        help="keep the card's graph rows and add these after them (a report "
                        "already in the card is refused)")
    parser.add_argument("reports", type=Path, nargs="+", help="evaluate_policy --out dirs")
    args = parser.parse_args(argv)
    card_path = args.model.with_name(CARD_JSON)
    if not card_path.is_file():
        parser.error(f"{card_path} not found (written by tools/export_policy.py)")
    try:
        rows = [evaluation_row(r) for r in args.reports]
    except ValueError as exc:
        parser.error(str(exc))
    evaluation = {"graph": rows}
    if args.append:
        evaluation = json.loads(card_path.read_text(encoding="utf-8")).get("evaluation") or {}
        kept = evaluation.get("graph") or []
        for report, row in zip(args.reports, rows):
            if row in kept:
                parser.error(f"{report}: this evaluation is already in {card_path}")
        evaluation["graph"] = kept + rows
    record_evaluation(card_path, evaluation)
    for row in rows:
        params = " ".join(f"{k}={v}" for k, v in row["policy_params"].items())
        print(f"{row['chunk_mode']}{' ' + params if params else ''}: "
              f"{row['successes']}/{row['episodes']} "
              f"({100 * row['success_rate']:.0f} %)")
    print(f"recorded in {card_path} and {card_path.with_name('MODEL_CARD.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
