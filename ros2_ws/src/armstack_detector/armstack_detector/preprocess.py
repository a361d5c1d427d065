"""Image preprocessing for the detector: resize to the network input and back.

Two resize modes cover the supported export layouts:
- letterbox (YOLO family): keep the aspect ratio, pad the rest with grey 114, centred;
- stretch (RT-DETR family): resize each axis independently, no padding.

Both return a `LetterboxTransform` that maps boxes between original-image pixels and
network-input pixels. Coordinates are continuous pixel-edge coordinates (0..w, 0..h), the
convention detector boxes use; in that convention `cv2.resize` scales coordinates exactly by
new_size / old_size, so the inverse mapping here recovers original boxes exactly (up to float
rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Grey used by ultralytics' LetterBox for padding; models trained with it expect it at inference.
PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxTransform:
    """Affine map between original and network-input pixels: x_in = x_orig * scale_x + pad_x.

    A letterbox has scale_x ~= scale_y (they differ only by the rounding of the resized size)
    and centred pads; a stretch has independent scales and zero pads.
    """

    orig_w: int
    orig_h: int
    input_w: int
    input_h: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Original-image boxes (N, 4) xyxy -> network-input boxes (N, 4) float32."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        return (boxes * scale + pad).astype(np.float32)

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Network-input boxes (N, 4) xyxy -> original-image boxes (N, 4) float32, clipped.

        Clipping keeps boxes that reach into the letterbox padding inside the image.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        return self.clip_to_image((boxes - pad) / scale)

    def clip_to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Original-image boxes (N, 4) xyxy clipped to the image -> (N, 4) float32."""
        out = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        np.clip(out[:, 0::2], 0.0, self.orig_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, self.orig_h, out=out[:, 1::2])
        return out.astype(np.float32)


def _check_image(image: np.ndarray) -> tuple[int, int]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image.shape[0], image.shape[1]


def _check_input_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    in_h, in_w = (int(v) for v in input_hw)
    if in_h <= 0 or in_w <= 0:
        raise ValueError(f"input size must be positive, got (h, w) = {input_hw}")
    return in_h, in_w


def letterbox(
    image: np.ndarray, input_hw: tuple[int, int]
) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping aspect ratio, then pad centred to input_hw with grey.

    image: (H, W, 3) uint8. Returns the (in_h, in_w, 3) uint8 input image and its transform.
    """
    h, w = _check_image(image)
    in_h, in_w = _check_input_hw(input_hw)
    ratio = min(in_h / h, in_w / w)
    new_w = min(in_w, max(1, round(w * ratio)))
    new_h = min(in_h, max(1, round(h * ratio)))
    resized = image
    if (new_w, new_h) != (w, h):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x = (in_w - new_w) // 2
    pad_y = (in_h - new_h) // 2
    padded = cv2.copyMakeBorder(
        resized,
        pad_y,
        in_h - new_h - pad_y,
        pad_x,
        in_w - new_w - pad_x,
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    # The effective per-axis scale is new/old size, not `ratio`: that is what cv2.resize applied.
    transform = LetterboxTransform(w, h, in_w, in_h, new_w / w, new_h / h, pad_x, pad_y)
    return padded, transform


def stretch(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize each axis to input_hw independently (no padding), as RT-DETR exports expect.

    image: (H, W, 3) uint8. Returns the (in_h, in_w, 3) uint8 input image and its transform.
    """
    h, w = _check_image(image)
    in_h, in_w = _check_input_hw(input_hw)
    resized = image
    if (in_w, in_h) != (w, h):
        resized = cv2.resize(image, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    return resized, LetterboxTransform(w, h, in_w, in_h, in_w / w, in_h / h, 0, 0)


def to_blob(image: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [0, 1] of `dtype`, in one vectorized pass."""
    h, w = _check_image(image)
    blob = np.empty((1, 3, h, w), dtype=dtype)
    np.multiply(image.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=blob[0], casting="unsafe")
    return blob
