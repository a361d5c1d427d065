"""ONNX Runtime detector: preprocessing, inference and decoding of one RGB image.

The execution provider is chosen by configuration with a fallback chain TensorRT -> CUDA -> CPU
(armstack_common.onnx_session): whatever the requested provider's chain offers in this
onnxruntime build is used, and each provider that is missing is logged with what runs instead.
"""

from __future__ import annotations

import ast
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from armstack_common.onnx_session import ORT_PROVIDER_NAMES, open_session
from armstack_detector.decoders import (
    LAYOUTS,
    DecodeConfig,
    Detections,
    TensorMeta,
    check_layout,
    detect_layout,
    image_input,
)
from armstack_detector.preprocess import letterbox, stretch, to_blob

logger = logging.getLogger(__name__)

# The offline tool that trains and exports the detector this runner loads.
TRAIN_TOOL = "tools/train_detector.py"


@dataclass(frozen=True)
class DetectorConfig:
    """Configuration of one `OnnxDetector`."""

    model_path: str
    # "auto" guesses from the model's I/O (decoders.detect_layout), or one of decoders.LAYOUTS.
    layout: str = "auto"
    # Square network input side in pixels; 0 takes it from the model's static input shape.
    input_size: int = 0
    conf_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 100
    agnostic_nms: bool = False
    provider: str = "cpu"
    # TensorRT only: build FP16 engines. A model exported in FP16 is fed FP16 on any provider.
    fp16: bool = False
    # TensorRT only: where built engines are cached (first build takes minutes); "" = no cache.
    engine_cache_dir: str = ""
    # onnxruntime intra-op threads; 0 = its default (all cores). Lower it to leave cores to
    # the control loop on small machines.
    intra_op_threads: int = 0

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("model_path must be set")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise ValueError(
                f"layout must be 'auto' or one of {sorted(LAYOUTS)}, got '{self.layout}'"
            )
        if self.input_size < 0 or self.input_size % 32:
            raise ValueError(
                f"input_size must be 0 or a positive multiple of 32, got {self.input_size}"
            )
        if self.provider not in ORT_PROVIDER_NAMES:
            raise ValueError(
                f"provider must be one of {sorted(ORT_PROVIDER_NAMES)}, got '{self.provider}'"
            )
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        self.decode_config()  # validates conf_threshold, iou_threshold, max_det

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(
            self.conf_threshold, self.iou_threshold, self.max_det, self.agnostic_nms
        )


def class_names_from_metadata(metadata: dict[str, str]) -> dict[int, str]:
    """Class id -> name from ultralytics' `names` metadata ("{0: 'cube', ...}"); {} if absent."""
    text = metadata.get("names")
    if not text:
        return {}
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        logger.warning("model metadata 'names' is not a dict literal, ignoring it: %.80s", text)
        return {}
    if not isinstance(names, dict):
        logger.warning("model metadata 'names' is not a dict, ignoring it: %.80s", text)
        return {}
    return {int(k): str(v) for k, v in names.items()}


def _meta(args: list[ort.NodeArg]) -> list[TensorMeta]:
    return [TensorMeta(a.name, tuple(a.shape), a.type) for a in args]


class OnnxDetector:
    """Runs one detector model on RGB images and returns decoded detections with timings."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        path = Path(config.model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"detector model not found: {path}. Train and export one with {TRAIN_TOOL} "
                f"(writes models/detector/detector.onnx), or set model_path to an existing ONNX file."
            )
        if config.fp16 and config.provider != "tensorrt":
            logger.info("fp16 applies to TensorRT engines only; the model's own input type is used")
        self._session = open_session(
            path,
            config.provider,
            fp16=config.fp16,
            engine_cache_dir=config.engine_cache_dir,
            intra_op_threads=config.intra_op_threads,
            label="detector",
        )
        self.providers: list[str] = self._session.get_providers()

        inputs = _meta(self._session.get_inputs())
        outputs = _meta(self._session.get_outputs())
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.layout = config.layout
        if self.layout == "auto":
            self.layout = detect_layout(inputs, outputs, metadata)
            logger.info("detector layout detected from the model: %s", self.layout)
        check_layout(self.layout, inputs, outputs)
        self._spec = LAYOUTS[self.layout]
        image = image_input(self.layout, inputs)
        self._image_name = image.name
        self._input_dtype = np.float16 if image.dtype == "tensor(float16)" else np.float32
        self.input_hw = self._resolve_input_hw(image)
        self._output_names = [m.name for m in outputs]
        # Replaceable at run time (live parameter updates): thresholds need no new session.
        self.decode_config = config.decode_config()
        self.class_names = class_names_from_metadata(metadata)

    def _resolve_input_hw(self, image: TensorMeta) -> tuple[int, int]:
        model_h, model_w = image.shape[2], image.shape[3]
        static = isinstance(model_h, int) and isinstance(model_w, int)
        size = self.config.input_size
        if static:
            if size and (size, size) != (model_h, model_w):
                raise ValueError(
                    f"input_size {size} does not match the model's static input "
                    f"{model_h}x{model_w}; set input_size to 0 or re-export the model"
                )
            return int(model_h), int(model_w)
        if not size:
            raise ValueError(
                f"input_size must be set (> 0): the model's input {list(image.shape)} is dynamic"
            )
        return size, size

    def detect(self, image_rgb: np.ndarray) -> tuple[Detections, dict[str, float]]:
        """Detect objects in an (H, W, 3) uint8 RGB image.

        Returns detections in original-image pixels and stage timings in ms
        (keys preprocess_ms, inference_ms, postprocess_ms).
        """
        t0 = time.perf_counter()
        resize = letterbox if self._spec.resize == "letterbox" else stretch
        resized, transform = resize(image_rgb, self.input_hw)
        feeds = {self._image_name: to_blob(resized, self._input_dtype)}  # (1, 3, H, W)
        if self._spec.size_input is not None:
            feeds[self._spec.size_input] = np.array(
                [[transform.orig_w, transform.orig_h]], dtype=np.int64
            )
        t1 = time.perf_counter()
        raw = self._session.run(self._output_names, feeds)
        t2 = time.perf_counter()
        detections = self._spec.decode(
            dict(zip(self._output_names, raw, strict=True)), transform, self.decode_config
        )
        t3 = time.perf_counter()
        timings = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "inference_ms": (t2 - t1) * 1e3,
            "postprocess_ms": (t3 - t2) * 1e3,
        }
        return detections, timings
