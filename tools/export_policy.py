#!/usr/bin/env python3
"""Export a trained policy checkpoint to ONNX with its model card, and check parity.

    python tools/export_policy.py --checkpoint runs/act1/checkpoints/step_000100000.pt \
        --out models/act_pick
    python tools/export_policy.py --run runs/act1 --out models/act_pick        # newest checkpoint

Writes OUT/policy.onnx, OUT/model_card.json and OUT/MODEL_CARD.md. Exits 1 when torch and ONNX
Runtime disagree by more than --tolerance (raw action units) on the same inputs.
"""

import argparse
import logging
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_recorder", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_learning.export import PARITY_TOLERANCE, export_checkpoint  # noqa: E402
from armstack_learning.train import latest_checkpoint  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="checkpoint file")
    src.add_argument("--run", type=Path, help="training run directory (newest checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    p.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE)
    p.add_argument("--diffusion-samples", type=int, default=1,
                   help="diffusion policies: chunks the runtime samples per observation unless "
                   "its diffusion_samples parameter says otherwise (written in the card)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    checkpoint = args.checkpoint or latest_checkpoint(args.run)
    if checkpoint is None:
        print(f"{args.run}: no checkpoint found", file=sys.stderr)
        return 1
    try:
        result = export_checkpoint(checkpoint, args.out, use_ema=not args.no_ema,
                                   tolerance=args.tolerance,
                                   diffusion_samples=args.diffusion_samples)
    except ValueError as exc:
        p.error(str(exc))
    except RuntimeError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    parity = {k: v for k, v in result.card["parity"].items() if k.endswith("error")}
    print(f"wrote {result.onnx_path} and {result.card_path}; parity {parity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
