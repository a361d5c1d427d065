#!/usr/bin/env python3
"""Train an ACT, Diffusion or VLA policy on a LeRobot v3.0 dataset (CPU or GPU, one or more
processes).

    python tools/train_policy.py --policy act --dataset DATA --steps 100000 --out runs/act1
    python tools/train_policy.py --policy vla --dataset DATA --cameras color --action-kind ee \
        --steps 20000 --out runs/vla1 --set image_size=[96,128] --set chunk_size=8
    python tools/train_policy.py --policy act --dataset DATA --steps 100000 --out runs/act1 --resume
    python tools/train_policy.py --policy act --dataset DATA --steps 10000 --out runs/act1_ft \
        --init-from runs/act1/checkpoints/step_000100000.pt --lr-schedule cosine
    torchrun --nproc_per_node 2 tools/train_policy.py --policy diffusion --dataset DATA ...
    python tools/train_policy.py --policy act --dataset DATA --episodes 0-29,50-69 ...

Policy hyperparameters keep their defaults unless set with --set NAME=VALUE (repeatable; JSON
values, e.g. --set chunk_size=50 --set down_dims=[128,256] --set schedule.num_train_timesteps=50).
--resume continues the newest checkpoint in OUT/checkpoints exactly (same data order, RNG,
optimizer and schedule); its policy config and layout come from the checkpoint.
Writes OUT/checkpoints/step_*.pt and OUT/train_log.jsonl; export with tools/export_policy.py.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_recorder", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.params import comma_separated  # noqa: E402
from armstack_learning.augment import BaseRotationConfig, RelocationConfig  # noqa: E402
from armstack_learning.data import parse_episode_ranges  # noqa: E402
from armstack_learning.factory import (  # noqa: E402
    POLICY_KINDS,
    config_with_overrides,
    override_arg,
)
from armstack_learning.features import ACTION_KINDS, ObjectSlotsConfig, layout_for_dataset  # noqa: E402
from armstack_learning.normalize import NormalizationConfig  # noqa: E402
from armstack_learning.train import LR_SCHEDULES, TrainConfig, train  # noqa: E402
from armstack_recorder.metadata import read_info  # noqa: E402


def _episode_ranges(text: str) -> tuple[int, ...]:
    try:
        return parse_episode_ranges(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--policy", choices=POLICY_KINDS, required=True)
    p.add_argument("--dataset", required=True, help="LeRobot v3.0 dataset root")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps of the run")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's newest checkpoint")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from this checkpoint's weights, policy config and layout, with a "
                        "new optimizer, LR schedule and step count (fine-tuning); with --resume, "
                        "an existing checkpoint in OUT wins")
    p.add_argument("--stop-at", type=int, help="stop (and checkpoint) at this step")
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--lr", type=float, help="learning rate (default: the policy's preset)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="default: constant for act, cosine for diffusion and vla")
    p.add_argument("--warmup-steps", type=int, help="default: 0 for act, 500 for diffusion and vla")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction,
                   help="keep an EMA of the weights (default: on for diffusion)")
    p.add_argument("--grad-clip", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--objects", help="object classes of observation.environment_state, in "
                   "order; 'none' for no environment state (default: red_cube,green_cube,"
                   "blue_cube; none for vla, which then sees the scene through its cameras "
                   "only: given classes, it also takes one token per localized object)")
    p.add_argument("--object-fields", default="x,y,z,present")
    p.add_argument("--object-hold", type=float, default=0.0, metavar="S",
                   help="a class not seen keeps its last detection for up to S seconds, in "
                   "training and in the exported model's runtime (default 0: off); a fine-tune "
                   "(--init-from) takes this value, not its checkpoint's")
    p.add_argument("--relocate-waiting", type=float, default=0.0, metavar="P",
                   help="probability that a training sample moves the cubes its action chunk "
                   "ignores (those the demonstration picks later) to other free spots on the "
                   "table, so the policy reaches from the cube it picks, not from the layout "
                   "(default 0: off; object-slot policies only)")
    p.add_argument("--rotate-about-base", type=float, default=0.0, metavar="P",
                   help="probability that a training sample whose action chunk carries no cube "
                   "is turned about the arm's base: the waist reading, the cubes not yet picked "
                   "and the commanded ee poses, by an angle uniform in +-"
                   "--rotate-max-deg, so the policy sees each reach from more places "
                   "(default 0: off; end-effector object-slot policies only)")
    p.add_argument("--rotate-max-deg", type=float, default=BaseRotationConfig.max_angle_deg,
                   metavar="DEG", help="largest turn of --rotate-about-base")
    p.add_argument("--episodes", type=_episode_ranges, metavar="A-B,C,...",
                   help="train on these episodes of the dataset only, e.g. 0-29,50-69 "
                   "(default: all); the normalization then comes from their frames")
    p.add_argument("--action-kind", choices=ACTION_KINDS, default="joint")
    p.add_argument("--cameras", default="", help="camera names to use as image inputs")
    p.add_argument("--min-scale", type=float, default=NormalizationConfig.min_scale)
    p.add_argument("--set", action="append", default=[], type=override_arg, metavar="NAME=VALUE",
                   help="policy config field")
    return p.parse_args()


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    diffusion = args.policy == "diffusion"
    scheduled = args.policy in ("diffusion", "vla")  # transformers/U-Nets trained from scratch
    cfg = TrainConfig(
        policy=args.policy, dataset=args.dataset, out=args.out, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr,
        lr_schedule=args.lr_schedule or ("cosine" if scheduled else "constant"),
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else (
            500 if scheduled else 0),
        grad_clip_norm=args.grad_clip, ema=args.ema if args.ema is not None else diffusion,
        seed=args.seed, save_every=args.save_every, log_every=args.log_every,
        keep_checkpoints=args.keep_checkpoints, num_workers=args.num_workers, stop_at=args.stop_at,
        init_from=args.init_from, normalization=NormalizationConfig(min_scale=args.min_scale),
        relocation=RelocationConfig(probability=args.relocate_waiting),
        rotation=BaseRotationConfig(probability=args.rotate_about_base,
                                    max_angle_deg=args.rotate_max_deg),
        episodes=args.episodes)
    classes = args.objects or ("none" if args.policy == "vla" else "red_cube,green_cube,blue_cube")
    objects = None if classes == "none" else ObjectSlotsConfig(
        classes=comma_separated(classes), fields=comma_separated(args.object_fields),
        hold=args.object_hold)
    layout = layout_for_dataset(read_info(Path(args.dataset))["features"], objects,
                                args.action_kind, comma_separated(args.cameras))
    policy_cfg = config_with_overrides(args.policy, dict(args.set))
    last = train(cfg, policy_cfg, layout, resume=args.resume)
    logging.getLogger(__name__).info("last checkpoint: %s", last)
    return 0


if __name__ == "__main__":
    status = main()
    if "LOCAL_RANK" in os.environ:
        # Under torchrun, torch's gloo threads can abort the interpreter's teardown after a
        # finished run ("terminate called without an active exception", seen in 1 of 3 runs
        # here); the process group is destroyed and the checkpoints are on disk, so skip it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
