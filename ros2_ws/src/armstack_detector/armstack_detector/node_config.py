"""The detector node's parameters and their validated configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from armstack_camera.config import DEFAULT_IMAGE_QOS, IMAGE_QOS_CHOICES
from armstack_common.onnx_session import ORT_PROVIDER_NAMES
from armstack_common.params import ParamSpec
from armstack_detector.decoders import LAYOUTS, DecodeConfig
from armstack_detector.onnx_runner import DetectorConfig

# Where the trained detector lives under models/ (written by tools/train_detector.py).
DEFAULT_MODEL = "detector/detector.onnx"

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model_path",
        DEFAULT_MODEL,
        "ONNX detector; a relative path is looked up under armstack's models/ dir",
        read_only=True,
    ),
    ParamSpec(
        "layout",
        "auto",
        "export layout of the model's outputs; auto: guessed from its I/O",
        choices=("auto", *sorted(LAYOUTS)),
        read_only=True,
    ),
    ParamSpec(
        "input_size",
        0,
        "square network input side; 0: the model's static size",
        "px",
        (0, 4096),
        read_only=True,
    ),
    ParamSpec(
        "provider",
        "cpu",
        "ONNX Runtime execution provider (falls back down the chain tensorrt -> cuda -> cpu)",
        choices=tuple(sorted(ORT_PROVIDER_NAMES)),
        read_only=True,
    ),
    ParamSpec("fp16", False, "TensorRT only: build FP16 engines", read_only=True),
    ParamSpec(
        "engine_cache_dir", "", "TensorRT only: engine cache directory; empty: none", read_only=True
    ),
    ParamSpec(
        "intra_op_threads",
        0,
        "ONNX Runtime intra-op threads; 0: all cores",
        "",
        (0, 256),
        read_only=True,
    ),
    ParamSpec("conf_threshold", 0.25, "minimum class score of a detection", "", (0.0, 1.0)),
    ParamSpec(
        "iou_threshold",
        0.7,
        "NMS: boxes of one class overlapping more are suppressed",
        "",
        (0.01, 1.0),
    ),
    ParamSpec("max_det", 100, "most detections per image", "", (1, 10000)),
    ParamSpec("agnostic_nms", False, "NMS across classes (one box per object whatever its class)"),
    ParamSpec(
        "labels_file",
        "",
        "class names, one per line (line i = class i), relative to the "
        "config dir; empty: the model's metadata, else the class index",
        read_only=True,
    ),
    ParamSpec(
        "qos",
        DEFAULT_IMAGE_QOS,
        "QoS of the image subscription and overlay publisher; sensor_data (best "
        "effort) to match a best-effort camera",
        choices=IMAGE_QOS_CHOICES,
        read_only=True,
    ),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "period of the diagnostics message",
        "s",
        (0.1, 60.0),
        read_only=True,
    ),
    ParamSpec(
        "latency_warn_ms",
        100.0,
        "diagnostics warn above this capture-to-publish latency",
        "ms",
        (1.0, 10000.0),
    ),
    ParamSpec(
        "latency_error_ms",
        300.0,
        "diagnostics error above this capture-to-publish latency",
        "ms",
        (1.0, 10000.0),
    ),
)


@dataclass(frozen=True)
class DetectorNodeConfig:
    model_path: str = DEFAULT_MODEL
    layout: str = "auto"
    input_size: int = 0
    provider: str = "cpu"
    fp16: bool = False
    engine_cache_dir: str = ""
    intra_op_threads: int = 0
    conf_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 100
    agnostic_nms: bool = False
    labels_file: str = ""
    qos: str = DEFAULT_IMAGE_QOS
    diagnostics_period_s: float = 1.0
    latency_warn_ms: float = 100.0
    latency_error_ms: float = 300.0

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("model_path must be set")
        if self.latency_error_ms < self.latency_warn_ms:
            raise ValueError(
                f"latency_error_ms must be >= latency_warn_ms, got {self.latency_error_ms} < "
                f"{self.latency_warn_ms}"
            )
        self.detector_config(self.model_path)  # validates layout, provider, thresholds...

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> DetectorNodeConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def detector_config(self, resolved_model_path: str) -> DetectorConfig:
        return DetectorConfig(
            model_path=resolved_model_path,
            layout=self.layout,
            input_size=self.input_size,
            conf_threshold=self.conf_threshold,
            iou_threshold=self.iou_threshold,
            max_det=self.max_det,
            agnostic_nms=self.agnostic_nms,
            provider=self.provider,
            fp16=self.fp16,
            engine_cache_dir=self.engine_cache_dir,
            intra_op_threads=self.intra_op_threads,
        )

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(
            self.conf_threshold, self.iou_threshold, self.max_det, self.agnostic_nms
        )
