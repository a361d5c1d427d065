"""The camera node's configuration: its parameters, validated, and the source they select."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from armstack_camera.calibration import DEFAULT_FRAME_ID
from armstack_camera.capture import CaptureConfig
from armstack_camera.source import FrameSource
from armstack_common import paths
from armstack_common.params import ParamSpec

SOURCES = ("realsense", "v4l2", "folder")
IMAGE_QOS_CHOICES = ("reliable", "sensor_data")
# Default of the image topics' QoS everywhere in perception. Measured with Fast DDS (the
# wheels' middleware) on the 2-core dev machine, 640x480 rgb8 at 30 Hz between two
# processes: a best-effort reader receives 4-6 Hz (large samples are fragmented and a lost
# fragment loses the frame), a reliable one 30 Hz. KEEP_LAST 1 keeps "newest frame wins"
# either way: a reliable writer with history 1 never waits for a slow reader.
DEFAULT_IMAGE_QOS = "reliable"

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("source", "realsense", "where frames come from", choices=SOURCES, read_only=True),
    ParamSpec(
        "autostart",
        True,
        "configure and activate at start (no lifecycle manager needed)",
        read_only=True,
    ),
    ParamSpec(
        "frame_id", DEFAULT_FRAME_ID, "frame_id of the images and camera_info", read_only=True
    ),
    ParamSpec(
        "width", 640, "requested image width (realsense, v4l2)", "px", (0, 8192), read_only=True
    ),
    ParamSpec(
        "height", 480, "requested image height (realsense, v4l2)", "px", (0, 8192), read_only=True
    ),
    ParamSpec(
        "fps",
        30.0,
        "requested frame rate; the replay rate of source folder",
        "Hz",
        (0.1, 1000.0),
        read_only=True,
    ),
    ParamSpec(
        "camera_info_file",
        "",
        "camera model YAML (ROS camera_calibration or armstack calibration format), "
        "relative to the config dir; empty: the source's own (RealSense factory "
        "intrinsics, the folder's camera_info.yaml), else uncalibrated",
        read_only=True,
    ),
    ParamSpec(
        "extrinsics_file",
        "camera/calibration.yaml",
        "calibration YAML whose extrinsics are published on tf_static (parent -> "
        "frame_id), relative to the config dir; empty: publish none",
        read_only=True,
    ),
    ParamSpec(
        "qos",
        DEFAULT_IMAGE_QOS,
        "QoS of the image and camera_info publishers (reliable: any reader matches)",
        choices=IMAGE_QOS_CHOICES,
        read_only=True,
    ),
    ParamSpec(
        "stall_timeout_s",
        1.0,
        "no frame for this long is a stall: reconnect",
        "s",
        (0.05, 60.0),
        read_only=True,
    ),
    ParamSpec(
        "reconnect_backoff_s",
        0.5,
        "first wait before reconnecting; doubles per failure",
        "s",
        (0.01, 60.0),
        read_only=True,
    ),
    ParamSpec(
        "reconnect_backoff_max_s",
        10.0,
        "longest wait between reconnects",
        "s",
        (0.01, 600.0),
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
        "frame_age_warn_s",
        0.5,
        "diagnostics warn when the last frame is older than this (error at stall_timeout_s); "
        "<= stall_timeout_s",
        "s",
        (0.01, 60.0),
    ),
    ParamSpec(
        "min_rate_warn_fraction",
        0.8,
        "diagnostics warn when the frame rate falls below this fraction of fps",
        "",
        (0.0, 1.0),
    ),
    ParamSpec(
        "min_rate_error_fraction",
        0.4,
        "diagnostics error when the frame rate falls below this fraction of fps; "
        "<= min_rate_warn_fraction",
        "",
        (0.0, 1.0),
    ),
    ParamSpec(
        "realsense.serial",
        "",
        "serial number of the device; empty: the first found",
        read_only=True,
    ),
    ParamSpec(
        "realsense.playback_file",
        "",
        "play a RealSense recording (.bag/.db3, as the installed SDK writes) instead of a device",
        read_only=True,
    ),
    ParamSpec("realsense.enable_depth", True, "stream depth aligned to colour", read_only=True),
    ParamSpec(
        "v4l2.device", "0", "V4L2 index or /dev/video path (or a video file / URL)", read_only=True
    ),
    ParamSpec(
        "v4l2.fourcc", "", "pixel format to request, e.g. MJPG; empty: the driver's", read_only=True
    ),
    ParamSpec(
        "folder.path",
        "",
        "image folder to replay (color/, depth/, camera_info.yaml)",
        read_only=True,
    ),
    ParamSpec("folder.loop", True, "restart the folder after its last image", read_only=True),
)


def resolve_config_path(value: str) -> Path:
    """A path parameter as a file path: an absolute or ~ path as given, a relative one from
    the working directory if it exists there, else from armstack's config dir."""
    return paths.user_path(value, paths.config_dir())


