#!/usr/bin/env python3
"""Inspect LeRobot v3.0 datasets (armstack demonstrations or any LeRobot-written dataset).

    python tools/dataset.py validate PATH [--tolerance-s 1e-4] [--no-decode]
    python tools/dataset.py summary PATH
    python tools/dataset.py bench [--codec libsvtav1] [--cameras 1] [--width 640] [--height 480]
                                  [--frames 300] [--fps 30] [--realtime]

validate exits 0 when the dataset is consistent (warnings allowed), 1 when it is not, and
prints every problem found: schema, timestamps, video frame timing, index continuity, stats.
summary prints episodes, frames, fps, duration, tasks and features.
bench records one synthetic episode (textured scene, moving block, sensor noise) into a
temporary dataset and reports encoder throughput per camera, add_frame latency and save time;
--realtime paces add_frame at fps, as the recorder does, instead of feeding as fast as possible.
"""

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import armstack_recorder  # noqa: F401
except ImportError:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws/src/armstack_recorder"))
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.metadata import DatasetFormatError
from armstack_recorder.validate import validate_dataset
from armstack_recorder.video import CODECS, VideoConfig


def cmd_validate(args: argparse.Namespace) -> int:
    report = validate_dataset(args.path, tolerance_s=args.tolerance_s, decode=not args.no_decode)
    print(report.format())
    return 0 if report.ok else 1


def _describe_feature(name: str, ft: dict) -> str:
    text = f"  {name}: {ft['dtype']} {list(ft['shape'])}"
    if ft["dtype"] == "video" and ft.get("info"):
        block = ft["info"]
        text += f" {block.get('video.codec')} {block.get('video.pix_fmt')}"
    elif isinstance(ft.get("names"), list):
        names = ft["names"]
        text += " " + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return text


def cmd_summary(args: argparse.Namespace) -> int:
    try:
        reader = LeRobotDatasetReader(args.path)
    except (DatasetFormatError, OSError, ValueError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    info, fps = reader.meta.info, reader.fps
    lengths = [ep.length for ep in reader.meta.episodes]
    print(f"dataset   {reader.root}")
    print(f"format    LeRobot {info['codebase_version']}, robot_type {info.get('robot_type')}")
    print(f"episodes  {reader.num_episodes}")
    print(f"frames    {reader.num_frames} at {fps} fps = {reader.num_frames / fps:.1f} s")
    if lengths:
        mean = sum(lengths) / len(lengths)
        print(f"episode   min {min(lengths) / fps:.2f} s, mean {mean / fps:.2f} s, "
              f"max {max(lengths) / fps:.2f} s")
    print(f"tasks     {len(reader.tasks)}")
    for i, task in enumerate(reader.tasks):
        count = sum(task in ep.tasks for ep in reader.meta.episodes)
        print(f"  [{i}] {task!r}: {count} episode(s)")
    print("features")
    for name, ft in reader.features.items():
        print(_describe_feature(name, ft))
    return 0


def _scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A static background, (H, W, 3) float: gradients plus blotchy texture ~8 px across
    (per-pixel white noise would be incompressible, unlike any camera image)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * x / width, 80 + 70 * y / height, 120 + 30 * np.sin(x / 23)], -1)
    coarse = rng.normal(0, 12, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:height, :width]
    # a 3x3 box filter softens the block edges
    soft = sum(np.roll(np.roll(texture, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return base + soft / 9


def _frame(scene: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The scene with a block moving across it and per-frame sensor noise, uint8."""
    img = scene + rng.normal(0, 2, size=scene.shape[:2] + (1,)).astype(np.float32)
    h, w = scene.shape[:2]
    x0 = int((k * 4) % (w - 60))
    img[h // 2 - 30:h // 2 + 30, x0:x0 + 60] = (200, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def cmd_bench(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(0)
    names = [f"cam{i}" for i in range(args.cameras)]
    scene = _scene(args.height, args.width, rng)
    # pre-render so the timing measures the writer, not the synthetic camera (cycled if short)
    frames = [_frame(scene, k, rng) for k in range(min(args.frames, 60))]
    with tempfile.TemporaryDirectory(prefix="armstack-bench-") as tmp:
        spec = FeatureSpec(state_names=[f"j{i}" for i in range(7)],
                           action_names=[f"a{i}" for i in range(7)],
                           cameras=[CameraSpec(n, args.height, args.width) for n in names])
        cfg = WriterConfig(root=Path(tmp) / "ds", fps=args.fps, robot_type="bench", features=spec,
                           video=VideoConfig(codec=args.codec, threads=args.threads))
        latencies = []
        with LeRobotDatasetWriter(cfg) as writer:
            writer.start_episode("bench")
            t_start = time.perf_counter()
            for k in range(args.frames):
                if args.realtime:
                    delay = t_start + k / args.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                img = frames[k % len(frames)]
                t0 = time.perf_counter()
                writer.add_frame(np.zeros(7), np.zeros(7), images={n: img for n in names})
                latencies.append(time.perf_counter() - t0)
            t_fed = time.perf_counter()
            report = writer.save_episode()
            t_end = time.perf_counter()
        video_mb = sum(p.stat().st_size for p in report.video_paths.values()) / 2**20
    lat_ms = np.array(latencies) * 1e3
    total = t_end - t_start
    print(f"machine   {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"setup     {args.cameras} camera(s) {args.width}x{args.height}, {args.codec} "
          f"crf {cfg.video.crf} gop {cfg.video.gop}, {args.frames} frames, "
          f"{'paced at ' + str(args.fps) + ' fps' if args.realtime else 'fed as fast as possible'}")
    print(f"encode    {args.frames / total:.1f} frames/s per camera "
          f"({args.frames * args.cameras / total:.1f} frames/s total), "
          f"{video_mb / args.frames / args.cameras * 1024:.1f} KiB/frame")
    print(f"add_frame median {np.median(lat_ms):.2f} ms, p99 {np.percentile(lat_ms, 99):.2f} ms, "
          f"max {lat_ms.max():.2f} ms (blocked on full queues {report.encoder_blocked_s:.2f} s, "
          f"queue peak {report.encoder_queue_peak}/{cfg.encoder_queue_frames})")
    print(f"save      {report.save_s:.2f} s after the last frame (encoder drain "
          f"{report.encode_wait_s:.2f} s); feeding took {t_fed - t_start:.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_val = sub.add_parser("validate", help="check a dataset's consistency")
    p_val.add_argument("path", type=Path)
    p_val.add_argument("--tolerance-s", type=float, default=1e-4,
                       help="timestamp tolerance in seconds (LeRobot's default 1e-4)")
    p_val.add_argument("--no-decode", action="store_true",
                       help="skip decoding frames (packet timing is still checked)")
    p_val.set_defaults(func=cmd_validate)
    p_sum = sub.add_parser("summary", help="print episodes, frames, fps, tasks, features")
    p_sum.add_argument("path", type=Path)
    p_sum.set_defaults(func=cmd_summary)
    p_bench = sub.add_parser("bench", help="measure recording and encoding throughput")
    p_bench.add_argument("--codec", choices=CODECS, default="libsvtav1")
    p_bench.add_argument("--cameras", type=int, default=1)
    p_bench.add_argument("--width", type=int, default=640)
    p_bench.add_argument("--height", type=int, default=480)
    p_bench.add_argument("--frames", type=int, default=300)
    p_bench.add_argument("--fps", type=int, default=30)
    p_bench.add_argument("--threads", type=int, default=None, help="encoder threads per camera")
    p_bench.add_argument("--realtime", action="store_true", help="pace add_frame at fps")
    p_bench.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
