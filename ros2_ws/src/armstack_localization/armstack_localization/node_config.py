"""The localization node's parameters and their validated configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from armstack_camera.config import DEFAULT_IMAGE_QOS, IMAGE_QOS_CHOICES
from armstack_common.params import ParamSpec
from armstack_localization.deproject import LocalizationConfig
from armstack_localization.pairing import PairingConfig
from armstack_localization.tracker import TrackerConfig

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("base_frame", "base_link", "frame the objects are published in", read_only=True),
    ParamSpec(
        "qos",
        DEFAULT_IMAGE_QOS,
        "QoS of the depth and camera_info subscriptions; sensor_data (best effort) "
        "to match a best-effort camera",
        choices=IMAGE_QOS_CHOICES,
        read_only=True,
    ),
    ParamSpec(
        "sync_tolerance_s",
        0.005,
        "largest detection-to-depth stamp difference of one frame",
        "s",
        (0.0, 1.0),
    ),
    ParamSpec(
        "depth_cache_size",
        30,
        "depth frames kept for pairing (cover the detector latency)",
        "",
        (1, 1000),
        read_only=True,
    ),
    ParamSpec(
        "max_pending_detections",
        10,
        "detections waiting for their depth frame",
        "",
        (0, 1000),
        read_only=True,
    ),
    ParamSpec(
        "central_fraction",
        0.5,
        "side of the central box region whose depths are used, as a fraction of the box side",
        "",
        (0.01, 1.0),
    ),
    ParamSpec("min_valid_pixels", 8, "fewer valid depth pixels: no position", "", (1, 100000)),
    ParamSpec(
        "outlier_sigmas",
        3.0,
        "depths farther from the median (robust sigmas) are outliers",
        "",
        (0.1, 100.0),
    ),
    ParamSpec("min_depth_m", 0.05, "depth readings below are invalid", "m", (0.0, 100.0)),
    ParamSpec("max_depth_m", 5.0, "depth readings above are invalid", "m", (0.0, 100.0)),
    ParamSpec(
        "surface_to_centre_m",
        0.0,
        "distance from the seen surface to the object's centre along the viewing ray",
        "m",
        (0.0, 0.5),
    ),
    ParamSpec(
        "tracking", False, "give objects stable ids across frames (publishes confirmed tracks only)"
    ),
    ParamSpec(
        "tracker.gate_m", 0.05, "largest jump of one object between frames", "m", (0.001, 10.0)
    ),
    ParamSpec("tracker.min_hits", 3, "matched frames before a track is published", "", (1, 1000)),
    ParamSpec("tracker.max_misses", 5, "unmatched frames before a track is deleted", "", (1, 1000)),
    ParamSpec(
        "tracker.smoothing",
        0.5,
        "weight of a new measurement in the track position",
        "",
        (0.01, 1.0),
    ),
    ParamSpec("marker_lifetime_s", 0.5, "lifetime of the rviz markers", "s", (0.0, 60.0)),
    ParamSpec(
        "tf_cache_s",
        10.0,
        "how long dynamic transforms are kept",
        "s",
        (0.1, 600.0),
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
        150.0,
        "diagnostics warn above this capture-to-publish latency",
        "ms",
        (1.0, 10000.0),
    ),
    ParamSpec(
        "latency_error_ms",
        400.0,
        "diagnostics error above this capture-to-publish latency",
        "ms",
        (1.0, 10000.0),
    ),
)


@dataclass(frozen=True)
class LocalizationNodeConfig:
    base_frame: str = "base_link"
    qos: str = DEFAULT_IMAGE_QOS
    sync_tolerance_s: float = 0.005
    depth_cache_size: int = 30
    max_pending_detections: int = 10
    central_fraction: float = 0.5
    min_valid_pixels: int = 8
    outlier_sigmas: float = 3.0
    min_depth_m: float = 0.05
    max_depth_m: float = 5.0
    surface_to_centre_m: float = 0.0
    tracking: bool = False
    tracker_gate_m: float = 0.05
    tracker_min_hits: int = 3
    tracker_max_misses: int = 5
    tracker_smoothing: float = 0.5
    marker_lifetime_s: float = 0.5
    tf_cache_s: float = 10.0
    diagnostics_period_s: float = 1.0
    latency_warn_ms: float = 150.0
    latency_error_ms: float = 400.0

    def __post_init__(self) -> None:
        if not self.base_frame:
            raise ValueError("base_frame must not be empty")
        if self.latency_error_ms < self.latency_warn_ms:
            raise ValueError(
                f"latency_error_ms must be >= latency_warn_ms, got {self.latency_error_ms} < "
                f"{self.latency_warn_ms}"
            )
        # The component configs check their own fields.
        self.localization()
        self.pairing()
        self.tracker()

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> LocalizationNodeConfig:
        names = {f.name for f in fields(cls)}
        kwargs = {k.replace(".", "_"): v for k, v in values.items() if k.replace(".", "_") in names}
        return cls(**kwargs)

    def localization(self) -> LocalizationConfig:
        # Depth reaches localize() as 16UC1 millimetres whatever the topic carried.
        return LocalizationConfig(
            self.central_fraction,
            self.min_valid_pixels,
            self.outlier_sigmas,
            self.min_depth_m,
            self.max_depth_m,
            0.001,
            self.surface_to_centre_m,
        )

    def pairing(self) -> PairingConfig:
        return PairingConfig(
            self.sync_tolerance_s, self.depth_cache_size, self.max_pending_detections
        )

    def tracker(self) -> TrackerConfig:
        return TrackerConfig(
            self.tracker_gate_m,
            self.tracker_min_hits,
            self.tracker_max_misses,
            self.tracker_smoothing,
        )
