#!/usr/bin/env python3
"""Open-loop check of an exported policy on recorded episodes: how far its chunks are from the
recorded actions, and how far ahead or behind of them in time.

At every --stride-th frame of the chosen episodes the model predicts a chunk from the recorded
observations (history padded with the episode's first frame), and the first --horizon actions
are compared with the recorded ones. The time shift is the number of frames s (in
[-max-shift, max-shift]) that best aligns the chunk with the recorded actions a[t+s..]: a
well-trained model on well-timed data gives 0; a model that learnt commands of a moment later
than their observation (a dataset sampling actions by their header stamp) gives s > 0 and runs
ahead of itself in closed loop.

    python tools/policy_open_loop.py --policy-model models/policy/act_pick/policy.onnx \\
        --dataset DATA --episodes 0,25,49

Prints per-joint median and p90 (over chunks) of the maximum absolute error over the
horizon, and the median best shift. For end-effector policies it also prints the grasp error:
at every recorded grasp (the gripper action falling below half open), the chunk predicted
--grasp-lead frames earlier, its x/y at the grasp frame against the recorded ones. That is the
error that decides whether a closed-loop grasp lands on the cube. With --waiting-shift D it
also prints how much the chunk follows cubes it should ignore: at each checked chunk, every cube
the demonstration picks only after that chunk (armstack_learning.augment.waiting_slots) is
moved by D along +x, -x, +y and -y in turn, and the largest x/y move of the chunk's first
--horizon positions, over D, is that cube's gain (0: ignored, as it should be; 1: followed as
much as the cube moved). It also prints the end-effector position error by chunk step: a
chunk right at its first steps and wrong at its last has learnt to continue the motion it is
in, not where to go.

Models with camera inputs get each checked frame (and its history) decoded from the episode's
video and resized as the policy node resizes camera frames; a VLA also gets the episode's task
as its instruction (greedy decoding).

    python tools/policy_open_loop.py --policy-model VLA/policy.onnx --dataset DATA \
        --episodes 0,1,2 --stride 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_learning", "armstack_recorder", "armstack_policy", "armstack_common"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.paths import resolve_model  # noqa: E402
from armstack_learning.features import (  # noqa: E402
    ACTION_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    ObjectSlotsConfig,
    feature_names,
    hold_last_seen,
)
from armstack_learning.augment import gripper_closed, waiting_slots  # noqa: E402
from armstack_policy.observation import IMAGE_PREFIX, image_feature  # noqa: E402
from armstack_policy.onnx_policy import MAKERS, RunnerConfig, load_policy  # noqa: E402
from armstack_policy.vla_decode import VLARunner  # noqa: E402
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader  # noqa: E402


def history(values: np.ndarray, t: int, n_obs: int) -> np.ndarray:
    """values[t - n_obs + 1 .. t], the frames before the episode's start repeating frame 0."""
    idx = np.clip(np.arange(t - n_obs + 1, t + 1), 0, None)
    return values[idx]


class CameraFrames:
    """An episode's camera frames as the policy sees them, decoded when first asked for."""

    def __init__(self, reader: LeRobotDatasetReader, episode: int, timestamps: np.ndarray,
                 cameras: tuple[tuple[str, int, int], ...]) -> None:
        self._reader, self._episode, self._timestamps = reader, episode, timestamps
        self._cameras = cameras  # (name, H, W) each
        self._cache: dict[tuple[str, int], np.ndarray] = {}  # (camera, frame) -> (3, H, W)

    def history(self, t: int, n_obs: int) -> dict[str, np.ndarray]:
        """{image key: (n_obs, 3, H, W)} for frames t - n_obs + 1 .. t (clipped as history)."""
        idx = np.clip(np.arange(t - n_obs + 1, t + 1), 0, None)
        out = {}
        for name, h, w in self._cameras:
            key = IMAGE_PREFIX + name
            todo = sorted({int(i) for i in idx if (name, int(i)) not in self._cache})
            if todo:
                decoded = self._reader.decode_video(self._episode, key, self._timestamps[todo])
                for i, rgb in zip(todo, decoded, strict=True):
                    self._cache[name, i] = image_feature(rgb, (h, w))
            out[key] = np.stack([self._cache[name, int(i)] for i in idx])
        return out


def observation_at(state: np.ndarray, env: np.ndarray | None, t: int,
                   n_obs: int, frames: CameraFrames | None = None) -> dict[str, np.ndarray]:
    """The policy's recorded observation at frame t."""
    obs = {STATE_KEY: history(state, t, n_obs)}
    if env is not None:
        obs[ENV_STATE_KEY] = history(env, t, n_obs)
    if frames is not None:
        obs.update(frames.history(t, n_obs))
    return obs


