"""detector_node: runs the ONNX detector on camera images and publishes vision_msgs detections.

Inference runs on a worker thread that always takes the newest frame; frames that arrive
while it is busy replace the pending one and count as skipped, so results never queue up
behind a slow model. The debug overlay is drawn only while someone subscribes to it.
"""

from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from armstack_camera.config import resolve_config_path
from armstack_camera.msg_conv import image_to_rgb, numpy_to_image
from armstack_camera.qos import RESULTS_QOS, image_qos
from armstack_common import paths
from armstack_common.node_main import run_node
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.params import NodeParameters
from armstack_common.stats import RateMeter, RollingStats
from armstack_common.timeutil import stamp_to_sec
from armstack_detector.latest import LatestSlot
from armstack_detector.node_config import PARAMS, DetectorNodeConfig
from armstack_detector.onnx_runner import TRAIN_TOOL, OnnxDetector
from armstack_detector.results import ClassNames, detections_to_msg, draw_overlay, load_labels


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__("detector")
        self.params = NodeParameters(self, PARAMS, DetectorNodeConfig.from_params, self._on_update)
        cfg: DetectorNodeConfig = self.params.config
        model_path = paths.resolve_model(cfg.model_path, made_by=TRAIN_TOOL)
        self.detector = OnnxDetector(cfg.detector_config(str(model_path)))
        self.names = self._class_names(cfg)
        self.get_logger().info(
            f"model {model_path} ({self.detector.layout}, input {self.detector.input_hw}) on "
            f"{self.detector.providers[0]}; classes {self.names.names or 'unnamed'}"
        )
        qos = image_qos(cfg.qos)
        self._det_pub = self.create_publisher(Detection2DArray, "detections", RESULTS_QOS)
        self._overlay_pub = self.create_publisher(Image, "detections/image", qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(Image, "camera/color/image_raw", self._on_image, qos)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self._slot: LatestSlot[Image] = LatestSlot()
        self._received = 0
        self._errors = 0
        self._reported_errors = 0  # errors already in a diagnostics message
        self._last_error = ""
        self._rate = RateMeter(window=300)
        self._inference_ms = RollingStats(window=300)
        self._latency_ms = RollingStats(window=300)
        self._worker = threading.Thread(target=self._work, name="detector-worker", daemon=True)
        self._worker.start()

    def _class_names(self, cfg: DetectorNodeConfig) -> ClassNames:
        from_model = self.detector.class_names
        if not cfg.labels_file:
            return ClassNames(from_model)
        labels = load_labels(resolve_config_path(cfg.labels_file))
        if from_model and labels != from_model:
            self.get_logger().warning(
                f"labels_file {cfg.labels_file} overrides the model's class names {from_model}"
            )
        return ClassNames(labels)

    def _on_update(self, values: dict) -> None:
        # Thresholds change without a new session; the worker reads the new config next frame.
        self.detector.decode_config = self.params.config.decode_config()

    def _on_image(self, msg: Image) -> None:
        self._received += 1
        self._slot.put(msg)

    def _work(self) -> None:
        while (msg := self._slot.take()) is not None:
            try:
                self._process(msg)
            except Exception as exc:  # a bad frame must not end the worker
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(
                    f"detection failed: {self._last_error}", throttle_duration_sec=5.0
                )

    def _process(self, msg: Image) -> None:
        rgb = image_to_rgb(msg)  # (H, W, 3) uint8
        detections, timings = self.detector.detect(rgb)
        self._det_pub.publish(detections_to_msg(detections, self.names, msg.header))
        if self._overlay_pub.get_subscription_count() > 0:
            overlay = draw_overlay(rgb, detections, self.names)
            self._overlay_pub.publish(numpy_to_image(overlay, "rgb8", msg.header))
        now = time.time()
        self._rate.tick(now)
        self._inference_ms.add(sum(timings.values()))
        self._latency_ms.add((now - stamp_to_sec(msg.header.stamp)) * 1e3)

    def _publish_diagnostics(self) -> None:
        cfg: DetectorNodeConfig = self.params.config
        report = DiagnosticReport(
            f"{self.get_name()}: detection", hardware_id=self.detector.providers[0]
        )
        report.add("received", self._received)
        report.add("processed", self._rate.count)
        report.add("skipped", self._slot.skipped)
        report.add("errors", self._errors)
        report.add("rate_hz", self._rate.rate_hz())
        inference = self._inference_ms.summary()
        report.add("detect_median_ms", inference["median"])
        report.add("detect_p99_ms", inference["p99"])
        if self._errors > self._reported_errors:
            report.raise_to(
                Level.WARN,
                f"{self._errors - self._reported_errors} frame(s) failed, last: {self._last_error}",
            )
            self._reported_errors = self._errors
        if self._rate.count == 0:
            report.raise_to(Level.WARN, "no image processed yet")
            report.add("latency_median_ms", float("nan"))
        else:
            report.check_latency(self._latency_ms.summary(), cfg.latency_warn_ms,
                                 cfg.latency_error_ms)
        self._diag_pub.publish(to_msg([report], self.get_clock().now().to_msg()))

    def stop(self) -> None:
        self._slot.close()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node("detector", DetectorNode, args=args, release=DetectorNode.stop)


if __name__ == "__main__":
    sys.exit(main())
