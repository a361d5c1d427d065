#!/usr/bin/env python3
"""Train armstack's cube detector on simulator renders and export it for the detector node.

One command: render labelled scenes (armstack_sim) -> train a small CNN (torch, CPU) ->
export ONNX in the `yolo_raw` layout at 320 and 640 px input -> evaluate mAP@0.5 on
held-out scenes through the runtime path (armstack_detector's OnnxDetector) -> write the
models, labels.txt and MODEL_CARD.md.

    source .venv/armstack_env.sh
    pip install --no-deps -r requirements-train.txt
    python tools/train_detector.py                    # ~15 min on a 2-core CPU
    python tools/train_detector.py --train-images 200 --steps 50 --out /tmp/det   # smoke run

Exits 1 when the 320 px model's mAP@0.5 on the held-out runtime scene is below --min-map
(the files are written anyway, for inspection).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
for _pkg in ("armstack_common", "armstack_sim", "armstack_detector"):
    sys.path.insert(0, str(REPO / "ros2_ws" / "src" / _pkg))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from armstack_common.machine import cpu_model  # noqa: E402
from armstack_detector.onnx_runner import DetectorConfig, OnnxDetector  # noqa: E402
from armstack_detector.preprocess import letterbox, to_blob  # noqa: E402
from detector_lib.card import CardInfo, DataSummary, render_card  # noqa: E402
from detector_lib.evaluate import Evaluation, evaluate, format_evaluation, run_detector  # noqa: E402
from detector_lib.export import export_error, export_onnx  # noqa: E402
from detector_lib.model import CubeNetConfig  # noqa: E402
from detector_lib.scenes import Dataset, SceneConfig, generate  # noqa: E402
from detector_lib.train import TrainConfig, train  # noqa: E402

MAIN_SIZE = 320  # the detector node's model; other sizes get a suffixed file
EVAL_CONF = 0.01  # low, so the precision-recall curve is complete
NODE_CONF = DetectorConfig.conf_threshold  # the runtime's default: precision/recall there


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "models" / "detector",
                   help="output folder (detector.onnx, detector_640.onnx, labels.txt, card)")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--test-images", type=int, default=300, help="held-out, mixed colours")
    p.add_argument("--runtime-test-images", type=int, default=300,
                   help="held-out, the demo scene (red, green, blue cubes)")
    p.add_argument("--seed", type=int, default=1,
                   help="train data seed; the held-out sets use seed+1 and seed+2")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    p.add_argument("--sizes", type=int, nargs="+", default=[MAIN_SIZE, 640],
                   help=f"export input sizes; {MAIN_SIZE} is detector.onnx")
    p.add_argument("--min-map", type=float, default=0.95)
    return p.parse_args()


def _render(name: str, config: SceneConfig, seed: int, count: int) -> Dataset:
    t0 = time.perf_counter()
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done - reported[0] >= 250:
            reported[0] = done
            print(f"  {name}: {done}/{total} images, {time.perf_counter() - t0:.0f} s", flush=True)

    data = generate(config, seed, count, progress)
    print(f"{name}: {len(data)} images in {time.perf_counter() - t0:.0f} s, boxes per class "
          f"(labelled, ignored): {data.counts()}", flush=True)
    return data


def _summary(name: str, data: Dataset, seed: int, description: str) -> DataSummary:
    return DataSummary(name, seed, len(data), data.counts(), data.digest(), description)


def _evaluate_all(paths: dict[int, Path], sets: dict[str, Dataset], threads: int
                  ) -> tuple[dict[tuple[str, int], Evaluation], dict[int, float]]:
    results, latency = {}, {}
    for size, path in paths.items():
        detector = OnnxDetector(DetectorConfig(model_path=str(path), conf_threshold=EVAL_CONF,
                                               intra_op_threads=threads))
        for name, data in sets.items():
            predictions, ms = run_detector(detector, data.images)
            results[(name, size)] = evaluate(predictions, data.labels, data.class_names,
                                             threshold=NODE_CONF)
            latency[size] = ms
            print(format_evaluation(f"{name} @ {size} px ({ms:.1f} ms/frame)",
                                    results[(name, size)]), flush=True)
    return results, latency


def main() -> int:
    args = _args()
    logging.basicConfig(level=logging.WARNING)
    if MAIN_SIZE not in args.sizes:
        sys.exit(f"--sizes must include {MAIN_SIZE} (the detector node's model)")
    t_start = time.perf_counter()
    scene = SceneConfig()
    runtime_scene = SceneConfig.runtime()
    train_data = _render("train", scene, args.seed, args.train_images)
    tests = {
        "held-out mixed": _render("held-out mixed", scene, args.seed + 1, args.test_images),
        "held-out demo scene": _render("held-out demo scene", runtime_scene, args.seed + 2,
                                       args.runtime_test_images),
    }
    generate_seconds = time.perf_counter() - t_start

    net_config = CubeNetConfig(num_classes=len(scene.class_names))
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch, threads=args.threads)

    def progress(entry: dict[str, float]) -> None:
        print(f"  step {entry['step']:5.0f}  lr {entry['lr']:.5f}  loss {entry['loss']:.4f}  "
              f"cls {entry['cls']:.4f}  box {entry['box']:.4f}  {entry['seconds']:.0f} s",
              flush=True)

    print(f"training {args.steps} steps of {args.batch} on {len(train_data)} images", flush=True)
    result = train(train_data, net_config, train_config, progress)

    digest = train_data.digest()
    paths = {}
    for size in sorted(args.sizes):
        paths[size] = args.out / ("detector.onnx" if size == MAIN_SIZE else f"detector_{size}.onnx")
        export_onnx(result.model, paths[size], size, scene.class_names, {
            "description": "armstack cube detector (CubeNet, trained on armstack_sim renders)",
            "license": "Apache-2.0", "author": "armstack developers",
            "dataset_sha256": digest})
        probe = tests["held-out demo scene"].images[:4]
        blobs = np.concatenate([to_blob(letterbox(img, (size, size))[0]) for img in probe])
        print(f"exported {paths[size]} ({paths[size].stat().st_size / 1024:.0f} KiB), "
              f"max |onnx - torch| {export_error(result.model, paths[size], blobs):.2e}")
    (args.out / "labels.txt").write_text("\n".join(scene.class_names) + "\n")

    evaluations, latency = _evaluate_all(paths, tests, args.threads)
    total_seconds = time.perf_counter() - t_start
    card = CardInfo(
        class_names=scene.class_names,
        files={s: (p.name, p.stat().st_size) for s, p in paths.items()},
        parameters=sum(p.numel() for p in result.model.parameters()),
        command=shlex.join(["python", "tools/train_detector.py", *sys.argv[1:]]),
        data=[_summary("train", train_data, args.seed, "random colour subsets, wide workspace"),
              _summary("held-out mixed", tests["held-out mixed"], args.seed + 1,
                       "as train, other seeds"),
              _summary("held-out demo scene", tests["held-out demo scene"], args.seed + 2,
                       "red, green, blue cubes in the simulator's default workspace")],
        scene=scene, net=net_config, train=train_config,
        train_seconds=result.seconds, generate_seconds=generate_seconds,
        total_seconds=total_seconds, cpu_seconds=time.process_time(),
        final_loss=result.history[-1],
        evaluations=evaluations, latency_ms=latency, machine=f"{os.cpu_count()} cores, {cpu_model()}",
        versions=f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
                 f"python {platform.python_version()}")
    (args.out / "MODEL_CARD.md").write_text(render_card(card))
    print(f"wrote {args.out}/ in {total_seconds:.0f} s")
    main_map = evaluations[("held-out demo scene", MAIN_SIZE)].mean_ap
    if not main_map >= args.min_map:
        print(f"mAP@0.5 {main_map:.4f} at {MAIN_SIZE} px is below --min-map {args.min_map}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
