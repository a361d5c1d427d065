#!/usr/bin/env python3
"""LeRobot's own side of the dataset interop check (tests/test_lerobot_interop.py).

Runs in the separate LeRobot venv (.venv-lerobot, requirements-lerobot.txt): LeRobot needs a
newer torch than the project pins, so it cannot share .venv. Imports no armstack code; the
synthetic content below is numpy only, so the test (in the project venv) imports this file to
recompute what `write` wrote and to write the same content with armstack's writer.

    python tools/lerobot_interop.py read ROOT --indices 0 17 40 --out frames.npz
    python tools/lerobot_interop.py write ROOT --frames 20 31 17

`read` loads ROOT with LeRobot's LeRobotDataset and saves, for each requested global index,
every tabular feature, every camera's frame as (H, W, 3) uint8 (LeRobot returns (3, H, W)
float32 in [0, 1]) and the task string; with --action-horizon K also the action chunk of K
steps and its padding mask, as LeRobot's training loader builds it. `write` creates ROOT with
LeRobotDataset.create/add_frame/save_episode/finalize from the synthetic content.

Nothing may come from the network: the Hugging Face libraries are put offline before they are
imported, and LeRobot only reaches for the Hub when a local root lacks files, which then fails
at once instead of downloading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------ synthetic content
# Every value is made from exact binary fractions or from IEEE-rounded divisions of small
# integers, so numpy in either venv computes the same float32 bits.

STATE_NAMES = ["waist", "shoulder", "elbow", "wrist", "gripper"]
ACTION_NAMES = ["x", "y", "z", "gripper"]
ENV_STATE_NAMES = ["cube_x", "cube_y"]
CAMERAS = ("top", "wrist")
HEIGHT, WIDTH = 64, 128  # stripe images: 8 stripes of 16 px
STRIPE = WIDTH // 8
IMAGE_PREFIX = "observation.images."
ROBOT_TYPE = "armstack_interop"


def task(episode: int) -> str:
    """Two tasks, alternating, so task_index differs between episodes."""
    return ("put the cube in the bin", "stack the cubes")[episode % 2]


def state(episode: int, frame: int) -> np.ndarray:
    """(5,) float32"""
    return np.array([frame / 7.0, -0.25 * episode, 1.0 + frame / 32.0, episode + frame / 3.0,
                     (frame % 5) * 0.125], np.float32)


def action(episode: int, frame: int) -> np.ndarray:
    """(4,) float32; frame / 64 exact, frame / 9 rounded once."""
    return np.array([frame / 64.0, 2.0 * episode - frame, -frame / 9.0, 0.5 * (frame % 2)],
                    np.float32)


def env_state(episode: int, frame: int) -> np.ndarray:
    """(2,) float32"""
    return np.array([0.3 + episode / 100.0, frame / 11.0], np.float32)


def image(episode: int, frame: int, cam_id: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8 RGB: the frame number in binary on the upper half, episode
    and camera on the lower half, as dark/bright 16 px stripes a lossy codec keeps readable."""
    img = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
    low = (episode & 0x1F) | (cam_id << 5)
    for bit in range(8):
        cols = slice(bit * STRIPE, (bit + 1) * STRIPE)
        if (frame >> bit) & 1:
            img[: HEIGHT // 2, cols, :2] = 220
        if (low >> bit) & 1:
            img[HEIGHT // 2:, cols, :2] = 220
    img[..., 2] = 60 + 40 * cam_id  # a constant blue plane per camera
    return img


def read_image(img: np.ndarray) -> tuple[int, int, int]:
    """(frame, episode, cam_id) back from a decoded image (stripe centres, red channel)."""
    def bits(rows: slice) -> int:
        value = 0
        for bit in range(8):
            patch = img[rows, bit * STRIPE + 4:(bit + 1) * STRIPE - 4, 0]
            value |= int(patch.mean() > 125) << bit
        return value

    low = bits(slice(HEIGHT // 2 + 4, HEIGHT - 4))
    return bits(slice(4, HEIGHT // 2 - 4)), low & 0x1F, low >> 5


def features(cameras: tuple[str, ...] = CAMERAS) -> dict[str, dict]:
    """LeRobot feature dict of the synthetic dataset (without LeRobot's default features)."""
    def vec(names: list[str]) -> dict:
        return {"dtype": "float32", "shape": (len(names),), "names": list(names)}

    feats = {"observation.state": vec(STATE_NAMES),
             "observation.environment_state": vec(ENV_STATE_NAMES),
             "action": vec(ACTION_NAMES)}
    for cam in cameras:
        feats[IMAGE_PREFIX + cam] = {"dtype": "video", "shape": (HEIGHT, WIDTH, 3),
                                     "names": ["height", "width", "channels"]}
    return feats


# ------------------------------------------------------------------ LeRobot side


def _offline() -> None:
    """Before any Hugging Face import: never touch the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _lerobot_version() -> str:
    from importlib.metadata import version
    return version("lerobot-dataset")


def cmd_read(args: argparse.Namespace) -> dict:
    _offline()
    import torch
    from ledataset.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    torch.set_num_threads(1)  # a 2-core machine shared with other work
    root = Path(args.root)
    meta = LeRobotDatasetMetadata(args.repo_id, root=root)
    delta = None
    if args.action_horizon:
        delta = {"action": [k / meta.fps for k in range(args.action_horizon)]}
    ds = LeRobotDataset(args.repo_id, root=root, video_backend=args.video_backend,
                        delta_timestamps=delta)
    video_keys = list(ds.meta.video_keys)
    out: dict[str, list] = {}
    tasks: list[str] = []
    max_quant_err = 0.0
    t0 = time.perf_counter()
    for idx in args.indices:
        item = ds[idx]
        tasks.append(item.pop("task"))
        for key, value in item.items():
            arr = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if key in video_keys:
                # (3, H, W) float32 = uint8 / 255 -> (H, W, 3) uint8; the rounding must be exact
                scaled = arr.astype(np.float64) * 255.0
                max_quant_err = max(max_quant_err, float(np.max(np.abs(scaled - np.round(scaled)))))
                arr = np.round(scaled).astype(np.uint8).transpose(1, 2, 0)
            out.setdefault(key, []).append(arr)
    read_s = time.perf_counter() - t0
    report = {
        "lerobot_version": _lerobot_version(), "video_backend": ds.video_backend,
        "num_frames": ds.num_frames, "num_episodes": ds.num_episodes, "fps": ds.fps,
        "features": ds.meta.info["features"], "video_keys": video_keys,
        "tasks": list(ds.meta.tasks.index), "max_video_quantization_error": max_quant_err,
        "episode_lengths": [int(x) for x in ds.meta.episodes["length"]],
        "stats_keys": sorted(ds.meta.stats or {}), "read_s": read_s,
    }
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["indices"] = np.asarray(args.indices, np.int64)
    arrays["task"] = np.array(tasks)
    arrays["report"] = np.array(json.dumps(report))
    np.savez(args.out, **arrays)
    return report


def cmd_write(args: argparse.Namespace) -> dict:
    _offline()
    import torch
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    torch.set_num_threads(1)
    cameras = tuple(args.cameras)
    t0 = time.perf_counter()
    ds = LeRobotDataset.create(args.repo_id, fps=args.fps, features=features(cameras),
                               root=args.root, robot_type=ROBOT_TYPE, use_videos=True,
                               vcodec=args.vcodec)
    for e, length in enumerate(args.frames):
        for k in range(length):
            frame = {"observation.state": state(e, k), "action": action(e, k),
                     "observation.environment_state": env_state(e, k), "task": task(e)}
            for cam_id, cam in enumerate(cameras):
                frame[IMAGE_PREFIX + cam] = image(e, k, cam_id)
            ds.add_frame(frame)
        # one camera at a time: no process pool on a shared 2-core machine
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    return {"lerobot_version": _lerobot_version(), "episode_lengths": args.frames,
            "fps": args.fps, "cameras": list(cameras), "vcodec": args.vcodec,
            "write_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rd = sub.add_parser("read", help="load ROOT with LeRobotDataset and save chosen frames")
    rd.add_argument("root")
    rd.add_argument("--indices", type=int, nargs="+", required=True, help="global frame indices")
    rd.add_argument("--out", required=True, help="output .npz")
    rd.add_argument("--repo-id", default="armstack/interop", help="any name; nothing is fetched")
    rd.add_argument("--video-backend", default=None, choices=("torchcodec", "pyav"),
                    help="LeRobot's decoder (default: LeRobot's own choice, torchcodec when "
                         "installed; LeRobot 0.4.4's pyav path needs torchvision.io.VideoReader, "
                         "which torchvision 0.29 no longer has)")
    rd.add_argument("--action-horizon", type=int, default=0,
                    help="also load action chunks of this many steps (delta_timestamps)")
    wr = sub.add_parser("write", help="write the synthetic dataset with LeRobot's writer")
    wr.add_argument("root", help="must not exist yet")
    wr.add_argument("--frames", type=int, nargs="+", default=[20, 31, 17],
                    help="length of each episode (one number per episode)")
    wr.add_argument("--fps", type=int, default=30)
    wr.add_argument("--cameras", nargs="+", default=list(CAMERAS))
    wr.add_argument("--vcodec", default="libsvtav1", choices=("libsvtav1", "h264", "hevc"))
    wr.add_argument("--repo-id", default="armstack/interop")
    args = parser.parse_args(argv)
    report = cmd_read(args) if args.cmd == "read" else cmd_write(args)
    print(json.dumps({k: v for k, v in report.items() if k != "features"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
