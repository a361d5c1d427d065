"""localization_node launched for real, fed synthetic detections, depth, camera_info and
tf_static by the test; object positions are checked against ground truth."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import (
    Detection2D,
    Detection2DArray,
    Detection3DArray,
    ObjectHypothesisWithPose,
)
from visualization_msgs.msg import Marker, MarkerArray

from armstack_camera.calibration import load_camera_file
from armstack_camera.msg_conv import camera_info_from_model, numpy_to_image
from armstack_camera.node_testing import Listener, NodeProcess, isolated_domain_id
from armstack_camera.qos import RESULTS_QOS, TF_STATIC_BROADCASTER_QOS, image_qos
from armstack_common import paths
from armstack_common.tf_buffer import Transform
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec

MODULE = "armstack_localization.localization_node"
DOMAIN = isolated_domain_id()
CAMERA, EXTRINSICS = load_camera_file(paths.config_file("camera/calibration.yaml"))
T_BASE_CAM = Transform.make(EXTRINSICS.translation, EXTRINSICS.rotation_xyzw).matrix()
# Visible top-centre points of three cubes on the table, base_link (ground truth).
TRUTH = {
    "red_cube": (0.30, 0.00, 0.03),
    "green_cube": (0.22, -0.12, 0.03),
    "blue_cube": (0.36, 0.11, 0.03),
}
HALF_PX = 10


def scene() -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    """Depth (480, 640) mm: table-free background 0, a patch at each cube's depth; the
    detection boxes (label, (cx, cy, w, h)) centred on each cube's projection."""
    depth = np.zeros((CAMERA.height, CAMERA.width), np.uint16)
    boxes = []
    K = CAMERA.K
    for label, point in TRUTH.items():
        x, y, z = (np.asarray(point) - T_BASE_CAM[:3, 3]) @ T_BASE_CAM[:3, :3]
        u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
        r, c = int(v), int(u)
        depth[r - HALF_PX : r + HALF_PX + 1, c - HALF_PX : c + HALF_PX + 1] = round(z * 1000)
        boxes.append((label, (u, v, 2.0 * HALF_PX, 2.0 * HALF_PX)))
    return depth, boxes


def detections_msg(header: Header, boxes) -> Detection2DArray:
    msg = Detection2DArray(header=header)
    for label, (cx, cy, w, h) in boxes:
        det = Detection2D(header=header)
        det.bbox.center.position.x, det.bbox.center.position.y = float(cx), float(cy)
        det.bbox.size_x, det.bbox.size_y = w, h
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = label, 0.9
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def tf_static_msg() -> TFMessage:
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = EXTRINSICS.parent_frame, CAMERA.frame_id
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (
        float(v) for v in EXTRINSICS.translation
    )
    q = t.transform.rotation
    q.x, q.y, q.z, q.w = (float(v) for v in EXTRINSICS.rotation_xyzw)
    return TFMessage(transforms=[t])


class Feeder:
    """Publishes camera_info + depth + detections of one stamp per tick; every fourth tick
    the detections carry a stamp whose depth frame never comes (to be dropped)."""

    def __init__(self, listener: Listener) -> None:
        node = listener.node
        qos = image_qos("reliable")
        self.info_pub = node.create_publisher(CameraInfo, "camera/color/camera_info", qos)
        self.depth_pub = node.create_publisher(
            Image, "camera/aligned_depth_to_color/image_raw", qos
        )
        self.det_pub = node.create_publisher(Detection2DArray, "detections", RESULTS_QOS)
        self.depth, self.boxes = scene()
        self.sent: list[float] = []
        self.orphans: list[float] = []
        self.tick = 0
        node.create_timer(0.1, self.publish)

    def publish(self) -> None:
        self.tick += 1
        now = time.time()
        header = Header(frame_id=CAMERA.frame_id)
        header.stamp.sec, header.stamp.nanosec = sec_to_stamp_fields(now)
        self.info_pub.publish(camera_info_from_model(CAMERA, header))
        self.depth_pub.publish(numpy_to_image(self.depth, "16UC1", header))
        if self.tick % 4 == 0:
            orphan = Header(frame_id=CAMERA.frame_id)
            orphan.stamp.sec, orphan.stamp.nanosec = sec_to_stamp_fields(now - 0.05)
            self.det_pub.publish(detections_msg(orphan, self.boxes))
            self.orphans.append(stamp_to_sec(orphan.stamp))
        self.det_pub.publish(detections_msg(header, self.boxes))
        self.sent.append(stamp_to_sec(header.stamp))


