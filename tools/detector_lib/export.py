"""ONNX export of a trained CubeNet in the `yolo_raw` layout, with ultralytics-style metadata."""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from detector_lib.model import STRIDE, CubeNet, YoloRawExport

OPSET = 17
# onnxruntime releases older than the onnx package read models up to this IR version.
MAX_IR_VERSION = 10


def export_onnx(
    model: CubeNet,
    path: Path,
    input_size: int,
    class_names: Sequence[str],
    metadata: Mapping[str, str] | None = None,
    peaks_only: bool = True,
) -> None:
    """Write `model` as a static (1, 3, S, S) -> (1, 4 + nc, (S/8)^2) ONNX model.

    The metadata carries what armstack_detector reads (`names`, as ultralytics writes it:
    a dict literal of class id -> name) plus stride, imgsz, task and the given entries.
    """
    if input_size <= 0 or input_size % 32:
        raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
    if len(class_names) != model.config.num_classes:
        raise ValueError(f"{len(class_names)} class names for {model.config.num_classes} classes")
    wrapper = YoloRawExport(copy.deepcopy(model).eval(), peaks_only).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        # The TorchScript exporter: the torch.export-based default needs the onnxscript
        # package, and this graph (convolutions and element-wise ops) needs nothing newer.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper, (dummy,), str(raw_path), dynamo=False, input_names=["images"],
                output_names=["output0"], opset_version=OPSET, do_constant_folding=True)
        proto = onnx.load(str(raw_path))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    names = {i: str(n) for i, n in enumerate(class_names)}
    entries = {
        "names": repr(names),
        "stride": str(STRIDE),
        "imgsz": repr([input_size, input_size]),
        "task": "detect",
        "batch": "1",
        **(metadata or {}),
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def export_error(model: CubeNet, path: Path, images: np.ndarray, peaks_only: bool = True
                 ) -> float:
    """Largest |onnxruntime - torch| over the outputs for images (N, 3, S, S) float32."""
    wrapper = YoloRawExport(model, peaks_only).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for image in images:
        blob = image[None].astype(np.float32)
        with torch.no_grad():
            expected = wrapper(torch.from_numpy(blob)).numpy()
        got = session.run(None, {"images": blob})[0]
        if got.shape != expected.shape:
            raise ValueError(f"ONNX output {got.shape} differs from torch's {expected.shape}")
        # A score on the edge of being a 3x3 peak can flip between runtimes; compare
        # boxes everywhere and scores where both agree it is a peak or not.
        both = (got[:, 4:] > 0) == (expected[:, 4:] > 0)
        worst = max(worst, float(np.abs(got[:, :4] - expected[:, :4]).max()),
                    float(np.abs(got[:, 4:] - expected[:, 4:])[both].max(initial=0.0)))
    return worst
