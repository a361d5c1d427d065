"""camera_node: publishes colour, camera_info and aligned depth from a RealSense, a V4L2
camera or an image folder (the same topics the simulator publishes).

Lifecycle (style.md #6): configure acquires the device (starts the capture thread),
activate starts publishing, deactivate stops it, cleanup releases the device. With
`autostart` (default) the node configures and activates itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from armstack_camera.calibration import CameraModel, load_camera_file
from armstack_camera.capture import CaptureLoop
from armstack_camera.config import PARAMS, CameraNodeConfig, resolve_config_path
from armstack_camera.msg_conv import camera_info_from_model, numpy_to_image
from armstack_camera.qos import TF_STATIC_BROADCASTER_QOS, image_qos
from armstack_camera.source import Frame, SourceInfo
from armstack_camera.stream_report import check_stream
from armstack_common import paths
from armstack_common.node_main import run_node
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.params import NodeParameters
from armstack_common.stats import RateMeter, RollingStats
from armstack_common.timeutil import sec_to_stamp_fields


class CameraNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("camera")
        self.params = NodeParameters(self, PARAMS, CameraNodeConfig.from_params, self._on_update)
        self.config: CameraNodeConfig = self.params.config
        self._loop: CaptureLoop | None = None
        self._file_model: CameraModel | None = None
        self._info_msg: CameraInfo | None = None
        self._size_error = ""
        self._pubs: dict[str, object] = {}
        self._rate = RateMeter(window=300)
        self._latency_ms = RollingStats(window=300)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._tf_static_pub = self.create_publisher(
            TFMessage,
            "/tf_static",
            TF_STATIC_BROADCASTER_QOS,  # global, as tf2_ros's
        )
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)

    def _on_update(self, values: dict) -> None:
        # Only live parameters change (the diagnostics thresholds); the next report uses them.
        self.config = self.params.config

    # ----------------------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.config
        try:
            if cfg.camera_info_file:
                self._file_model = load_camera_file(
                    resolve_config_path(cfg.camera_info_file), cfg.frame_id
                )[0].with_frame_id(cfg.frame_id)
            if cfg.extrinsics_file:
                self._publish_extrinsics(resolve_config_path(cfg.extrinsics_file))
            factory = cfg.source_factory(resolve_config_path)
        except (OSError, ValueError, paths.ArmstackPathError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        qos = image_qos(cfg.qos)
        self._pubs = {
            "color": self.create_lifecycle_publisher(Image, "camera/color/image_raw", qos),
            "info": self.create_lifecycle_publisher(CameraInfo, "camera/color/camera_info", qos),
        }
        has_depth = cfg.source == "folder" or (
            cfg.source == "realsense" and cfg.realsense_enable_depth
        )
        if has_depth:
            self._pubs["depth"] = self.create_lifecycle_publisher(
                Image, "camera/aligned_depth_to_color/image_raw", qos
            )
        self._loop = CaptureLoop(factory, self._on_frame, cfg.capture_config(), self._on_open)
        self._loop.start()
        self.get_logger().info(f"configured: source {cfg.source}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().info("active: publishing")
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().info("inactive: capture continues, nothing published")
        return super().on_deactivate(state)

    def release(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self._info_msg = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    # ------------------------------------------------------------------------- publishing

    def _publish_extrinsics(self, path: Path) -> None:
        _, extrinsics = load_camera_file(path, self.config.frame_id)
        if extrinsics is None:
            raise ValueError(f"{path}: no extrinsics to publish (set extrinsics_file to '')")
        t = TransformStamped()
        t.header.stamp = self.get_clock().now().to_msg()
        t.header.frame_id = extrinsics.parent_frame
        t.child_frame_id = self.config.frame_id
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (
            float(v) for v in extrinsics.translation
        )
        q = t.transform.rotation
        q.x, q.y, q.z, q.w = (float(v) for v in extrinsics.rotation_xyzw)
        self._tf_static_pub.publish(TFMessage(transforms=[t]))
        self.get_logger().info(
            f"tf_static: {extrinsics.parent_frame} -> {self.config.frame_id} from {path}"
        )

    def _on_open(self, info: SourceInfo) -> None:
        """Choose the camera model once the stream's size is known (capture thread)."""
        cfg = self.config
        model = self._file_model or (info.model.with_frame_id(cfg.frame_id) if info.model else None)
        self._size_error = ""
        if model is None:
            self.get_logger().warning(
                "no camera model (camera_info_file, source): camera_info is uncalibrated (K = 0)"
            )
            model = CameraModel.uncalibrated(info.width, info.height, cfg.frame_id)
        elif (model.width, model.height) != (info.width, info.height):
            # Intrinsics of another resolution would place every object wrongly: publish
            # uncalibrated so consumers refuse, and say so in diagnostics.
            self._size_error = (
                f"camera model is {model.width}x{model.height}, stream is "
                f"{info.width}x{info.height}"
            )
            self.get_logger().error(self._size_error)
            model = CameraModel.uncalibrated(info.width, info.height, cfg.frame_id)
        self._info_msg = camera_info_from_model(model)

    def _on_frame(self, frame: Frame) -> None:
        """Publish one frame (capture thread; rclpy publishers are thread-safe)."""
        if "color" not in self._pubs or not self._pubs["color"].is_activated:
            return
        sec, nanosec = sec_to_stamp_fields(frame.stamp_s)
        header = Header(frame_id=self.config.frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        self._pubs["color"].publish(numpy_to_image(frame.color, "rgb8", header))
        if self._info_msg is not None:
            self._info_msg.header = header
            self._pubs["info"].publish(self._info_msg)
        if frame.depth_mm is not None and "depth" in self._pubs:
            self._pubs["depth"].publish(numpy_to_image(frame.depth_mm, "16UC1", header))
        # Stats are read by the diagnostics timer without a lock: a torn read costs one sample.
        self._rate.tick(frame.stamp_s)
        self._latency_ms.add((time.time() - frame.stamp_s) * 1e3)

    # ------------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        cfg = self.config
        report = DiagnosticReport(f"{self.get_name()}: capture", hardware_id=cfg.source)
        status = self._loop.status() if self._loop is not None else None
        if status is None:
            report.raise_to(Level.WARN, "not configured")
        else:
            if status.info is not None:
                report.hardware_id = status.info.hardware_id
                report.add("device", status.info.description)
            report.add("state", status.state)
            report.add("frames", status.frames)
            report.add("reconnects", status.reconnects)
            report.add("last_error", status.last_error or "none")
            check_stream(report, status, self._rate.rate_hz(), cfg)
        if self._size_error:
            report.raise_to(Level.ERROR, self._size_error)
        latency = self._latency_ms.summary()
        report.add("latency_median_ms", latency["median"])
        report.add("latency_p99_ms", latency["p99"])
        self._diag_pub.publish(to_msg([report], self.get_clock().now().to_msg()))


def _autostart(node: CameraNode) -> bool:
    if not node.config.autostart:
        return True
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    node.trigger_activate()
    return True


def main(args: list[str] | None = None) -> int:
    return run_node("camera", CameraNode, args=args, start=_autostart, release=CameraNode.release)


if __name__ == "__main__":
    sys.exit(main())