def test_objects_are_placed_at_ground_truth_in_base_link():
    with Listener(DOMAIN, "localization_test") as lis:
        tf_pub = lis.node.create_publisher(TFMessage, "tf_static", TF_STATIC_BROADCASTER_QOS)
        tf_pub.publish(tf_static_msg())  # transient local: the node gets it when it joins
        objects = lis.collect(Detection3DArray, "objects", RESULTS_QOS)
        markers = lis.collect(MarkerArray, "objects/markers", RESULTS_QOS)
        diagnostics = lis.collect(DiagnosticArray, "diagnostics", 10)
        feeder = Feeder(lis)

        def dropped() -> int:
            if not diagnostics:
                return 0
            values = {kv.key: kv.value for kv in diagnostics[-1][1].status[0].values}
            return int(values.get("unpaired_dropped", 0))

        params = {"diagnostics_period_s": 0.3}
        with NodeProcess(MODULE, params, DOMAIN) as node:
            ok = lis.spin_until(
                lambda: len(objects) >= 8 and markers and dropped() >= 1, 30.0, node
            )
            assert ok, node.output()
            assert node.stop() == 0, node.output()

    for received, msg in objects:
        stamp = stamp_to_sec(msg.header.stamp)
        assert stamp in feeder.sent and stamp not in feeder.orphans  # the image's stamp
        assert msg.header.frame_id == "base_link"
        placed = {d.results[0].hypothesis.class_id: d for d in msg.detections}
        assert set(placed) == set(TRUTH)
        for label, truth in TRUTH.items():
            p = placed[label].results[0].pose.pose.position
            np.testing.assert_allclose((p.x, p.y, p.z), truth, atol=3e-3)
            assert placed[label].bbox.size.x == pytest.approx(
                2 * HALF_PX * 0.001 * _depth(truth), rel=0.05
            )
        assert received - stamp < 1.0
    latest = markers[-1][1].markers
    assert latest[0].action == Marker.DELETEALL
    assert sum(m.type == Marker.CUBE for m in latest) == 3
    assert latest[1].header.frame_id == "base_link"
    status = diagnostics[-1][1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    # Diagnostics run on their own timer: they count what was done when they were sent. (A
    # frame or two may beat tf_static at start-up and count as tf_failed.)
    assert int(values["frames"]) >= 1
    assert int(values["no_depth"]) == 0
    assert float(values["latency_p99_ms"]) >= float(values["latency_median_ms"]) > 0.0


def _depth(point) -> float:
    """Camera z of a base_link point, in mm (for the size check)."""
    return (
        float(((np.asarray(point) - T_BASE_CAM[:3, 3]) @ T_BASE_CAM[:3, :3])[2])
        * 1000
        / CAMERA.K[0, 0]
    )


def test_without_the_camera_transform_frames_are_refused_and_reported():
    with Listener(DOMAIN, "localization_test_no_tf") as lis:
        objects = lis.collect(Detection3DArray, "objects", RESULTS_QOS)
        diagnostics = lis.collect(DiagnosticArray, "diagnostics", 10)
        Feeder(lis)

        def tf_failures() -> int:
            if not diagnostics:
                return 0
            values = {kv.key: kv.value for kv in diagnostics[-1][1].status[0].values}
            return int(values.get("tf_failed", 0))

        with NodeProcess(MODULE, {"diagnostics_period_s": 0.3}, DOMAIN) as node:
            assert lis.spin_until(lambda: tf_failures() >= 3, 30.0, node), node.output()
            assert node.stop() == 0, node.output()
    assert objects == []
    status = diagnostics[-1][1].status[0]
    assert status.level == b"\x01" and "no transform base_link <- camera_color_optical_frame" in (
        status.message
    ), status.message
