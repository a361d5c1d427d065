"""detector_node launched for real with a tiny generated ONNX model (Isaac ROS proof-of-life
style): images in, Detection2DArray and overlay out, live thresholds, clean failures."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from onnx import TensorProto, helper, numpy_helper
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from armstack_camera.msg_conv import image_to_numpy, numpy_to_image
from armstack_camera.node_testing import Listener, NodeProcess, isolated_domain_id
from armstack_camera.qos import RESULTS_QOS, image_qos
from armstack_common.node_main import EXIT_CANNOT_START
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec

MODULE = "armstack_detector.detector_node"
DOMAIN = isolated_domain_id()
# Rows x1 y1 x2 y2 score class in the 320x320 letterboxed input of a 640x480 image
# (scale 0.5, 40 px of grey padding above and below).
ROWS = np.array(
    [[[50, 60, 150, 140, 0.9, 1], [200, 100, 260, 180, 0.5, 2], [0, 0, 10, 10, 0.1, 0]]], np.float32
)
# Mean of a white 640x480 image letterboxed to 320: 240 white rows, 80 grey (114) rows.
WHITE_GATE = (240 + 80 * 114 / 255) / 320
EXPECTED_BOXES = {  # class -> xyxy in original pixels: (input - pad) / scale
    "green_cube": (100.0, 40.0, 300.0, 200.0),
    "blue_cube": (400.0, 120.0, 520.0, 280.0),
}


def tiny_end_to_end_model(path) -> str:
    """Output (1, 3, 6) = ROWS with scores times mean(images): a black image finds nothing,
    so a detection proves the real image went through preprocessing into the graph."""
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(value, name + "_v")
    )
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1),  # (1, 1, 1, 1)
        const("gate_shape", np.array([1, 1, 1], np.int64)),
        helper.make_node("Reshape", ["mean", "gate_shape"], ["gate"]),
        const("head", ROWS[:, :, :4]),
        const("score", ROWS[:, :, 4:5]),
        const("tail", ROWS[:, :, 5:]),
        helper.make_node("Mul", ["score", "gate"], ["gated"]),
        helper.make_node("Concat", ["head", "gated", "tail"], ["output0"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def model_files(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red_cube\ngreen_cube\nblue_cube\n")
    return tiny_end_to_end_model(tmp_path / "tiny.onnx"), str(labels)


def image_msg(value: int, t: float) -> Image:
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = sec_to_stamp_fields(t)
    return numpy_to_image(np.full((480, 640, 3), value, np.uint8), "rgb8", header)


def set_parameter(listener: Listener, name: str, value: float) -> bool:
    client = listener.node.create_client(SetParameters, "detector/set_parameters")
    assert listener.spin_until(client.service_is_ready, 10.0)
    param = Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    )
    future = client.call_async(SetParameters.Request(parameters=[param]))
    assert listener.spin_until(future.done, 10.0)
    return future.result().results[0].successful


def test_detects_publishes_overlay_and_follows_live_thresholds(model_files, tmp_path):
    model, labels = model_files
    with Listener(DOMAIN, "detector_test") as lis:
        dets = lis.collect(Detection2DArray, "detections", RESULTS_QOS)
        overlays = lis.collect(Image, "detections/image", image_qos("reliable"))
        diagnostics = lis.collect(DiagnosticArray, "diagnostics", 10)
        pub = lis.node.create_publisher(Image, "camera/color/image_raw", image_qos("reliable"))
        sent: dict[float, float] = {}  # stamp -> time sent

        def publish_white():
            t = time.time()
            sent[stamp_to_sec(image_msg(0, t).header.stamp)] = t
            pub.publish(image_msg(255, t))

        lis.node.create_timer(0.1, publish_white)
        # Three rows of six read as yolo_raw to the layout guess: name the layout.
        params = {
            "model_path": model,
            "layout": "end_to_end",
            "labels_file": labels,
            "intra_op_threads": 1,
            "diagnostics_period_s": 0.3,
        }
        with NodeProcess(MODULE, params, DOMAIN) as node:
            assert lis.spin_until(lambda: len(dets) >= 3 and overlays, 25.0, node), node.output()
            assert set_parameter(lis, "conf_threshold", 0.6)
            updated = time.time()
            assert not set_parameter(lis, "conf_threshold", 1.5)  # out of range: rejected

            def after_update() -> list[Detection2DArray]:
                return [m for _, m in dets if stamp_to_sec(m.header.stamp) > updated]

            assert lis.spin_until(lambda: len(after_update()) >= 3, 10.0, node), node.output()

            def latency_reported() -> bool:
                return any(kv.key == "latency_p99_ms" for _, m in diagnostics[-1:]
                           for kv in m.status[0].values)

            assert lis.spin_until(latency_reported, 10.0, node), node.output()
            assert node.stop() == 0, node.output()

    first = dets[0][1]
    assert stamp_to_sec(first.header.stamp) in sent  # the image's header, carried forward
    assert first.header.frame_id == "camera_color_optical_frame"
    found = {d.results[0].hypothesis.class_id: d for d in first.detections}
    assert set(found) == set(EXPECTED_BOXES)  # the 0.1 * gate row is below 0.25
    for name, (x1, y1, x2, y2) in EXPECTED_BOXES.items():
        bbox = found[name].bbox
        assert bbox.center.position.x == pytest.approx((x1 + x2) / 2, abs=1e-3)
        assert bbox.center.position.y == pytest.approx((y1 + y2) / 2, abs=1e-3)
        assert (bbox.size_x, bbox.size_y) == pytest.approx((x2 - x1, y2 - y1), abs=1e-3)
    assert found["green_cube"].results[0].hypothesis.score == pytest.approx(
        0.9 * WHITE_GATE, abs=1e-3
    )
    # Images taken after conf_threshold became 0.6 keep only the 0.9 * gate detection.
    for msg in after_update():
        assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["green_cube"]

    overlay = overlays[-1][1]
    assert (overlay.encoding, overlay.width, overlay.height) == ("rgb8", 640, 480)
    assert stamp_to_sec(overlay.header.stamp) in sent
    assert (image_to_numpy(overlay) != 255).any()  # boxes drawn on the white image
    values = {kv.key: kv.value for kv in diagnostics[-1][1].status[0].values}
    assert float(values["latency_p99_ms"]) >= float(values["latency_median_ms"]) > 0.0
    latencies = [received - sent[stamp_to_sec(m.header.stamp)] for received, m in dets]
    print(f"detector round trip: median {1e3 * np.median(latencies):.1f} ms")


def test_missing_model_names_the_path_and_the_tool(tmp_path):
    missing = tmp_path / "nope.onnx"
    with NodeProcess(MODULE, {"model_path": str(missing)}, DOMAIN) as node:
        assert node.wait(20.0) == EXIT_CANNOT_START
        out = node.output()
    assert str(missing) in out and "tools/train_detector.py" in out
    assert "Traceback" not in out
    # The default model path is looked up under models/, and the error says what makes it.
    (tmp_path / "models").mkdir()
    env = {"ARMSTACK_MODELS_DIR": str(tmp_path / "models")}
    with NodeProcess(MODULE, {}, DOMAIN, extra_env=env) as node:
        assert node.wait(20.0) == EXIT_CANNOT_START
        out = node.output()
    assert "detector/detector.onnx" in out and "made by: tools/train_detector.py" in out
    assert "Traceback" not in out
