#!/usr/bin/env python3
"""Benchmark one training step (forward, backward, optimizer) of a policy on this CPU.

The policy is built as tools/train_policy.py builds it (same factory, --set overrides,
normalization and data pipeline) over a random dataset of the recorded layout (7 joint states,
end-effector actions, three cube slots) written to a temporary directory by the recorder's
writer, so only the model's own cost is timed. Prints median / p99 milliseconds per step and
samples per second; --torch-dropout swaps armstack_learning.layers.Dropout for nn.Dropout, to
show what that choice costs.

    python tools/bench_training_step.py --policy act --set chunk_size=50 --set dim_model=128 ...
    python tools/bench_training_step.py --policy act ... --torch-dropout
    OMP_NUM_THREADS=1 python tools/bench_training_step.py --policy diffusion --set horizon=16 \
        --set action_stride=5 --set n_action_steps=40 --set "down_dims=[64,128,256]"

One process, torch's intra-op threads as the environment sets them (torchrun trains with one
each: OMP_NUM_THREADS=1).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_recorder", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from armstack_common.machine import describe  # noqa: E402
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES  # noqa: E402
from armstack_learning import layers  # noqa: E402
from armstack_learning.factory import (  # noqa: E402
    POLICY_KINDS,
    action_normalization,
    build_policy,
    config_with_overrides,
    override_arg,
    make_dataset,
    prepare_config,
)
from armstack_learning.features import ObjectSlotsConfig, layout_for_dataset  # noqa: E402
from armstack_learning.normalize import NormalizationConfig  # noqa: E402
from armstack_recorder.lerobot_dataset import (  # noqa: E402
    FeatureSpec,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.metadata import read_info  # noqa: E402

WARMUP_STEPS = 3


def write_random_dataset(root: Path, episodes: int, frames: int, seed: int) -> Path:
    """Random walks in the recorded layout; their values do not matter to a step's cost."""
    objects = ObjectSlotsConfig()
    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(EE_ACTION_NAMES),
                       env_state_names=objects.names)
    rng = np.random.default_rng(seed)
    with LeRobotDatasetWriter(WriterConfig(root=root, fps=50, robot_type="armstack_wx250s",
                                           features=spec)) as writer:
        for _ in range(episodes):
            writer.start_episode("put the cubes in the bin")
            state = np.cumsum(rng.normal(scale=0.01, size=(frames, len(JOINT_NAMES))), axis=0)
            action = np.cumsum(rng.normal(scale=0.01, size=(frames, len(EE_ACTION_NAMES))),
                               axis=0)
            cubes = np.c_[rng.uniform(0.15, 0.35, (len(objects.classes), 3)),
                          np.ones(len(objects.classes))]  # x y z present, per class
            env = np.tile(cubes.ravel(), (frames, 1))
            for s, a, e in zip(state, action, env, strict=True):
                writer.add_frame(s.astype(np.float32), a.astype(np.float32),
                                 e.astype(np.float32))
            writer.save_episode()
    return root


def use_torch_dropout(model: torch.nn.Module) -> None:
    """Replace every layers.Dropout in `model` by an nn.Dropout of the same p."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, layers.Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=[k for k in POLICY_KINDS if k != "vla"],
                        required=True)
    parser.add_argument("--set", action="append", default=[], type=override_arg,
                        metavar="NAME=VALUE",
                        help="policy hyperparameter, as train_policy.py --set")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="time nn.Dropout instead of armstack_learning.layers.Dropout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_random_dataset(Path(tmp) / "data", episodes=4, frames=300, seed=args.seed)
        layout = layout_for_dataset(read_info(root)["features"], ObjectSlotsConfig(), "ee")
        cfg = prepare_config(args.policy, config_with_overrides(args.policy, dict(args.set)), root)
        dataset = make_dataset(cfg, root, layout)
        normalizer = dataset.normalizer(NormalizationConfig(),
                                        action_mode=action_normalization(args.policy))
        policy = build_policy(args.policy, cfg, layout, normalizer)
        if args.torch_dropout:
            use_torch_dropout(policy)
        kind = torch.nn.Dropout if args.torch_dropout else layers.Dropout
        dropouts = sum(isinstance(m, kind) for m in policy.modules())  # what is timed
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        rng = np.random.default_rng(args.seed)
        policy.train()
        times = []
        for step in range(WARMUP_STEPS + args.steps):
            items = [dataset[int(i)] for i in rng.integers(0, len(dataset), args.batch_size)]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            t0 = time.perf_counter()
            loss, _ = policy(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= WARMUP_STEPS:
                times.append(time.perf_counter() - t0)

    ms = 1e3 * np.array(times)
    params = sum(p.numel() for p in policy.parameters())
    dropout = f"{'nn' if args.torch_dropout else 'layers'}.Dropout ({dropouts} modules)"
    print(f"machine: {describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op thread(s)")
    print(f"{args.policy}: {params / 1e6:.2f} M parameters, batch {args.batch_size}, {dropout}; "
          f"{args.steps} steps (data loading not timed)")
    print(f"step ms: median {np.median(ms):.1f}  p99 {np.percentile(ms, 99):.1f}  "
          f"max {ms.max():.1f}; {args.batch_size / np.median(ms) * 1e3:.0f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
