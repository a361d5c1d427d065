"""Detection accuracy: VOC-style average precision per class, with ignored ground truth.

Matching (per image and class, at an IoU threshold): detections in descending score
order each take the unmatched ground-truth box they overlap most; a detection that
matches no counted box but overlaps an ignored one (a mostly hidden cube) is dropped
from the evaluation rather than called a false positive, as COCO treats "crowd" boxes.
AP is the area under the precision envelope over all recall points (PASCAL VOC 2010+).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from armstack_detector.decoders import Detections
from armstack_detector.onnx_runner import OnnxDetector

from detector_lib.boxes import Labels, iou_matrix


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve; recall ascending, (K,) each."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: best at any higher recall
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match_image(
    boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray, iou: float
) -> np.ndarray:
    """Outcome per detection of one class in one image: 1 true, 0 false positive, -1 ignored.

    boxes (N, 4), scores (N,), gt (M, 4), gt_ignore (M,) bool -> (N,) int8, in input order.
    """
    outcome = np.zeros(len(boxes), np.int8)
    if len(boxes) == 0 or len(gt) == 0:
        return outcome
    overlaps = iou_matrix(boxes, gt)  # (N, M)
    taken = np.zeros(len(gt), bool)
    for d in np.argsort(-scores, kind="stable"):
        counted = np.where(~gt_ignore & ~taken, overlaps[d], -1.0)
        best = int(np.argmax(counted))
        if counted[best] >= iou:
            taken[best] = True
            outcome[d] = 1
        elif np.any(overlaps[d][gt_ignore] >= iou):
            outcome[d] = -1
    return outcome


@dataclass(frozen=True)
class ClassMetrics:
    ap: float  # nan when the class has no counted ground truth
    num_gt: int  # counted (not ignored) boxes
    precision: float  # at the operating threshold
    recall: float


@dataclass(frozen=True)
class Evaluation:
    per_class: dict[str, ClassMetrics]
    iou: float
    threshold: float  # operating score threshold of precision / recall

    @property
    def mean_ap(self) -> float:
        aps = [m.ap for m in self.per_class.values() if not math.isnan(m.ap)]
        return float(np.mean(aps)) if aps else math.nan


def evaluate(
    predictions: list[Detections],
    labels: list[Labels],
    class_names: tuple[str, ...],
    iou: float = 0.5,
    threshold: float = 0.25,
) -> Evaluation:
    """AP per class of detections against labels of the same images, in the same pixels."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labelled images")
    per_class = {}
    for c, name in enumerate(class_names):
        scores, outcomes, num_gt = [], [], 0
        for det, lab in zip(predictions, labels, strict=True):
            mine, gt_mine = det.class_ids == c, lab.classes == c
            num_gt += int(np.sum(gt_mine & ~lab.ignore))
            outcomes.append(match_image(det.boxes[mine], det.scores[mine], lab.boxes[gt_mine],
                                        lab.ignore[gt_mine], iou))
            scores.append(det.scores[mine])
        score, outcome = np.concatenate(scores), np.concatenate(outcomes)
        counted = outcome >= 0
        score, hit = score[counted], outcome[counted] == 1
        order = np.argsort(-score, kind="stable")
        tp = np.cumsum(hit[order])
        fp = np.cumsum(~hit[order])
        ap = math.nan
        if num_gt:
            ap = average_precision(tp / num_gt, tp / np.maximum(tp + fp, 1))
        above = score >= threshold
        found = int(np.sum(hit & above))
        per_class[name] = ClassMetrics(
            ap=ap,
            num_gt=num_gt,
            precision=found / max(int(np.sum(above)), 1),
            recall=found / num_gt if num_gt else math.nan,
        )
    return Evaluation(per_class, iou, threshold)


def run_detector(detector: OnnxDetector, images: np.ndarray) -> tuple[list[Detections], float]:
    """Detections of each image (N, H, W, 3) through the runtime path; median total ms."""
    predictions, totals = [], []
    for image in images:
        t0 = time.perf_counter()
        detections, _ = detector.detect(image)
        totals.append((time.perf_counter() - t0) * 1e3)
        predictions.append(detections)
    return predictions, float(np.median(totals))


def format_evaluation(title: str, result: Evaluation) -> str:
    """A small table: AP, precision and recall per class, and the mean AP."""
    lines = [f"{title}: mAP@{result.iou:.2f} {result.mean_ap:.4f}",
             f"  {'class':<14}{'AP':>8}{'gt':>7}{'P@' + str(result.threshold):>9}"
             f"{'R@' + str(result.threshold):>9}"]
    for name, m in result.per_class.items():
        lines.append(f"  {name:<14}{m.ap:8.4f}{m.num_gt:7d}{m.precision:9.3f}{m.recall:9.3f}")
    return "\n".join(lines)
