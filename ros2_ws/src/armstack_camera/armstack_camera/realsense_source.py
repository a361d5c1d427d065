"""Intel RealSense colour + depth aligned to colour, through librealsense (pyrealsense2).

The frame-producing part is a `RealSenseBackend`: a real device or a recording played back
(`PipelineBackend`, an rs.pipeline), or a `SoftwareDeviceBackend` whose frames a program
injects through the SDK's software device (tests, or another renderer feeding the same
path). `RealSenseSource` turns either's framesets into `Frame`s: depth aligned to colour with
rs.align, colour as RGB, depth in millimetres, and the capture time mapped to the host clock.
Intrinsics come from the colour stream profile, the way realsense2_camera fills CameraInfo.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from armstack_camera.calibration import DEFAULT_FRAME_ID, CameraModel
from armstack_camera.clock import DeviceClockMapper
from armstack_camera.source import Frame, SourceError, SourceInfo

logger = logging.getLogger(__name__)


def _rs() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise SourceError(
            "source 'realsense' needs pyrealsense2 (pip install pyrealsense2; Debian libusb-1.0-0)"
        ) from exc
    return rs


@dataclass(frozen=True)
class BackendStreams:
    """What a started backend streams."""

    color: Any  # rs.video_stream_profile of the colour stream
    depth: Any | None  # rs.video_stream_profile of the depth stream, None when colour only
    description: str
    hardware_id: str
    playback: bool  # a recording: its timestamps are from the past


class RealSenseBackend(Protocol):
    def start(self) -> BackendStreams: ...

    def wait_for_frames(self, timeout_ms: int) -> Any | None:
        """The next rs.composite_frame, or None after timeout_ms without one."""

    def stop(self) -> None: ...


class PipelineBackend:
    """A device (by serial number, or the first one found) or a recording played back."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        depth: bool = True,
        serial: str = "",
        playback_file: str = "",
        loop_playback: bool = True,
    ) -> None:
        self.width, self.height, self.fps, self.depth = width, height, fps, depth
        self.serial, self.playback_file, self.loop_playback = serial, playback_file, loop_playback
        self._pipeline: Any = None

    def _check_connected(self, rs: Any) -> None:
        """Fail fast with the serials present: rs.pipeline.start waits ~15 s for a device."""
        devices = rs.context().query_devices()
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if not serials:
            raise SourceError("no RealSense device connected")
        if self.serial and self.serial not in serials:
            raise SourceError(
                f"RealSense {self.serial} not connected (connected: {', '.join(serials)})"
            )

    def start(self) -> BackendStreams:
        rs = _rs()
        cfg = rs.config()
        if self.playback_file:
            cfg.enable_device_from_file(self.playback_file, repeat_playback=self.loop_playback)
            # A recording holds the streams it holds: ask for them by type only.
            cfg.enable_stream(rs.stream.color)
            if self.depth:
                cfg.enable_stream(rs.stream.depth)
        else:
            self._check_connected(rs)
            if self.serial:
                cfg.enable_device(self.serial)
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            if self.depth:
                # Depth at the colour size (the D4xx depth sensor has the common colour sizes);
                # rs.align reprojects it onto the colour image whatever its size.
                cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            what = self.playback_file or (
                f"RealSense {self.serial}" if self.serial else "a RealSense"
            )
            raise SourceError(f"cannot start {what}: {exc}") from exc
        self._pipeline = pipeline
        device = profile.get_device()
        name = device.get_info(rs.camera_info.name)
        serial = (
            device.get_info(rs.camera_info.serial_number)
            if device.supports(rs.camera_info.serial_number)
            else ""
        )
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        depth = (
            profile.get_stream(rs.stream.depth).as_video_stream_profile() if self.depth else None
        )
        source = f"recording {self.playback_file} of " if self.playback_file else ""
        return BackendStreams(
            color,
            depth,
            f"{source}{name} (S/N {serial or 'unknown'})",
            serial or self.playback_file,
            bool(self.playback_file),
        )

    def wait_for_frames(self, timeout_ms: int) -> Any | None:
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def stop(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            finally:
                self._pipeline = None


def _intrinsics(rs: Any, width: int, height: int, fx: float, fy: float, cx: float, cy: float):
    intr = rs.intrinsics()
    intr.width, intr.height = width, height
    intr.fx, intr.fy, intr.ppx, intr.ppy = fx, fy, cx, cy
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = [0.0] * 5
    return intr


class SoftwareDeviceBackend:
    """An rs.software_device with a colour and a depth sensor; `push` injects one frame pair.

    Both streams are pinhole without distortion; depth sits at `depth_to_color_m` from colour
    with the same orientation (what rs.align needs to reproject it). Frames go through the
    SDK's syncer, which pairs colour and depth by timestamp as a real device's pipeline does.
    """

    def __init__(
        self,
        color: CameraModel,
        depth: CameraModel,
        fps: int = 30,
        depth_units_m: float = 0.001,
        depth_to_color_m=(0.0, 0.0, 0.0),
        serial: str = "software",
    ) -> None:
        rs = _rs()
        self._rs = rs
        self.depth_units_m = depth_units_m
        self.serial = serial
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "armstack software RealSense")
        self.device.register_info(rs.camera_info.serial_number, serial)
        self._depth_sensor = self.device.add_sensor("Depth")
        self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_units_m)
        self._color_sensor = self.device.add_sensor("Color")
        self._depth_profile = self._add_stream(
            self._depth_sensor, depth, rs.stream.depth, rs.format.z16, 2, 0, fps
        )
        self._color_profile = self._add_stream(
            self._color_sensor, color, rs.stream.color, rs.format.rgb8, 3, 1, fps
        )
        extrinsics = rs.extrinsics()
        extrinsics.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        extrinsics.translation = [float(v) for v in depth_to_color_m]
        self._depth_profile.register_extrinsics_to(self._color_profile, extrinsics)
        self._syncer = rs.syncer()
        self._frame_number = 0
        self._started = False

    def _add_stream(self, sensor, model: CameraModel, kind, fmt, bpp: int, uid: int, fps: int):
        stream = self._rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height = model.width, model.height
        stream.fps, stream.bpp, stream.fmt = fps, bpp, fmt
        K = np.asarray(model.K)
        stream.intrinsics = _intrinsics(
            self._rs, model.width, model.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        )
        return sensor.add_video_stream(stream).as_video_stream_profile()

    def start(self) -> BackendStreams:
        for sensor, profile in (
            (self._depth_sensor, self._depth_profile),
            (self._color_sensor, self._color_profile),
        ):
            sensor.open(profile)
            sensor.start(self._syncer)
        self._started = True
        return BackendStreams(
            self._color_profile,
            self._depth_profile,
            f"software RealSense (S/N {self.serial})",
            self.serial,
            False,
        )

    def push(
        self,
        color_rgb: np.ndarray,
        depth_raw: np.ndarray,
        timestamp_ms: float,
        domain: str = "hardware_clock",
    ) -> None:
        """Inject colour (H, W, 3) uint8 RGB and depth (h, w) uint16 in depth units.

        Give host times (ms since the epoch, domain system_time) or a device clock that has
        run for a while: librealsense 2.59's syncer never pairs depth frames whose timestamps
        start at small non-zero values (around 1e2..1e5 ms), and hands out colour alone.
        """
        rs = self._rs
        self._frame_number += 1
        depth = np.ascontiguousarray(depth_raw, np.uint16)
        color = np.ascontiguousarray(color_rgb, np.uint8)
        pairs = (
            (self._depth_sensor, self._depth_profile, depth, 2),
            (self._color_sensor, self._color_profile, color, 3),
        )
        for sensor, profile, pixels, bpp in pairs:
            frame = rs.software_video_frame()
            frame.pixels = pixels
            frame.bpp = bpp
            frame.stride = pixels.shape[1] * bpp
            frame.timestamp = float(timestamp_ms)
            frame.domain = getattr(rs.timestamp_domain, domain)
            frame.frame_number = self._frame_number
            frame.profile = profile
            if bpp == 2:
                frame.depth_units = self.depth_units_m
            sensor.on_video_frame(frame)

    def wait_for_frames(self, timeout_ms: int) -> Any | None:
        ok, frames = self._syncer.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def stop(self) -> None:
        if self._started:
            for sensor in (self._depth_sensor, self._color_sensor):
                sensor.stop()
                sensor.close()
            self._started = False


