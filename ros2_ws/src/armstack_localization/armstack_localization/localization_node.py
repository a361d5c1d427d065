"""localization_node: places 2D detections in 3D (base frame) from aligned depth and TF.

Each detection is paired with the depth frame of its stamp; the camera's pose is looked up
in `tf` / `tf_static` at that stamp (armstack_common.tf_buffer; tf2_ros has no wheel), and
the objects go out on `objects` (Detection3DArray, header.stamp = the image's) and
`objects/markers`.
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from armstack_camera.calibration import CameraModel
from armstack_camera.msg_conv import camera_model_from_info, image_to_depth_mm
from armstack_camera.qos import RESULTS_QOS, TF_QOS, TF_STATIC_LISTENER_QOS, image_qos
from armstack_common.node_main import run_node
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.params import NodeParameters
from armstack_common.stats import RateMeter, RollingStats
from armstack_common.tf_buffer import TransformBuffer, TransformLookupError
from armstack_common.timeutil import stamp_to_sec
from armstack_localization.node_config import PARAMS, LocalizationNodeConfig
from armstack_localization.pairing import StampPairer
from armstack_localization.pipeline import ObjectLocalizer
from armstack_localization.ros_conv import (
    add_tf_message,
    detections_from_msg,
    markers_msg,
    objects_to_msg,
)


class LocalizationNode(Node):
    def __init__(self) -> None:
        super().__init__("localization")
        self.params = NodeParameters(
            self, PARAMS, LocalizationNodeConfig.from_params, self._on_update
        )
        cfg: LocalizationNodeConfig = self.params.config
        self.localizer = ObjectLocalizer(cfg)
        self.pairer: StampPairer[Detection2DArray, Image] = StampPairer(cfg.pairing())
        self.tf = TransformBuffer(cfg.tf_cache_s)
        self._camera: CameraModel | None = None
        self._counts = {"frames": 0, "objects": 0, "no_depth": 0, "rejected": 0, "tf_failed": 0}
        self._last_problem = ""
        self._recent_problems = 0  # since the last diagnostics message
        self._rate = RateMeter(window=300)
        self._latency_ms = RollingStats(window=300)
        self._process_ms = RollingStats(window=300)

        qos = image_qos(cfg.qos)
        self.create_subscription(Detection2DArray, "detections", self._on_detections, RESULTS_QOS)
        self.create_subscription(
            Image, "camera/aligned_depth_to_color/image_raw", self._on_depth, qos
        )
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, qos)
        # Absolute like tf2_ros's: the TF tree is global even when the node is namespaced.
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS)
        self.create_subscription(
            TFMessage, "/tf_static", lambda m: self._on_tf(m, True), TF_STATIC_LISTENER_QOS
        )
        self._objects_pub = self.create_publisher(Detection3DArray, "objects", RESULTS_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, "objects/markers", RESULTS_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)

    def _on_update(self, values: dict) -> None:
        cfg: LocalizationNodeConfig = self.params.config
        self.localizer.reconfigure(cfg)
        self.pairer.config = cfg.pairing()

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        if add_tf_message(self.tf, msg, static):
            self.get_logger().warning(
                "ignored invalid transforms in tf", throttle_duration_sec=10.0
            )

    def _on_info(self, msg: CameraInfo) -> None:
        self._camera = camera_model_from_info(msg)

    def _on_depth(self, msg: Image) -> None:
        for detections, depth in self.pairer.add_depth(stamp_to_sec(msg.header.stamp), msg):
            self._localize(detections, depth)

    def _on_detections(self, msg: Detection2DArray) -> None:
        pair = self.pairer.add_detection(stamp_to_sec(msg.header.stamp), msg)
        if pair is not None:
            self._localize(*pair)

    def _reject(self, counter: str, reason: str) -> None:
        self._counts[counter] += 1
        self._recent_problems += 1
        self._last_problem = reason
        self.get_logger().warning(reason, throttle_duration_sec=5.0)

    def _localize(self, detections: Detection2DArray, depth: Image) -> None:
        t0 = time.perf_counter()
        cfg: LocalizationNodeConfig = self.params.config
        stamp = stamp_to_sec(detections.header.stamp)
        if self._camera is None:
            self._reject("rejected", "no camera_info received yet")
            return
        camera_frame = detections.header.frame_id or depth.header.frame_id or self._camera.frame_id
        try:
            T_base_cam = self.tf.lookup_matrix(cfg.base_frame, camera_frame, stamp)
            boxes, scores, labels = detections_from_msg(detections)
            placed, no_depth = self.localizer.process(
                boxes, scores, labels, image_to_depth_mm(depth), self._camera, T_base_cam
            )
        except TransformLookupError as exc:
            self._reject("tf_failed", f"no transform {cfg.base_frame} <- {camera_frame}: {exc}")
            return
        except ValueError as exc:  # FrameRejected, or an image of an unknown encoding
            self._reject("rejected", f"frame not localized: {exc}")
            return
        header = Header(stamp=detections.header.stamp, frame_id=cfg.base_frame)
        self._objects_pub.publish(objects_to_msg(placed, header))
        self._markers_pub.publish(markers_msg(placed, header, cfg.marker_lifetime_s))
        self._counts["frames"] += 1
        self._counts["objects"] += len(placed)
        self._counts["no_depth"] += no_depth
        now = time.time()
        self._rate.tick(now)
        self._latency_ms.add((now - stamp) * 1e3)
        self._process_ms.add((time.perf_counter() - t0) * 1e3)

    def _publish_diagnostics(self) -> None:
        cfg: LocalizationNodeConfig = self.params.config
        report = DiagnosticReport(f"{self.get_name()}: localization", hardware_id=cfg.base_frame)
        for key, value in self._counts.items():
            report.add(key, value)
        report.add("paired", self.pairer.paired)
        report.add("unpaired_dropped", self.pairer.dropped)
        report.add("rate_hz", self._rate.rate_hz())
        report.add("process_median_ms", self._process_ms.summary()["median"])
        if self._camera is None:
            report.raise_to(Level.WARN, "no camera_info yet")
        if self._recent_problems:
            report.raise_to(
                Level.WARN,
                f"{self._recent_problems} frame(s) not localized, last: {self._last_problem}",
            )
            self._recent_problems = 0
        if self._rate.count:
            report.check_latency(self._latency_ms.summary(), cfg.latency_warn_ms,
                                 cfg.latency_error_ms)
        self._diag_pub.publish(to_msg([report], self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    return run_node("localization", LocalizationNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