def best_shift(chunk: np.ndarray, actions: np.ndarray, t: int, horizon: int,
               max_shift: int) -> int:
    """The shift s minimizing the mean abs error between chunk[:horizon] and actions[t+s:]."""
    errors = {}
    for s in range(-max_shift, max_shift + 1):
        lo = t + s
        if lo < 0 or lo + horizon > len(actions):
            continue
        errors[s] = float(np.abs(chunk[:horizon] - actions[lo:lo + horizon]).mean())
    return min(errors, key=errors.get)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy-model", required=True,
                        help="exported policy.onnx: a path, or one under models/")
    parser.add_argument("--dataset", type=Path, required=True, help="LeRobot v3.0 dataset")
    parser.add_argument("--episodes", default="0", help="comma-separated episode indices")
    parser.add_argument("--stride", type=int, default=25, help="frames between checked chunks")
    parser.add_argument("--horizon", type=int, default=None,
                        help="chunk steps compared (default: 25, or the chunk if shorter)")
    parser.add_argument("--max-shift", type=int, default=10, help="frames, either way")
    parser.add_argument("--grasp-lead", type=int, default=None,
                        help="frames before each recorded grasp whose observation predicts it "
                        "(default: 20, or the chunk's last step if shorter)")
    parser.add_argument("--waiting-shift", type=float, default=0.0, metavar="D",
                        help="end-effector policies: m to move each waiting cube by, to measure "
                        "how much the chunk follows it (0: skip)")
    parser.add_argument("--num-inference-steps", type=int, default=0,
                        help="diffusion policies: DDIM steps (0: the model card's)")
    parser.add_argument("--diffusion-samples", type=int, default=0,
                        help="diffusion policies: chunks sampled per observation (their "
                        "consensus is compared; 0: the model card's)")
    args = parser.parse_args(argv)
    if args.stride < 1 or (args.horizon is not None and args.horizon < 1) or \
            args.max_shift < 0 or (args.grasp_lead is not None and args.grasp_lead < 0):
        parser.error("--stride and --horizon must be >= 1, --max-shift and --grasp-lead >= 0")

    try:
        runner = RunnerConfig(intra_op_threads=1, num_inference_steps=args.num_inference_steps,
                              diffusion_samples=args.diffusion_samples, temperature=0.0)
    except ValueError as exc:
        parser.error(str(exc))
    policy = load_policy(resolve_model(args.policy_model, MAKERS), runner)
    card = policy.card
    if args.horizon is None:
        args.horizon = min(25, card.chunk_size)
    if args.grasp_lead is None:
        args.grasp_lead = min(20, card.chunk_size - 1)
    if args.horizon > card.chunk_size:
        parser.error(f"--horizon {args.horizon} exceeds the model's chunk size {card.chunk_size}")
    reader = LeRobotDatasetReader(args.dataset)
    features = reader.features
    for key, names in ((STATE_KEY, card.state_names), (ACTION_KEY, card.action_names)):
        if tuple(feature_names(features, key)) != tuple(names):
            parser.error(f"dataset {key} names {feature_names(features, key)} differ from the "
                         f"model's {list(names)}")
    objects = (ObjectSlotsConfig(card.object_classes, card.object_fields, card.object_hold)
               if card.object_classes else None)
    env_names = objects.names if objects else []
    if env_names and feature_names(features, ENV_STATE_KEY) != env_names:
        parser.error(f"dataset {ENV_STATE_KEY} names differ from the model's {env_names}")

    episodes = [int(e) for e in args.episodes.split(",")]
    errors, shifts, grasp_errors = [], [], []
    grasp = (card.action_names.index("gripper"), card.action_names.index("x"),
             card.action_names.index("y")) if card.action_kind == "ee" else None
    if grasp is not None and args.grasp_lead >= card.chunk_size:
        parser.error(f"--grasp-lead {args.grasp_lead} must be below the chunk size "
                     f"{card.chunk_size}")
    if args.waiting_shift < 0 or (args.waiting_shift and (grasp is None or objects is None)):
        parser.error("--waiting-shift takes metres >= 0, for end-effector policies that see "
                     "objects")
    gains, position_errors = [], []  # position_errors: (horizon,) per chunk, ee policies
    xyz = [card.action_names.index(n) for n in ("x", "y", "z")] if grasp is not None else []
    for ep in episodes:
        data = reader.episode_data(ep)
        frames = (CameraFrames(reader, ep, np.asarray(data["timestamp"], np.float64).ravel(),
                               card.cameras) if card.cameras else None)
        if isinstance(policy, VLARunner):
            policy.set_instruction(reader.frame(reader.episode_range(ep).start,
                                                decode_video=False)["task"])
        state = np.stack(data[STATE_KEY]).astype(np.float32)
        actions = np.stack(data[ACTION_KEY]).astype(np.float32)
        env = None
        if objects:  # held as the runtime holds them
            env = hold_last_seen(np.stack(data[ENV_STATE_KEY]), np.asarray(data["episode_index"]),
                                 np.asarray(data["timestamp"], np.float64), objects)
        waiting = None
        if args.waiting_shift:
            waiting = waiting_slots(env, actions[:, grasp[0]], np.zeros(len(env), np.int64),
                                    objects.fields, card.chunk_size)
        policy.reset()
        for t in range(0, len(state) - args.horizon, args.stride):
            chunk = policy.predict_chunk(observation_at(state, env, t, card.n_obs_steps,
                                                        frames))
            errors.append(np.abs(chunk[:args.horizon] - actions[t:t + args.horizon]).max(axis=0))
            if grasp is not None:
                position_errors.append(np.linalg.norm(
                    chunk[:args.horizon, xyz] - actions[t:t + args.horizon, xyz], axis=1))
            shifts.append(best_shift(chunk, actions, t, args.horizon, args.max_shift))
            if waiting is not None:
                gains += waiting_gains(policy, chunk, state, env, t, np.flatnonzero(waiting[t]),
                                       objects.fields, grasp[1:], args, frames)
        if grasp is not None:
            for t in grasp_frames(actions[:, grasp[0]]):
                lead = min(t, args.grasp_lead)
                policy.reset()
                chunk = policy.predict_chunk(observation_at(state, env, t - lead,
                                                            card.n_obs_steps, frames))
                grasp_errors.append(np.hypot(*(chunk[lead, list(grasp[1:])]
                                               - actions[t, list(grasp[1:])])))
    if not errors:
        parser.error("the episodes are shorter than the horizon: nothing compared")
    errors_arr = np.array(errors)
    print(f"{args.policy_model} on {args.dataset}, episodes {episodes}: {len(errors)} chunks, "
          f"first {args.horizon} steps ({args.horizon / card.fps:.2f} s) of each")
    print(f"{'action':>14} {'median max|err|':>16} {'p90':>8}")
    for i, name in enumerate(card.action_names):
        print(f"{name:>14} {np.median(errors_arr[:, i]):16.4f} "
              f"{np.percentile(errors_arr[:, i], 90):8.4f}")
    print(f"best time shift: median {np.median(shifts):+.1f} frames "
          f"(p10 {np.percentile(shifts, 10):+.1f}, p90 {np.percentile(shifts, 90):+.1f}); "
          "> 0: the model answers with later actions than recorded")
    if position_errors:
        by_step = 1e3 * np.median(np.array(position_errors), axis=0)  # (horizon,) mm
        steps = sorted({0, args.horizon // 4, args.horizon // 2, 3 * args.horizon // 4,
                        args.horizon - 1})
        print("ee position error by chunk step, median mm: " + ", ".join(
            f"step {k} {by_step[k]:.1f}" for k in steps))
    if gains:
        print(f"waiting-cube gain ({len(gains)} cube moves of {1e3 * args.waiting_shift:.0f} mm): "
              f"median {np.median(gains):.2f}, p90 {np.percentile(gains, 90):.2f}, "
              f"max {max(gains):.2f} (0: the chunk ignores cubes picked later)")
    if grasp_errors:
        mm = 1e3 * np.array(grasp_errors)
        print(f"grasp x/y error ({len(mm)} grasps, predicted {args.grasp_lead} frames ahead): "
              f"median {np.median(mm):.1f} mm, p90 {np.percentile(mm, 90):.1f} mm, "
              f"max {mm.max():.1f} mm")
    return 0


