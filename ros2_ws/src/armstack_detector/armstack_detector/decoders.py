"""Decoders from raw detector outputs to boxes in original-image pixels, one per export layout.

Supported layouts (B = 1, nc = number of classes, S = network input size):
- `yolo_raw`: ultralytics YOLOv8/YOLO11 plain export. One output (1, 4 + nc, A): rows cx, cy, w, h
  in letterboxed input pixels, then per-class scores (already sigmoid, no objectness).
  Needs confidence threshold + NMS here.
- `end_to_end`: YOLOv10, or ultralytics export with nms=True. One output (1, K, 6): rows
  x1, y1, x2, y2, score, class in letterboxed input pixels, unthresholded.
- `rtdetr_ref`: the RT-DETR reference repository's export. Inputs `images` (1, 3, S, S) float and
  `orig_target_sizes` (1, 2) int64 ordered [w, h]; outputs `labels` (1, Q) int64, `boxes`
  (1, Q, 4) xyxy already in original pixels, `scores` (1, Q). Its post-processor takes a top-k over
  all (query, class) pairs of the focal-loss scores, so one query can appear several times with
  different labels; like upstream we keep those as separate detections.
- `rtdetr_ultralytics`: ultralytics RT-DETR export. One output (1, Q, 4 + nc): normalized cx, cy,
  w, h (0..1 of the stretched input), then per-class scores; we take the best class per query.

The YOLO layouts take a letterboxed input, the RT-DETR layouts a stretched one (`LAYOUTS[...]
.resize`). Every decoder returns `Detections` sorted by descending score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from armstack_detector.preprocess import LetterboxTransform

FLOAT_TYPES = ("tensor(float)", "tensor(float16)")
INT64_TYPE = "tensor(int64)"


class ModelLayoutError(ValueError):
    """The model's inputs/outputs do not match the layout it is decoded with."""


@dataclass(frozen=True)
class TensorMeta:
    """Name, shape and type of one model input or output, as onnxruntime reports them.

    shape entries are ints for static dims, str or None for dynamic ones; dtype is
    onnxruntime's type string, e.g. "tensor(float)".
    """

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


