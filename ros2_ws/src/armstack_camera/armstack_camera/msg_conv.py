"""sensor_msgs Image / CameraInfo <-> numpy and CameraModel (cv_bridge has no wheel).

Only message packages are imported here, never rclpy, so these run in plain tests. Images
are copied once into the message (array.array is the only fast path rclpy's generated
setters take); reading a message gives a view of its buffer where the layout allows.
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from armstack_camera.calibration import CameraModel

# encoding -> (dtype, channels) of sensor_msgs/image_encodings that armstack handles.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
_HOST_BIG_ENDIAN = sys.byteorder == "big"


def _bytes_array(arr: np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def numpy_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """(H, W[, C]) array -> Image with `encoding` (checked against the array's dtype/channels)."""
    if encoding not in ENCODINGS:
        raise ValueError(
            f"unsupported image encoding '{encoding}' (supported: {sorted(ENCODINGS)})"
        )
    dtype, channels = ENCODINGS[encoding]
    got_channels = 1 if arr.ndim == 2 else arr.shape[2] if arr.ndim == 3 else -1
    if arr.dtype != dtype or got_channels != channels:
        raise ValueError(
            f"encoding {encoding} needs {dtype} with {channels} channel(s), got {arr.dtype} "
            f"shape {arr.shape}"
        )
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_BIG_ENDIAN and dtype.itemsize > 1)
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = _bytes_array(arr)
    return msg


def image_to_numpy(msg: Image) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array of the encoding's dtype (a view where possible).

    Row padding (step > width * pixel size) and a byte order unlike the host's are handled.
    """
    if msg.encoding not in ENCODINGS:
        raise ValueError(
            f"unsupported image encoding '{msg.encoding}' (supported: {sorted(ENCODINGS)})"
        )
    dtype, channels = ENCODINGS[msg.encoding]
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(
            f"image data too short: {msg.width}x{msg.height} {msg.encoding} needs step >= "
            f"{row_bytes} and {msg.step * msg.height} bytes; got step {msg.step}, "
            f"{len(msg.data)} bytes"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    rows = raw.reshape(msg.height, msg.step)[:, :row_bytes]
    if dtype.itemsize > 1:
        # Contiguous rows are a view; padded rows are copied once to be viewed as wider types.
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
        if rows.dtype != dtype:  # not the host's byte order
            rows = rows.astype(dtype)
    else:
        rows = rows.view(dtype)
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return rows.reshape(shape)


def image_to_rgb(msg: Image) -> np.ndarray:
    """A colour Image (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB."""
    arr = image_to_numpy(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return arr
    if enc == "bgr8":
        return arr[:, :, ::-1]
    if enc == "rgba8":
        return arr[:, :, :3]
    if enc == "bgra8":
        return arr[:, :, 2::-1]
    if enc in ("mono8", "8UC1"):
        return np.repeat(arr[:, :, None], 3, axis=2)
    raise ValueError(f"image encoding '{enc}' is not a colour encoding")


def image_to_depth_mm(msg: Image) -> np.ndarray:
    """A depth Image -> (H, W) uint16 millimetres (16UC1/mono16 as is, 32FC1 metres converted).

    32FC1 is what some drivers and simulators publish; NaN and non-positive values become 0,
    the 16UC1 "no reading".
    """
    arr = image_to_numpy(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return arr
    if msg.encoding == "32FC1":
        mm = np.nan_to_num(arr.astype(np.float64) * 1000.0, nan=0.0, posinf=0.0, neginf=0.0)
        return np.clip(np.rint(mm), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    raise ValueError(f"image encoding '{msg.encoding}' is not a depth encoding (16UC1 or 32FC1)")


def camera_info_from_model(model: CameraModel, header=None) -> CameraInfo:
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.height, msg.width = model.height, model.width
    msg.distortion_model = model.distortion_model
    msg.d = [float(v) for v in model.D]
    msg.k = np.asarray(model.K, dtype=np.float64).ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    msg.p = model.projection().ravel().tolist()
    return msg


def camera_model_from_info(msg: CameraInfo) -> CameraModel:
    """CameraInfo -> CameraModel (frame_id from its header)."""
    model = msg.distortion_model or "plumb_bob"
    P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    return CameraModel(
        int(msg.width),
        int(msg.height),
        np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
        tuple(float(v) for v in msg.d),
        model,
        msg.header.frame_id or "camera_color_optical_frame",
        P if np.any(P != 0.0) else None,
    )
