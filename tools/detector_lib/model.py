"""The cube detector network and its export wrapper.

`CubeNet` is tensors in, tensors out: an RGB image in [0, 1] (B, 3, H, W), H and W
multiples of 16, to raw maps (B, 4 + nc, H/8, W/8) on a stride-8 grid: 4 box channels
(softplus of each is a cell centre's distance to the box's left, top, right and bottom
edge, in strides) then nc class logits. A small strided backbone reaches stride 16 for
context and its upsampled output is added back at stride 8, where the cubes (~12-50 px
at 320-640 px input) span a few cells.

`YoloRawExport` puts the decode into the graph so the exported model has ultralytics'
raw YOLOv8 output, which armstack_detector's `yolo_raw` decoder reads: (1, 4 + nc, A)
with cx, cy, w, h in input pixels and per-class sigmoid scores, A = (H/8) * (W/8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

STRIDE = 8
# Initial class score of every cell: the focal loss starts from "almost surely
# background" instead of 0.5 everywhere (Lin et al. 2017, RetinaNet, section 3.3).
_PRIOR = 0.01
# Initial box: softplus(bias) strides from the cell centre to each edge, ~18 px wide, the
# size of a cube at 320 px input, so early training spends no steps growing boxes.
_BOX_BIAS = 0.6


@dataclass(frozen=True)
class CubeNetConfig:
    """Network shape."""

    num_classes: int = 6
    widths: tuple[int, int, int, int] = (16, 32, 48, 64)  # channels at strides 2, 4, 8, 16
    head_width: int = 48

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"CubeNetConfig.num_classes must be >= 1, got {self.num_classes}")
        if len(self.widths) != 4 or any(w < 1 for w in self.widths) or self.head_width < 1:
            raise ValueError("CubeNetConfig.widths must be 4 positive ints, head_width > 0")


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CubeNet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 4 + nc, H/8, W/8) raw box and class maps."""

    def __init__(self, config: CubeNetConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        self.stem = nn.Sequential(_conv(3, w1, stride=2), _conv(w1, w2, stride=2))  # /4
        self.stage8 = nn.Sequential(_conv(w2, w3, stride=2), _conv(w3, w3), _conv(w3, w3))
        self.stage16 = nn.Sequential(_conv(w3, w4, stride=2), _conv(w4, w4), _conv(w4, w4))
        self.lateral = _conv(w4, w3, k=1)
        self.head = nn.Sequential(_conv(w3, config.head_width), _conv(config.head_width,
                                                                      config.head_width))
        self.pred = nn.Conv2d(config.head_width, 4 + config.num_classes, 1)
        nn.init.zeros_(self.pred.weight)
        with torch.no_grad():
            self.pred.bias[:4] = _BOX_BIAS
            self.pred.bias[4:] = -torch.log(torch.tensor((1.0 - _PRIOR) / _PRIOR))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p8 = self.stage8(self.stem(images))  # (B, w3, H/8, W/8)
        p16 = self.stage16(p8)  # (B, w4, H/16, W/16)
        fused = p8 + F.interpolate(self.lateral(p16), scale_factor=2.0, mode="nearest")
        return self.pred(self.head(fused))


def cell_grid(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel centres of the cells of raw maps (B, C, h, w): x, y each (1, 1, h, w).

    Built by cumulative sums of ones rather than from the shape, so an ONNX export stays
    valid for any input size.
    """
    ones = torch.ones_like(raw[:1, :1])
    return (ones.cumsum(3) - 0.5) * STRIDE, (ones.cumsum(2) - 0.5) * STRIDE


def decode_boxes(raw: torch.Tensor) -> torch.Tensor:
    """Raw maps (B, 4 + nc, h, w) -> boxes (B, 4, h, w) xyxy in input pixels."""
    gx, gy = cell_grid(raw)
    ltrb = F.softplus(raw[:, :4]) * STRIDE  # (B, 4, h, w)
    return torch.cat(
        [gx - ltrb[:, 0:1], gy - ltrb[:, 1:2], gx + ltrb[:, 2:3], gy + ltrb[:, 3:4]], 1
    )


class YoloRawExport(nn.Module):
    """CubeNet with the decode to the `yolo_raw` layout: (1, 3, H, W) -> (1, 4 + nc, A).

    With `peaks_only`, a cell keeps its score for a class only where it is the 3x3 maximum
    of that class (CenterNet's max-pool peak extraction), so one cube yields one candidate
    and the runtime NMS has little left to do.
    """

    def __init__(self, net: CubeNet, peaks_only: bool = True) -> None:
        super().__init__()
        self.net = net
        self.peaks_only = peaks_only

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.net(images)  # (1, 4 + nc, h, w)
        box = decode_boxes(raw)  # (1, 4, h, w) xyxy
        cxcywh = torch.cat([(box[:, 0:2] + box[:, 2:4]) / 2.0, box[:, 2:4] - box[:, 0:2]], 1)
        scores = torch.sigmoid(raw[:, 4:])  # (1, nc, h, w)
        if self.peaks_only:
            peak = F.max_pool2d(scores, 3, stride=1, padding=1) == scores
            scores = scores * peak.to(scores.dtype)
        return torch.cat([cxcywh, scores], 1).flatten(2)  # (1, 4 + nc, h * w)