@dataclass(frozen=True)
class Detections:
    """Detections of one image: boxes (N, 4) xyxy float32 in original-image pixels,
    scores (N,) float32, class_ids (N,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.boxes.shape != (n, 4) or self.class_ids.shape != (n,):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"class_ids {self.class_ids.shape}"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        )


@dataclass(frozen=True)
class DecodeConfig:
    """Post-processing parameters shared by all layouts."""

    conf_threshold: float = 0.25
    # ultralytics' predict default; boxes of one class overlapping more than this are suppressed.
    iou_threshold: float = 0.7
    max_det: int = 100
    agnostic_nms: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {self.conf_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {self.max_det}")


# --------------------------------------------------------------------------------------------
# NMS


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (M, 4), all xyxy -> (M,)."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_det: int,
    class_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy NMS. boxes (N, 4) xyxy, scores (N,). Returns kept indices (K,), best score first.

    With class_ids (N,), suppression is class-wise: each class is shifted to its own disjoint
    region of the plane so boxes of different classes never overlap (the offset trick).
    The loop runs once per kept box; each pass is vectorized over the remaining candidates.
    """
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    work = boxes.astype(np.float64)
    if class_ids is not None:
        span = float(work.max() - work.min()) + 1.0
        work = work - work.min() + class_ids.astype(np.float64)[:, None] * span
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        order = rest[_iou_one_to_many(work[best], work[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Decoders


def _expect(ok: bool, layout: str, expected: str, found: str) -> None:
    if not ok:
        raise ModelLayoutError(f"layout '{layout}' expects {expected}; found {found}")


def _single_output(outputs: Mapping[str, np.ndarray], layout: str, last_dim: str) -> np.ndarray:
    shapes = {name: value.shape for name, value in outputs.items()}
    _expect(len(outputs) == 1, layout, "exactly one output", f"{len(outputs)}: {shapes}")
    out = next(iter(outputs.values()))
    _expect(
        out.ndim == 3 and out.shape[0] == 1 and np.issubdtype(out.dtype, np.floating),
        layout,
        f"one float output of shape (1, {last_dim})",
        f"shape {out.shape} dtype {out.dtype}",
    )
    return out[0].astype(np.float32, copy=False)


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h -> (N, 4) x1, y1, x2, y2."""
    half = b[:, 2:4] / 2.0
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def _top(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, cfg: DecodeConfig
) -> Detections:
    """Threshold, sort by score and cap at max_det (the layouts whose model already did NMS)."""
    mask = scores >= cfg.conf_threshold
    boxes, scores, classes = boxes[mask], scores[mask], classes[mask]
    order = np.argsort(-scores, kind="stable")[: cfg.max_det]
    return Detections(
        boxes[order].astype(np.float32),
        scores[order].astype(np.float32),
        classes[order].astype(np.int64),
    )


def decode_yolo_raw(
    outputs: Mapping[str, np.ndarray], transform: LetterboxTransform, cfg: DecodeConfig
) -> Detections:
    pred = _single_output(outputs, "yolo_raw", "4 + nc, anchors")  # (4 + nc, A)
    _expect(
        pred.shape[0] >= 5, "yolo_raw", "4 box rows + at least 1 class row", f"{pred.shape[0]} rows"
    )
    class_scores = pred[4:]  # (nc, A)
    classes = class_scores.argmax(axis=0)  # (A,)
    scores = class_scores.max(axis=0)  # (A,)
    mask = scores >= cfg.conf_threshold
    if not mask.any():
        return Detections.empty()
    boxes = _cxcywh_to_xyxy(pred[:4, mask].T)  # (N, 4) input pixels
    scores, classes = scores[mask], classes[mask]
    keep = nms(boxes, scores, cfg.iou_threshold, cfg.max_det, None if cfg.agnostic_nms else classes)
    return Detections(
        transform.to_original(boxes[keep]),
        scores[keep].astype(np.float32),
        classes[keep].astype(np.int64),
    )


def decode_end_to_end(
    outputs: Mapping[str, np.ndarray], transform: LetterboxTransform, cfg: DecodeConfig
) -> Detections:
    rows = _single_output(outputs, "end_to_end", "K, 6")  # (K, 6)
    _expect(
        rows.shape[1] == 6,
        "end_to_end",
        "rows of 6 (x1, y1, x2, y2, score, class)",
        f"rows of {rows.shape[1]}",
    )
    dets = _top(rows[:, :4], rows[:, 4], np.rint(rows[:, 5]), cfg)
    return Detections(transform.to_original(dets.boxes), dets.scores, dets.class_ids)


def decode_rtdetr_ref(
    outputs: Mapping[str, np.ndarray], transform: LetterboxTransform, cfg: DecodeConfig
) -> Detections:
    _expect(
        set(outputs) == {"labels", "boxes", "scores"},
        "rtdetr_ref",
        "outputs labels, boxes, scores",
        f"outputs {sorted(outputs)}",
    )
    labels, boxes, scores = outputs["labels"], outputs["boxes"], outputs["scores"]
    q = labels.shape[-1]
    _expect(
        labels.shape == (1, q) and boxes.shape == (1, q, 4) and scores.shape == (1, q),
        "rtdetr_ref",
        "labels (1, Q), boxes (1, Q, 4), scores (1, Q)",
        f"labels {labels.shape}, boxes {boxes.shape}, scores {scores.shape}",
    )
    _expect(
        np.issubdtype(labels.dtype, np.integer) and np.issubdtype(scores.dtype, np.floating),
        "rtdetr_ref",
        "integer labels and float scores",
        f"labels {labels.dtype}, scores {scores.dtype}",
    )
    dets = _top(boxes[0].astype(np.float32), scores[0].astype(np.float32), labels[0], cfg)
    # Boxes are in original pixels already (the model scaled by orig_target_sizes); only clip.
    return Detections(transform.clip_to_image(dets.boxes), dets.scores, dets.class_ids)


def decode_rtdetr_ultralytics(
    outputs: Mapping[str, np.ndarray], transform: LetterboxTransform, cfg: DecodeConfig
) -> Detections:
    pred = _single_output(outputs, "rtdetr_ultralytics", "Q, 4 + nc")  # (Q, 4 + nc)
    _expect(
        pred.shape[1] >= 5,
        "rtdetr_ultralytics",
        "rows of 4 box values + at least 1 class score",
        f"rows of {pred.shape[1]}",
    )
    class_scores = pred[:, 4:]  # (Q, nc)
    input_size = np.array([transform.input_w, transform.input_h] * 2, dtype=np.float32)
    boxes = _cxcywh_to_xyxy(pred[:, :4]) * input_size  # (Q, 4) stretched-input pixels
    dets = _top(boxes, class_scores.max(axis=1), class_scores.argmax(axis=1), cfg)
    return Detections(transform.to_original(dets.boxes), dets.scores, dets.class_ids)


# --------------------------------------------------------------------------------------------
# Layouts: which resize each one needs, its decoder, and a check of the model's static I/O.

Decoder = Callable[[Mapping[str, np.ndarray], LetterboxTransform, DecodeConfig], Detections]


@dataclass(frozen=True)
class LayoutSpec:
    name: str
    resize: Literal["letterbox", "stretch"]
    decode: Decoder
    # Name of the extra int64 (1, 2) input fed with the original image's [w, h], if any.
    size_input: str | None = None


LAYOUTS: dict[str, LayoutSpec] = {
    spec.name: spec
    for spec in (
        LayoutSpec("yolo_raw", "letterbox", decode_yolo_raw),
        LayoutSpec("end_to_end", "letterbox", decode_end_to_end),
        LayoutSpec("rtdetr_ref", "stretch", decode_rtdetr_ref, size_input="orig_target_sizes"),
        LayoutSpec("rtdetr_ultralytics", "stretch", decode_rtdetr_ultralytics),
    )
}


def _describe(metas: Sequence[TensorMeta]) -> str:
    return ", ".join(f"{m.name} {list(m.shape)} {m.dtype}" for m in metas) or "none"


def _dim_ok(dim: int | str | None, ok: Callable[[int], bool]) -> bool:
    """A dynamic dim (str/None) passes; a static one must satisfy `ok`."""
    return not isinstance(dim, int) or ok(dim)


def image_input(layout: str, inputs: Sequence[TensorMeta]) -> TensorMeta:
    """The (1, 3, H, W) float image input of a model in `layout`; ModelLayoutError if absent."""
    spec = LAYOUTS[layout]
    image = [m for m in inputs if m.name != spec.size_input]
    expected_count = 2 if spec.size_input else 1
    _expect(
        len(inputs) == expected_count and len(image) == 1,
        layout,
        "inputs images" + (f" and {spec.size_input}" if spec.size_input else " only"),
        f"inputs {_describe(inputs)}",
    )
    meta = image[0]
    _expect(
        len(meta.shape) == 4
        and meta.dtype in FLOAT_TYPES
        and _dim_ok(meta.shape[1], lambda c: c == 3),
        layout,
        "a float image input (1, 3, H, W)",
        _describe([meta]),
    )
    return meta


def _check_rtdetr_ref_io(
    layout: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta]
) -> None:
    size = next(m for m in inputs if m.name == LAYOUTS[layout].size_input)
    _expect(
        size.dtype == INT64_TYPE and len(size.shape) == 2,
        layout,
        f"{size.name} int64 (1, 2)",
        _describe([size]),
    )
    by_name = {m.name: m for m in outputs}
    _expect(
        len(outputs) == 3 and set(by_name) == {"labels", "boxes", "scores"},
        layout,
        "outputs labels, boxes, scores",
        f"outputs {_describe(outputs)}",
    )
    labels, boxes, scores = by_name["labels"], by_name["boxes"], by_name["scores"]
    _expect(
        labels.dtype == INT64_TYPE
        and len(labels.shape) == 2
        and scores.dtype in FLOAT_TYPES
        and len(scores.shape) == 2
        and boxes.dtype in FLOAT_TYPES
        and len(boxes.shape) == 3
        and _dim_ok(boxes.shape[2], lambda d: d == 4),
        layout,
        "labels int64 (1, Q), boxes float (1, Q, 4), scores float (1, Q)",
        f"outputs {_describe(outputs)}",
    )


# For single-output layouts: what the output must look like, as (description, test on shape).
_SINGLE_OUTPUT_RULES: dict[str, tuple[str, Callable[[tuple[int | str | None, ...]], bool]]] = {
    "yolo_raw": ("(1, 4 + nc, anchors)", lambda s: _dim_ok(s[1], lambda d: d >= 5)),
    "end_to_end": ("(1, K, 6)", lambda s: _dim_ok(s[2], lambda d: d == 6)),
    "rtdetr_ultralytics": ("(1, Q, 4 + nc)", lambda s: _dim_ok(s[2], lambda d: d >= 5)),
}


def check_layout(layout: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta]) -> None:
    """Check a model's static I/O against `layout`; ModelLayoutError naming what differs."""
    if layout not in LAYOUTS:
        raise ModelLayoutError(f"unknown layout '{layout}'; known: {sorted(LAYOUTS)}")
    image_input(layout, inputs)
    if LAYOUTS[layout].size_input is not None:
        _check_rtdetr_ref_io(layout, inputs, outputs)
        return
    description, shape_ok = _SINGLE_OUTPUT_RULES[layout]
    _expect(
        len(outputs) == 1
        and len(outputs[0].shape) == 3
        and outputs[0].dtype in FLOAT_TYPES
        and shape_ok(outputs[0].shape),
        layout,
        f"exactly one float output {description}",
        f"outputs {_describe(outputs)}",
    )


def detect_layout(
    inputs: Sequence[TensorMeta],
    outputs: Sequence[TensorMeta],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Guess the export layout from I/O names and shapes (and ultralytics' metadata, if any).

    Rules: an `orig_target_sizes` input or labels/boxes/scores outputs -> rtdetr_ref. One rank-3
    output (1, a, b): a < b (channels first, many anchors, or a dynamic anchor dim) -> yolo_raw;
    otherwise rows of 6 -> end_to_end, wider rows -> rtdetr_ultralytics. Rows of 6 are also an
    RT-DETR with 2 classes; ultralytics writes the model name into the `description` metadata,
    which settles it. The result still goes through `check_layout`.
    """
    names_in = {m.name for m in inputs}
    names_out = {m.name for m in outputs}
    if "orig_target_sizes" in names_in or {"labels", "boxes", "scores"} <= names_out:
        return "rtdetr_ref"
    found = f"inputs {_describe(inputs)}; outputs {_describe(outputs)}"
    if len(outputs) != 1 or len(outputs[0].shape) != 3:
        raise ModelLayoutError(
            f"cannot tell the layout: expected one rank-3 output or RT-DETR reference I/O; found "
            f"{found}. Set the layout explicitly (one of {sorted(LAYOUTS)})."
        )
    description = (metadata or {}).get("description", "").lower().replace("-", "")
    if "rtdetr" in description:
        return "rtdetr_ultralytics"
    _, a, b = outputs[0].shape
    if not isinstance(b, int) or (isinstance(a, int) and a < b):
        return "yolo_raw"
    if not isinstance(a, int) and b == 6:
        return "end_to_end"
    if isinstance(a, int) and a > b:
        return "end_to_end" if b == 6 else "rtdetr_ultralytics"
    raise ModelLayoutError(
        f"cannot tell the layout from output shape {list(outputs[0].shape)} ({found}). "
        f"Set the layout explicitly (one of {sorted(LAYOUTS)})."
    )
