"""The model card written beside the exported detector (models/detector/MODEL_CARD.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector_lib.evaluate import Evaluation
from detector_lib.model import CubeNetConfig
from detector_lib.scenes import EPISODE_SEED_STRIDE, SceneConfig
from detector_lib.train import TrainConfig


@dataclass(frozen=True)
class DataSummary:
    name: str  # e.g. "train"
    seed: int
    images: int
    counts: dict[str, tuple[int, int]]  # class -> (labelled, ignored)
    sha256: str
    description: str


@dataclass(frozen=True)
class CardInfo:
    class_names: tuple[str, ...]
    files: dict[int, tuple[str, int]]  # input size -> (file name, bytes)
    parameters: int
    command: str
    data: list[DataSummary]
    scene: SceneConfig  # of the training set
    net: CubeNetConfig
    train: TrainConfig
    train_seconds: float
    generate_seconds: float
    total_seconds: float
    cpu_seconds: float  # of the whole command, all threads
    final_loss: dict[str, float]
    evaluations: dict[tuple[str, int], Evaluation]  # (data name, input size) -> result
    latency_ms: dict[int, float]  # input size -> median detect() ms on this machine
    machine: str
    versions: str


def _metrics_table(info: CardInfo) -> list[str]:
    keys = list(info.evaluations)
    header = "| class | " + " | ".join(f"{d} @ {s} px" for d, s in keys) + " |"
    lines = [header, "|---" * (len(keys) + 1) + "|"]
    for name in info.class_names:
        cells = []
        for key in keys:
            m = info.evaluations[key].per_class[name]
            cells.append("—" if math.isnan(m.ap) else f"{m.ap:.4f} ({m.num_gt})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [f"**{info.evaluations[k].mean_ap:.4f}**" for k in keys]
    lines.append("| **mean AP@0.5** | " + " | ".join(means) + " |")
    for label, attr in (("precision", "precision"), ("recall", "recall")):
        cells = []
        for key in keys:
            result = info.evaluations[key]
            values = [getattr(m, attr) for m in result.per_class.values() if m.num_gt]
            cells.append(f"{np.mean(values):.3f}")
        lines.append(f"| mean {label} @ score {info.evaluations[keys[0]].threshold:g} | "
                     + " | ".join(cells) + " |")
    return lines


def _range(values: tuple[float, float]) -> str:
    return f"{values[0]:g} to {values[1]:g}"


def _interface(info: CardInfo) -> list[str]:
    labels = ", ".join(f"{i}: `{n}`" for i, n in enumerate(info.class_names))
    return [
        "## Interface",
        "",
        f"- Classes (id: name; also in `labels.txt` and the ONNX metadata `names`): {labels}.",
        "- Input `images`: float32 (1, 3, S, S), RGB, values /255 in [0, 1], CHW. The frame is "
        "letterboxed to S: scale = min(S/h, S/w), cv2 INTER_LINEAR resize, centred padding "
        "with grey 114 (`armstack_detector.preprocess.letterbox`).",
        "- Output `output0`: float32 (1, 4 + nc, A), A = (S/8)^2, ultralytics' raw YOLOv8 "
        "layout: rows cx, cy, w, h in letterboxed input pixels, then one sigmoid score per "
        "class (no objectness). Only the 3x3 local maximum of each class map keeps its score "
        "(CenterNet's peak extraction, inside the graph); the confidence threshold and NMS "
        "run after, in `armstack_detector.decoders.decode_yolo_raw`.",
        "- Metadata: `names`, `stride` (8), `imgsz`, `task`, `batch`, `license`, "
        "`dataset_sha256`.",
    ]


def _training(info: CardInfo) -> list[str]:
    net, tr, aug = info.net, info.train, info.train.augment
    widths = ", ".join(str(w) for w in net.widths)
    loss = ", ".join(f"{k} {v:.3f}" for k, v in info.final_loss.items()
                     if k in ("loss", "cls", "box"))
    return [
        "## Network and training",
        "",
        f"Strided 3x3 conv + BN + ReLU backbone to stride 16 (widths {widths}), the stride-16 "
        f"map upsampled and added at stride 8, a two-conv head ({net.head_width} channels), a "
        "1x1 prediction of 4 box distances (softplus, in strides, from the cell centre to each "
        "box edge) and per-class logits. Targets: a Gaussian heatmap per class whose cell "
        "nearest each box centre is the positive (CenterNet's penalty-reduced focal loss); "
        f"GIoU loss on the boxes predicted by the cells in each box's central "
        f"{tr.targets.center_region:.0%}; mostly hidden cubes are ignored, not negatives. "
        f"AdamW (lr {tr.lr:g}, {tr.warmup_steps} warm-up steps, cosine decay to "
        f"{tr.final_lr_share:g} x lr).",
        "",
        f"- {tr.steps} steps of {tr.batch_size} random {aug.crop}x{aug.crop} views: scale "
        f"{aug.main_scale:g} x {_range(aug.main_jitter)} (the 320 px input of a 640x480 frame) "
        f"in {aug.main_share:.0%} of views, else log-uniform {_range(aug.scale_range)} so the "
        "640 px input works too; random placement on grey, horizontal flip, brightness and "
        f"contrast ±{aug.brightness:.0%}, channel gain ±{aug.channel_gain:.0%}, noise, blur.",
        f"- Time on this machine ({info.machine}, {tr.threads} torch threads): rendering "
        f"{info.generate_seconds:.0f} s, training {info.train_seconds:.0f} s, whole command "
        f"{info.total_seconds:.0f} s wall, {info.cpu_seconds:.0f} s CPU (the wall time grows "
        f"when other jobs share the cores). Final loss: {loss}.",
        f"- Versions: {info.versions}.",
    ]


def _data(info: CardInfo) -> list[str]:
    sc = info.scene
    rows = [
        f"| {d.name} | {d.seed} | {d.images} | "
        + ", ".join(f"{k.removesuffix('_cube')} {v[0]}/{v[1]}" for k, v in d.counts.items())
        + f" | `{d.sha256[:16]}` | {d.description} |"
        for d in info.data
    ]
    return [
        "## Data",
        "",
        "Rendered by `tools/detector_lib/scenes.py` with the calibrated camera at 640x480 "
        f"(config/camera/calibration.yaml). Episode k of the set with seed S resets the world "
        f"with seed S * {EPISODE_SEED_STRIDE} + k, so the sets share no scene. Each episode "
        f"draws cube poses (the world's reset), light intensities (x{_range(sc.light_scale)}) "
        "and the sun's direction; then either the arm goes to random joint targets "
        f"({sc.home_share:.0%} home) and a frame is taken after {_range(sc.settle_steps)} "
        "physics steps (the arm sweeping through sometimes pushes or hides cubes), or, in "
        f"{sc.expert_share:.0%} of episodes, the scripted pick-and-place expert works and a "
        f"frame is taken every {_range(sc.expert_frame_gap)} s (cubes in the gripper, in the "
        "air, in the bin). Boxes: the 8 projected cube corners, clipped to the image. A cube "
        f"is ignored when less than {sc.min_visible:.0%} of its camera-facing surface is in "
        "frame and unoccluded (depth test against the render).",
        "",
        "| set | seed | images | boxes per colour (labelled/ignored) | sha256 (first 16) "
        "| scenes |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def render_card(info: CardInfo) -> str:
    """Markdown of the model card."""
    files = ", ".join(f"`{name}` ({size} px input, {nbytes / 1024:.0f} KiB)"
                      for size, (name, nbytes) in sorted(info.files.items()))
    latency = ", ".join(f"{s} px {ms:.1f} ms" for s, ms in sorted(info.latency_ms.items()))
    lines = [
        "# armstack cube detector",
        "",
        "A compact anchor-free CNN that finds the simulator's coloured cubes in the 640x480 "
        "colour image. Trained here from scratch on CPU, on images rendered by "
        "`armstack_sim`: no pretrained weights, no third-party data. License: Apache-2.0, "
        "as armstack.",
        "",
        f"Files: {files}: the same weights exported at two static input sizes, "
        f"{info.parameters:,} parameters. The detector node loads `detector/detector.onnx` "
        "(layout auto-detected as `yolo_raw`).",
        "",
        *_interface(info),
        "",
        *_training(info),
        "",
        *_data(info),
        "",
        "## Metrics",
        "",
        "AP@0.5 (VOC all-point; ignored cubes count neither as found nor as false) on the "
        "held-out sets through the runtime path: `OnnxDetector` (ONNX Runtime CPU, letterbox, "
        "decode, class-wise NMS at IoU 0.7) with a 0.01 score threshold; (n) = labelled cubes. "
        "Precision and recall at the detector node's default score threshold, over the "
        "classes present.",
        "",
        *_metrics_table(info),
        "",
        f"Median `detect()` time of a 640x480 frame (letterbox + inference + decode) on this "
        f"machine while evaluating: {latency}. `python tools/bench_detector.py --model "
        "models/detector/detector.onnx --sizes 320` gives the per-stage breakdown.",
        "",
        "Limits: trained on the simulator's flat-shaded cubes and scene only; a real camera "
        "needs real or more strongly randomized data. Colours other than the trained ones "
        "are not detected, or are taken for the nearest trained colour.",
        "",
        "## Reproduce",
        "",
        "```",
        "source .venv/armstack_env.sh",
        "pip install --no-deps -r requirements-train.txt",
        info.command,
        "```",
        "",
        "Rendering and training are seeded; the hashes above identify the exact images "
        "(MuJoCo's software rendering and physics repeat exactly on one machine). Trained "
        "weights can differ in the last bits across CPUs and thread counts.",
        "",
    ]
    return "\n".join(lines)
