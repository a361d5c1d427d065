#!/usr/bin/env python3
"""Inspect LeRobot v3.0 datasets (armstack demonstrations or any LeRobot-written dataset).

    python tools/dataset.py validate PATH [--tolerance-s 1e-4] [--no-decode]
    python tools/dataset.py summary PATH
    python tools/dataset.py bench [--codec libsvtav1] [--cameras 1] [--width 640] [--height 480]
                                  [--frames 300] [--fps 30] [--realtime]
    python tools/dataset.py to-mcap DATASET OUT [--episodes 0,1] [--image-every N | --no-images]
    python tools/dataset.py from-mcap BAG OUT_DATASET [--fps 30] [--task TEXT] [--no-images]
                                      [--param max_age_image=0.2 ...]

validate exits 0 when the dataset is consistent (warnings allowed), 1 when it is not, and
prints every problem found: schema, timestamps, video frame timing, index continuity, stats.
summary prints episodes, frames, fps, duration, tasks and features.
bench records one synthetic episode (textured scene, moving block, sensor noise) into a
temporary dataset and reports encoder throughput per camera, add_frame latency and save time;
--realtime paces add_frame at fps, as the recorder does, instead of feeding as fast as possible.
to-mcap writes episodes as a rosbag2 MCAP bag (`ros2 bag play OUT`, Foxglove): OUT is a bag
directory (OUT/OUT_0.mcap + metadata.yaml) or, ending in .mcap, a single file. Topics:
joint_states, joint_command or ee_command, objects, camera/<name>/image_raw, teleop/episode (see
armstack_recorder/mcap_bag.py). Playing it into a live graph moves the arm: use --topics.
from-mcap records such a bag (or one recorded from armstack's graph) into a new dataset with the
recorder's own sampling rules; episodes follow teleop/episode, else the bag is one episode.
"""

import argparse
import decimal
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
from armstack_common.params import comma_separated
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.mcap_bag import (
    BagError,
    ExportConfig,
    ImportConfig,
    dataset_to_mcap,
    mcap_to_dataset,
    parse_param,
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


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _unix_ns(text: str) -> int:
    """Unix seconds (decimal text) -> integer ns, without float rounding."""
    try:
        return int(decimal.Decimal(text) * 10**9)
    except (decimal.InvalidOperation, ValueError):
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}")


def _param(text: str) -> tuple[str, object]:
    try:
        return parse_param(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def cmd_to_mcap(args: argparse.Namespace) -> int:
    try:
        config = ExportConfig(episodes=args.episodes, image_every=0 if args.no_images
                              else args.image_every, start_ns=args.start_time,
                              gap_s=args.gap, namespace=args.namespace,
                              compression=args.compression)
        result = dataset_to_mcap(args.dataset, args.out, config)
    except (BagError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"bag       {result.bag}" + (f" ({result.mcap_path.name} + metadata.yaml)"
                                       if result.bag != result.mcap_path else ""))
    print(f"episodes  {len(result.episodes)} ({', '.join(map(str, result.episodes))}), "
          f"{result.frames} frames")
    for topic, count in result.messages.items():
        print(f"  {topic}: {count} messages")
    print(f"size      {result.bytes / 2**20:.2f} MiB ({args.compression}), "
          f"written in {result.seconds:.2f} s")
    return 0


def cmd_from_mcap(args: argparse.Namespace) -> int:
    try:
        config = ImportConfig(fps=args.fps, task=args.task, joints=args.joints,
                              action_source=args.action, object_classes=args.classes,
                              images=not args.no_images, namespace=args.namespace,
                              params=dict(args.param))
        result = mcap_to_dataset(args.bag, args.out, config)
    except (BagError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for report in result.reports:
        print(report.summary())
    if result.rejected:
        print("rejected  " + ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items())))
    saved = result.saved
    print(f"dataset   {result.dataset}: {len(saved)} of {len(result.reports)} episode(s) saved, "
          f"{sum(r.frames for r in saved)} frames, from {result.messages} messages in "
          f"{result.seconds:.2f} s")
    return 0 if saved else 1


def _add_mcap_commands(sub: argparse._SubParsersAction) -> None:
    p_to = sub.add_parser("to-mcap", help="write a dataset as a rosbag2 MCAP bag")
    p_to.add_argument("dataset", type=Path)
    p_to.add_argument("out", type=Path, help="bag directory to create, or a file ending in .mcap")
    p_to.add_argument("--episodes", type=_int_list, default=None, help="e.g. 0,1 (default: all)")
    images = p_to.add_mutually_exclusive_group()
    images.add_argument("--image-every", type=int, default=1, metavar="N",
                        help="send the images of every Nth frame only (smaller bag)")
    images.add_argument("--no-images", action="store_true", help="no camera topics")
    p_to.add_argument("--start-time", type=_unix_ns, default=_unix_ns("1735689600"),
                      metavar="SECONDS",
                      help="stamp of the first frame, Unix time (default 2025-01-01T00:00Z)")
    p_to.add_argument("--gap", type=float, default=1.0, help="seconds between episodes")
    p_to.add_argument("--namespace", default="", help="prefix of every topic")
    p_to.add_argument("--compression", choices=["zstd", "lz4", "none"], default="zstd")
    p_to.set_defaults(func=cmd_to_mcap)
    p_from = sub.add_parser("from-mcap", help="record a rosbag2 MCAP bag into a new dataset")
    p_from.add_argument("bag", type=Path, help="bag directory or .mcap file")
    p_from.add_argument("out", type=Path, help="dataset directory to create")
    p_from.add_argument("--fps", type=int, default=None,
                        help="dataset clock (default: the bag's dataset fps, else 30)")
    p_from.add_argument("--task", default=None, help="task of a bag without teleop/episode")
    p_from.add_argument("--joints", type=comma_separated, default=None,
                        help="joint names of observation.state (default: as in the bag)")
    p_from.add_argument("--action", choices=["joint_command", "ee_command"], default=None)
    p_from.add_argument("--classes", type=comma_separated, default=None,
                        help="object classes of environment_state (default: as in the bag)")
    p_from.add_argument("--no-images", action="store_true", help="leave the cameras out")
    p_from.add_argument("--namespace", default=None, help="topic prefix (default: as written)")
    p_from.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                        help="a recorder parameter, e.g. max_age_image=0.2 or video_codec=libx264")
    p_from.set_defaults(func=cmd_from_mcap)


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
    _add_mcap_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