def camera_model_from_intrinsics(rs: Any, intr: Any, frame_id: str) -> CameraModel:
    """rs.intrinsics -> CameraModel, mapped as realsense2_camera maps them.

    The Brown-Conrady family (including the inverse and modified variants the colour sensors
    report) goes out as plumb_bob with the SDK's (k1, k2, p1, p2, k3), the same coefficient
    order; Kannala-Brandt as equidistant. With all-zero coefficients the variants coincide.
    """
    K = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]])
    coeffs = tuple(float(c) for c in intr.coeffs)
    if intr.model == rs.distortion.kannala_brandt4:
        return CameraModel(intr.width, intr.height, K, coeffs[:4], "equidistant", frame_id)
    return CameraModel(intr.width, intr.height, K, coeffs[:5], "plumb_bob", frame_id)


_COLOR_CONVERSIONS = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
}


class RealSenseSource:
    """Frames from a `RealSenseBackend`, depth aligned to colour."""

    def __init__(
        self,
        backend: RealSenseBackend,
        frame_id: str = DEFAULT_FRAME_ID,
        clock: DeviceClockMapper | None = None,
    ) -> None:
        self.backend = backend
        self.frame_id = frame_id
        self.clock = clock or DeviceClockMapper()
        self._align: Any = None
        self._has_depth = False
        self._playback = False
        self.incomplete_framesets = 0

    def open(self) -> SourceInfo:
        rs = _rs()
        streams = self.backend.start()
        self._has_depth = streams.depth is not None
        self._playback = streams.playback
        self._align = rs.align(rs.stream.color) if self._has_depth else None
        intr = streams.color.get_intrinsics()
        return SourceInfo(
            description=f"{streams.description}: colour {intr.width}x{intr.height} "
            f"{streams.color.format()} at {streams.color.fps()} fps"
            + (
                f", depth {streams.depth.width()}x{streams.depth.height()}"
                if self._has_depth
                else ""
            ),
            hardware_id=streams.hardware_id,
            width=intr.width,
            height=intr.height,
            has_depth=self._has_depth,
            model=camera_model_from_intrinsics(rs, intr, self.frame_id),
        )

    def _stamp(self, rs: Any, frame: Any, host_receive_s: float) -> float:
        device_s = frame.get_timestamp() * 1e-3
        domain = frame.get_frame_timestamp_domain()
        # global_time is the device clock already converted to the host's, system_time the
        # host's arrival time; both are on the host clock unless the frame is a recording.
        host_domains = (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)
        if domain in host_domains and not self._playback:
            return device_s
        return self.clock.to_host(device_s, host_receive_s)

    def _color_rgb(self, rs: Any, frame: Any) -> np.ndarray:
        fmt = str(frame.get_profile().format()).rsplit(".", 1)[-1]
        if fmt not in _COLOR_CONVERSIONS:
            raise SourceError(
                f"colour format {fmt} not handled (use one of {sorted(_COLOR_CONVERSIONS)})"
            )
        data = np.asanyarray(frame.get_data())
        code = _COLOR_CONVERSIONS[fmt]
        # Copy out of the SDK's buffer: the frame is recycled once released.
        return data.copy() if code is None else cv2.cvtColor(data, code)

    @staticmethod
    def _depth_mm(depth_frame: Any) -> np.ndarray:
        raw = np.asanyarray(depth_frame.get_data())
        units = depth_frame.get_units()  # metres per unit: 0.001 on D400, 0.00025 on L515
        if abs(units - 0.001) < 1e-9:
            return raw.copy()
        return np.clip(np.rint(raw * (units * 1000.0)), 0, 65535).astype(np.uint16)

    def read(self, timeout_s: float) -> Frame | None:
        rs = _rs()
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0.0:
            frames = self.backend.wait_for_frames(max(1, int(left * 1000)))
            if frames is None:
                return None
            received = time.time()
            if self._align is not None:
                frames = self._align.process(frames)
            color = frames.get_color_frame()
            depth = frames.get_depth_frame() if self._has_depth else None
            if not color or (self._has_depth and not depth):
                # The syncer hands out a lone stream when its partner is late or dropped.
                self.incomplete_framesets += 1
                continue
            return Frame(
                self._color_rgb(rs, color),
                self._depth_mm(depth) if depth else None,
                self._stamp(rs, color, received),
                int(color.get_frame_number()),
            )
        return None

    def close(self) -> None:
        self.backend.stop()
