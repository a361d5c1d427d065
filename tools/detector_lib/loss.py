"""Training loss of CubeNet: focal loss on the class heatmaps, GIoU on the boxes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from detector_lib.model import decode_boxes


@dataclass(frozen=True)
class LossConfig:
    """Weights and exponents of the loss terms."""

    alpha: float = 2.0  # focusing exponent of the focal loss
    beta: float = 4.0  # how strongly heat near a centre discounts a negative (CenterNet)
    box_weight: float = 2.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "box_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")


def heatmap_focal_loss(
    logits: torch.Tensor, heat: torch.Tensor, ignore: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of positives.

    logits, heat (B, nc, h, w) float; ignore (B, nc, h, w) bool. Positives are heat == 1.
    """
    pos = heat >= 1.0
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -((1.0 - p) ** alpha * log_p)[pos].sum()
    neg_weight = (1.0 - heat) ** beta * (~ignore & ~pos).to(heat.dtype)
    neg_loss = -(p**alpha * log_not_p * neg_weight).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - generalized IoU of box pairs (N, 4) xyxy -> (N,) (Rezatofighi et al. 2019)."""
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-9)
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2]))
    hull_area = hull.clamp(min=0).prod(1)
    return 1.0 - (iou - (hull_area - union) / hull_area.clamp(min=1e-9))


def detector_loss(
    raw: torch.Tensor, batch: dict[str, torch.Tensor], cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of raw network maps (B, 4 + nc, h, w) against a batch of targets.

    batch: heat (B, nc, h, w), ignore (B, nc, h, w) bool, box (B, 4, h, w), box_mask (B, h, w).
    Returns the total loss and its terms as floats.
    """
    cls = heatmap_focal_loss(raw[:, 4:], batch["heat"], batch["ignore"], cfg.alpha, cfg.beta)
    mask = batch["box_mask"]  # (B, h, w)
    if mask.any():
        pred = decode_boxes(raw).permute(0, 2, 3, 1)[mask]  # (N, 4)
        target = batch["box"].permute(0, 2, 3, 1)[mask]  # (N, 4)
        box = giou_loss(pred, target).mean()
    else:
        box = raw.sum() * 0.0  # keeps the graph connected on a batch without boxes
    total = cls + cfg.box_weight * box
    terms = {"loss": total, "cls": cls, "box": box}
    return total, {name: float(value.detach()) for name, value in terms.items()}
