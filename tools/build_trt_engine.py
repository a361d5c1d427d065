#!/usr/bin/env python3
"""Build a model's TensorRT engine ahead of time, into the cache the nodes read.

ONNX Runtime's TensorRT execution provider compiles an engine the first time a session
runs, which takes tens of seconds to minutes on a robot computer: a detector or policy
node would miss its first frames. This tool opens the same session the node opens
(armstack_common.onnx_session.open_session with provider tensorrt, the same fp16 and
engine-cache options), runs it once on zeros of the model's input shapes so the engine
is built and written to the cache, and runs it again to report the cached latency.
Point the node's `engine_cache_dir` parameter (detector: `engine_cache_dir`; launch
argument `detector_engine_cache`) at the same directory.

    python tools/build_trt_engine.py models/detector/detector.onnx --cache ~/.cache/armstack/trt --fp16

Exit status: 0 when TensorRT built the engine; 2 when this onnxruntime build has no
TensorRT provider or it failed to start (nothing to build; the message says why).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from armstack_common.onnx_session import ORT_PROVIDER_NAMES, open_session

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def zero_inputs(session, dynamic_size: int) -> dict[str, np.ndarray]:
    """Zeros for every input; dynamic dimensions take 1 (batch) or `dynamic_size`."""
    feeds = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else (1 if i == 0 else dynamic_size) for i, d in enumerate(meta.shape)]
        feeds[meta.name] = np.zeros(shape, dtype=_DTYPES.get(meta.type, np.float32))
    return feeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="ONNX model")
    parser.add_argument("--cache", required=True, help="engine cache directory (the node's engine_cache_dir)")
    parser.add_argument("--fp16", action="store_true", help="allow FP16 kernels (as the node's fp16 parameter)")
    parser.add_argument("--dynamic-size", type=int, default=320,
                        help="size used for dynamic non-batch input dimensions (default 320)")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"build_trt_engine: no model at {args.model}", file=sys.stderr)
        return 1
    Path(args.cache).expanduser().mkdir(parents=True, exist_ok=True)
    session = open_session(args.model, "tensorrt", fp16=args.fp16, engine_cache_dir=args.cache,
                           label="build_trt_engine")
    if session.get_providers()[0] != ORT_PROVIDER_NAMES["tensorrt"]:
        print(f"build_trt_engine: TensorRT is not usable with this onnxruntime build "
              f"(session runs on {session.get_providers()[0]}); install onnxruntime-gpu with the "
              f"TensorRT libraries (docker/ has an image) to build engines", file=sys.stderr)
        return 2
    feeds = zero_inputs(session, args.dynamic_size)
    t0 = time.perf_counter()
    session.run(None, feeds)
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"engine for {args.model} built in {build_s:.1f} s into {args.cache} "
          f"(fp16={args.fp16}); cached run median {np.median(times):.2f} ms, p99 {np.percentile(times, 99):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
