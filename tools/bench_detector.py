#!/usr/bin/env python3
"""Benchmark the detector: preprocess / inference / postprocess / total latency per frame.

Runs armstack_detector's OnnxDetector (the same code the detector node runs) on a 640x480 RGB
frame at each requested input size and prints median and p99 per stage, with the machine noted.

    python tools/bench_detector.py                       # models/detector/detector.onnx
    python tools/bench_detector.py --model my.onnx --sizes 320 640 --provider cuda
    python tools/bench_detector.py --synthetic           # no trained model yet (needs `onnx`)

--synthetic builds a YOLO-shaped stand-in (strided conv backbone, heads at strides 8/16/32,
raw yolo layout, dynamic input size) so the pipeline can be timed before a model is trained;
its inference time is that of its own FLOPs (printed), not of any real detector.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import armstack_detector  # noqa: F401  (installed by colcon, or on PYTHONPATH)
except ImportError:
    for _pkg in ("armstack_common", "armstack_detector"):
        sys.path.insert(0, str(REPO / "ros2_ws" / "src" / _pkg))

import onnxruntime as ort  # noqa: E402

from armstack_common.machine import cpu_model  # noqa: E402
from armstack_detector.onnx_runner import TRAIN_TOOL, DetectorConfig, OnnxDetector  # noqa: E402

# The committed detector is exported at two static input sizes, one file each.
DEFAULT_MODELS = [REPO / "models" / "detector" / "detector.onnx", REPO / "models" / "detector" / "detector_640.onnx"]
STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")


def build_synthetic_model(path: Path, num_classes: int = 80) -> float:
    """Write a YOLO-shaped raw-layout model to `path`; returns its GFLOPs at 640x640."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    gflops = 0.0

    def conv(name: str, src: str, cin: int, cout: int, k: int, stride: int, side: int) -> str:
        nonlocal gflops
        w = (rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5).astype(
            np.float32
        )
        b = np.zeros(cout, np.float32)
        if name.startswith("pred"):
            # Class logits start low so that only part of the anchors pass the threshold and
            # NMS has work to do without every anchor being a candidate (count is printed).
            b[4:] = -3.0
        inits.extend(
            [numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b")]
        )
        nodes.append(
            helper.make_node(
                "Conv",
                [src, name + "_w", name + "_b"],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
            )
        )
        out_side = side // stride
        gflops += 2.0 * cin * cout * k * k * out_side * out_side / 1e9
        if k == 1 and cout == 4 + num_classes:
            return name
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    x, c, side = "images", 3, 640
    heads = []
    for level, cout in enumerate((16, 32, 64, 128, 256)):  # strides 2, 4, 8, 16, 32
        x = conv(f"down{level}", x, c, cout, 3, 2, side)
        side //= 2
        x = conv(f"block{level}a", x, cout, cout, 3, 1, side)
        x = conv(f"block{level}b", x, cout, cout, 3, 1, side)
        c = cout
        if level >= 2:
            head = conv(f"head{level}", x, c, 80, 3, 1, side)
            head = conv(f"pred{level}", head, 80, 4 + num_classes, 1, 1, side)
            shape = numpy_helper.from_array(
                np.array([1, 4 + num_classes, -1], np.int64), f"shape{level}"
            )
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [head, shape.name], [f"flat{level}"]))
            heads.append(f"flat{level}")
    nodes.append(helper.make_node("Concat", heads, ["cat"], axis=2))
    nodes.append(helper.make_node("Sigmoid", ["cat"], ["output0"]))
    graph = helper.make_graph(
        nodes,
        "synthetic_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [
            helper.make_tensor_value_info(
                "output0", TensorProto.FLOAT, [1, 4 + num_classes, "anchors"]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return gflops


def bench(detector: OnnxDetector, image: np.ndarray, iters: int, warmup: int) -> tuple[dict, float]:
    """Per-stage (median, p99) in ms, and mean detections per frame."""
    for _ in range(warmup):
        detector.detect(image)
    samples = {stage: [] for stage in STAGES}
    counts = 0
    for _ in range(iters):
        detections, timings = detector.detect(image)
        counts += len(detections)
        timings["total_ms"] = sum(timings.values())
        for stage in STAGES:
            samples[stage].append(timings[stage])
    stats = {s: (float(np.median(v)), float(np.percentile(v, 99))) for s, v in samples.items()}
    return stats, counts / iters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, nargs="+", default=DEFAULT_MODELS,
                        help="ONNX detector model(s); each is timed at every size in --sizes")
    parser.add_argument(
        "--synthetic", action="store_true", help="time a generated YOLO-shaped stand-in"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[0],
                        help="input sizes (px); 0 = the model's own static size")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--provider", default="cpu", choices=["tensorrt", "cuda", "cpu"])
    parser.add_argument("--layout", default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0 = onnxruntime default)"
    )
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    args = parser.parse_args()

    tmp = None
    models = list(args.model)
    note = ""
    if args.synthetic:
        tmp = tempfile.TemporaryDirectory()
        models = [Path(tmp.name) / "synthetic.onnx"]
        gflops = build_synthetic_model(models[0])
        note = (
            f"synthetic YOLO-shaped stand-in, {gflops:.1f} GFLOPs at 640 (not a trained detector)"
        )
        if args.sizes == [0]:
            args.sizes = [320, 640]
    elif missing := [m for m in models if not m.is_file()]:
        print(
            f"No detector model at {', '.join(map(str, missing))}.\nTrain and export one with "
            f"{TRAIN_TOOL}, pass --model PATH, or time the pipeline on a stand-in with --synthetic.",
            file=sys.stderr,
        )
        return 2

    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}; python {platform.python_version()}; "
        f"onnxruntime {ort.__version__}"
    )
    image, source = sample_frame()
    print(f"frame: {source}")
    for model in models:
        print(f"model: {model}" + (f" ({note})" if note else ""))
        run_model(model, image, args)
    if tmp is not None:
        tmp.cleanup()
    return 0


def sample_frame() -> tuple[np.ndarray, str]:
    """A 640x480 frame of the simulated scene (so decode and NMS see real detections)."""
    try:
        from armstack_sim.world import SimWorld
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), "random noise"
    world = SimWorld()
    world.reset(0)
    rgb, _ = world.render_rgbd()
    world.close()
    return rgb, "simulated scene, seed 0"


def run_model(model: Path, image: np.ndarray, args: argparse.Namespace) -> None:
    for size in args.sizes:
        config = DetectorConfig(
            model_path=str(model),
            layout=args.layout,
            input_size=size,
            provider=args.provider,
            conf_threshold=args.conf,
            intra_op_threads=args.threads,
        )
        try:
            detector = OnnxDetector(config)
        except ValueError as err:
            print(f"input {size or 'model'}: skipped ({err})")
            continue
        stats, per_frame = bench(detector, image, args.iters, args.warmup)
        print(
            f"input {detector.input_hw[1]}x{detector.input_hw[0]}, layout {detector.layout}, provider {detector.providers[0]}, "
            f"{args.iters} frames 640x480, {per_frame:.1f} detections/frame"
        )
        for stage in STAGES:
            median, p99 = stats[stage]
            print(f"  {stage[:-3]:<12} median {median:8.2f} ms   p99 {p99:8.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