def waiting_gains(policy, chunk: np.ndarray, state: np.ndarray, env: np.ndarray, t: int,
                  slots: np.ndarray, fields: tuple[str, ...], xy: tuple[int, int],
                  args: argparse.Namespace, frames: CameraFrames | None = None) -> list[float]:
    """For each waiting slot: the largest x/y move of the chunk's first --horizon positions
    when that cube moves by --waiting-shift along +-x and +-y, over the shift."""
    n_obs, d = policy.card.n_obs_steps, args.waiting_shift
    base = chunk[:args.horizon, list(xy)]
    gains = []
    for slot in slots:
        moved = 0.0
        for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
            shifted = env.copy()
            shifted[:, slot * len(fields) + fields.index("xy"[axis])] += sign * d
            other = policy.predict_chunk(observation_at(state, shifted, t, n_obs, frames))
            moved = max(moved, float(np.hypot(*(other[:args.horizon, list(xy)] - base).T).max()))
        gains.append(moved / d)
    return gains


def grasp_frames(gripper: np.ndarray) -> list[int]:
    """Frames where the gripper action falls below half of its recorded range (a grasp)."""
    closed = gripper_closed(gripper)
    return [int(t) for t in np.flatnonzero(closed[1:] & ~closed[:-1]) + 1]


if __name__ == "__main__":
    sys.exit(main())
