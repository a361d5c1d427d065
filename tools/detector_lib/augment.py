"""Random training views of a rendered image: scale, crop, flip and photometric jitter.

A view is what the network would see of the image letterboxed at some input size,
cropped to a square window: the image is resized by a random factor with the runtime's
interpolation (cv2 INTER_LINEAR, armstack_detector.preprocess.letterbox), placed at a
random offset on a grey (114) canvas. Scales around 0.5 are the 320 px input of a
640x480 frame, around 1.0 the 640 px input; training on both lets one network serve
either input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detector_lib.boxes import Labels, box_area

PAD_VALUE = 114  # the runtime letterbox's grey


@dataclass(frozen=True)
class AugmentConfig:
    """Distribution of training views."""

    crop: int = 256  # px, square view side (a multiple of the network stride)
    # With probability main_share the scale is main_scale * U(main_jitter); otherwise
    # log-uniform in scale_range.
    main_scale: float = 0.5
    main_share: float = 0.5
    main_jitter: tuple[float, float] = (0.85, 1.15)
    scale_range: tuple[float, float] = (0.42, 1.15)
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.2  # gain drawn from 1 +- this
    contrast: float = 0.2
    channel_gain: float = 0.05  # per-channel gain 1 +- this; small, as colour is the class
    noise_sigma: float = 4.0  # max std of added Gaussian noise, in 0..255 units
    blur: float = 0.2  # probability of a 3x3 Gaussian blur
    min_kept_area: float = 0.45  # a box cut by the crop to less than this share is ignored
    min_box_side: float = 2.0  # px, narrower remnants are dropped

    def __post_init__(self) -> None:
        if self.crop < 32 or self.crop % 32:
            raise ValueError(f"AugmentConfig.crop must be a multiple of 32 >= 32, got {self.crop}")
        lo, hi = self.scale_range
        if not 0.0 < lo <= hi:
            raise ValueError("AugmentConfig.scale_range must be (low, high) with 0 < low <= high")
        lo, hi = self.main_jitter
        if not 0.0 < lo <= hi or not self.main_scale > 0.0:
            raise ValueError("AugmentConfig.main_scale and main_jitter must be > 0, low <= high")
        for name in ("main_share", "flip", "blur", "min_kept_area", "brightness", "contrast",
                     "channel_gain"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {value}")
        if self.noise_sigma < 0.0 or self.min_box_side < 0.0:
            raise ValueError("AugmentConfig.noise_sigma and min_box_side must be >= 0")


def _draw_scale(cfg: AugmentConfig, rng: np.random.Generator) -> float:
    if rng.random() < cfg.main_share:
        return cfg.main_scale * rng.uniform(*cfg.main_jitter)
    lo, hi = np.log(cfg.scale_range)
    return float(np.exp(rng.uniform(lo, hi)))


def _offset(size: int, crop: int, rng: np.random.Generator) -> int:
    """Where the resized image's left/top edge lands in the crop window."""
    lo, hi = min(0, crop - size), max(0, crop - size)
    return int(rng.integers(lo, hi + 1))


def _photometric(view: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 -> (S, S, 3) uint8 with brightness, contrast, gain, noise, blur."""
    img = view.astype(np.float32)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    gains = rng.uniform(1 - cfg.channel_gain, 1 + cfg.channel_gain, 3)
    img *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness) * gains
    if cfg.noise_sigma > 0.0:
        img += rng.normal(0.0, rng.uniform(0.0, cfg.noise_sigma), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.blur:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def random_view(
    image: np.ndarray, labels: Labels, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, Labels]:
    """A random (crop, crop, 3) uint8 view of an (H, W, 3) image and its labels in view pixels."""
    h, w = image.shape[:2]
    scale = _draw_scale(cfg, rng)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    ox, oy = _offset(new_w, cfg.crop, rng), _offset(new_h, cfg.crop, rng)
    view = np.full((cfg.crop, cfg.crop, 3), PAD_VALUE, np.uint8)
    # Overlap of the placed image [ox, ox + new_w) with the window [0, crop).
    x0, x1 = max(ox, 0), min(ox + new_w, cfg.crop)
    y0, y1 = max(oy, 0), min(oy + new_h, cfg.crop)
    view[y0:y1, x0:x1] = resized[y0 - oy : y1 - oy, x0 - ox : x1 - ox]

    sx, sy = new_w / w, new_h / h  # what cv2.resize applied per axis
    boxes = labels.boxes.astype(np.float64) * [sx, sy, sx, sy] + [ox, oy, ox, oy]  # (N, 4)
    clipped = np.clip(boxes, 0.0, cfg.crop)
    kept_share = box_area(clipped) / np.maximum(box_area(boxes), 1e-12)
    sides = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
    keep = sides >= cfg.min_box_side
    ignore = labels.ignore | (kept_share < cfg.min_kept_area)
    if rng.random() < cfg.flip:
        view = np.ascontiguousarray(view[:, ::-1])
        clipped = np.stack(
            [cfg.crop - clipped[:, 2], clipped[:, 1], cfg.crop - clipped[:, 0], clipped[:, 3]], 1
        )
    out = Labels(
        clipped[keep].astype(np.float32), labels.classes[keep], ignore[keep], labels.visible[keep]
    )
    return _photometric(view, cfg, rng), out