@dataclass(frozen=True)
class CameraNodeConfig:
    source: str = "realsense"
    autostart: bool = True
    frame_id: str = DEFAULT_FRAME_ID
    width: int = 640
    height: int = 480
    fps: float = 30.0
    camera_info_file: str = ""
    extrinsics_file: str = "camera/calibration.yaml"
    qos: str = DEFAULT_IMAGE_QOS
    stall_timeout_s: float = 1.0
    reconnect_backoff_s: float = 0.5
    reconnect_backoff_max_s: float = 10.0
    diagnostics_period_s: float = 1.0
    frame_age_warn_s: float = 0.5
    min_rate_warn_fraction: float = 0.8
    min_rate_error_fraction: float = 0.4
    realsense_serial: str = ""
    realsense_playback_file: str = ""
    realsense_enable_depth: bool = True
    v4l2_device: str = "0"
    v4l2_fourcc: str = ""
    folder_path: str = ""
    folder_loop: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {list(SOURCES)}, got '{self.source}'")
        if self.qos not in IMAGE_QOS_CHOICES:
            raise ValueError(f"qos must be one of {list(IMAGE_QOS_CHOICES)}, got '{self.qos}'")
        if not self.frame_id:
            raise ValueError("frame_id must not be empty")
        if self.fps <= 0.0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if (
            self.source == "realsense"
            and not self.realsense_playback_file
            and not (self.width > 0 and self.height > 0)
        ):
            raise ValueError("width and height must be > 0 for a RealSense device")
        if self.source == "folder" and not self.folder_path:
            raise ValueError("folder.path must be set when source is 'folder'")
        if self.source == "v4l2" and not self.v4l2_device:
            raise ValueError("v4l2.device must be set when source is 'v4l2'")
        self.capture_config()  # validates the stall and backoff settings
        # Diagnostics thresholds: the error side must not be inside the warning side.
        if self.frame_age_warn_s > self.stall_timeout_s:
            raise ValueError(
                f"frame_age_warn_s must be <= stall_timeout_s (the frame age error), got "
                f"{self.frame_age_warn_s} > {self.stall_timeout_s}"
            )
        if self.min_rate_error_fraction > self.min_rate_warn_fraction:
            raise ValueError(
                f"min_rate_error_fraction must be <= min_rate_warn_fraction, got "
                f"{self.min_rate_error_fraction} > {self.min_rate_warn_fraction}"
            )

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> CameraNodeConfig:
        """From parameter values keyed by their ROS names ('realsense.serial' etc.)."""
        names = {f.name for f in fields(cls)}
        kwargs = {k.replace(".", "_"): v for k, v in values.items() if k.replace(".", "_") in names}
        return cls(**kwargs)

    def capture_config(self) -> CaptureConfig:
        return CaptureConfig(
            self.stall_timeout_s, self.reconnect_backoff_s, self.reconnect_backoff_max_s
        )

    def source_factory(self, resolve: Callable[[str], Path]) -> Callable[[], FrameSource]:
        """A function that builds a fresh source (called again on every reconnect).

        `resolve` turns a configured path into a file path (relative to the config dir).
        """
        if self.source == "folder":
            from armstack_camera.folder_source import FolderSource

            root = resolve(self.folder_path)
            return lambda: FolderSource(root, self.fps, self.folder_loop, self.frame_id)
        if self.source == "v4l2":
            from armstack_camera.v4l2_source import V4l2Source

            return lambda: V4l2Source(
                self.v4l2_device, self.width, self.height, self.fps, self.v4l2_fourcc
            )
        from armstack_camera.realsense_source import PipelineBackend, RealSenseSource

        playback = (
            str(resolve(self.realsense_playback_file)) if self.realsense_playback_file else ""
        )
        return lambda: RealSenseSource(
            PipelineBackend(
                self.width,
                self.height,
                round(self.fps),
                self.realsense_enable_depth,
                self.realsense_serial,
                playback,
            ),
            self.frame_id,
        )
