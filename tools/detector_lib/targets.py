"""Training targets on the network's output grid (CenterNet-style heatmaps, FCOS-style boxes).

Per class, a Gaussian bump centred on each box; the cell nearest the box centre is the
one positive (heat exactly 1), its neighbours are negatives whose loss is reduced by
their heat (Zhou et al. 2019, "Objects as Points"). Every cell whose centre lies in the
middle part of a box, and the positive cell, regresses that whole box, so a neighbour
that wins the peak at inference still predicts the right box. Cells inside an ignored
box (a cube mostly hidden or cut by the crop) carry no classification loss for its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector_lib.boxes import Labels


@dataclass(frozen=True)
class TargetConfig:
    """Target geometry on the stride-`stride` grid."""

    stride: int = 8  # px of input per output cell
    # Gaussian sigma in cells = sigma_scale * sqrt(box area) / stride, at least min_sigma.
    sigma_scale: float = 0.15
    min_sigma: float = 0.5
    # Cells whose centre lies in the box shrunk about its centre to this share regress it.
    center_region: float = 0.6

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"TargetConfig.stride must be >= 1, got {self.stride}")
        if not self.sigma_scale > 0.0 or not self.min_sigma > 0.0:
            raise ValueError("TargetConfig.sigma_scale and min_sigma must be > 0")
        if not 0.0 < self.center_region <= 1.0:
            raise ValueError(f"TargetConfig.center_region must be in (0, 1], got "
                             f"{self.center_region}")


@dataclass(frozen=True)
class Targets:
    """Targets of one image on a (gh, gw) grid."""

    heat: np.ndarray  # (nc, gh, gw) float32 in [0, 1], 1 at positives
    ignore: np.ndarray  # (nc, gh, gw) bool, no classification loss there
    box: np.ndarray  # (4, gh, gw) float32 xyxy in input px, where box_mask
    box_mask: np.ndarray  # (gh, gw) bool, cells that regress a box


def cell_centers(grid_hw: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Input-pixel centres of the grid cells: x (gh, gw), y (gh, gw)."""
    gh, gw = grid_hw
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return (xs + 0.5) * stride, (ys + 0.5) * stride


def _inside(box: np.ndarray, cx: np.ndarray, cy: np.ndarray, share: float) -> np.ndarray:
    """Cells whose centre lies in `box` (4,) shrunk to `share` about its centre -> (gh, gw)."""
    mx, my = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    hw, hh = (box[2] - box[0]) * share / 2.0, (box[3] - box[1]) * share / 2.0
    return (np.abs(cx - mx) <= hw) & (np.abs(cy - my) <= hh)


def build_targets(
    labels: Labels, input_hw: tuple[int, int], num_classes: int, cfg: TargetConfig
) -> Targets:
    """Targets for an input of input_hw (multiples of the stride) with `labels` in input px."""
    gh, gw = input_hw[0] // cfg.stride, input_hw[1] // cfg.stride
    heat = np.zeros((num_classes, gh, gw), np.float32)
    ignore = np.zeros((num_classes, gh, gw), bool)
    box_t = np.zeros((4, gh, gw), np.float32)
    box_mask = np.zeros((gh, gw), bool)
    best_dist = np.full((gh, gw), np.inf)  # distance to the box a cell regresses
    cx, cy = cell_centers((gh, gw), cfg.stride)
    for box, cls, skip in zip(labels.boxes, labels.classes, labels.ignore, strict=True):
        mx, my = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        peak = (
            min(max(int(my // cfg.stride), 0), gh - 1),
            min(max(int(mx // cfg.stride), 0), gw - 1),
        )
        region = _inside(box, cx, cy, cfg.center_region)
        region[peak] = True
        if skip:
            ignore[cls] |= _inside(box, cx, cy, 1.0) | region
            continue
        dist2 = ((cx - mx) ** 2 + (cy - my) ** 2) / cfg.stride**2  # (gh, gw), cells^2
        area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
        sigma = max(cfg.sigma_scale * np.sqrt(area) / cfg.stride, cfg.min_sigma)
        bump = np.exp(-dist2 / (2.0 * sigma**2))
        bump[peak] = 1.0
        heat[cls] = np.maximum(heat[cls], bump)
        # Where boxes overlap, a cell regresses the box whose centre is nearest.
        take = region & (dist2 < best_dist)
        best_dist[take] = dist2[take]
        box_t[:, take] = box[:, None]
        box_mask |= take
    # A positive of one box never stays ignored because another box of its class is hidden.
    ignore &= heat < 1.0
    return Targets(heat, ignore, box_t, box_mask)
