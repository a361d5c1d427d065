"""End to end through a real onnxruntime session, with tiny generated models of each layout."""

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from armstack_detector.decoders import DecodeConfig, ModelLayoutError
from armstack_detector.onnx_runner import TRAIN_TOOL, DetectorConfig, OnnxDetector
from armstack_detector.preprocess import letterbox, stretch

WHITE_LANDSCAPE = np.full((480, 640, 3), 255, np.uint8)
WHITE_PORTRAIT = np.full((640, 480, 3), 255, np.uint8)
# Mean of the letterboxed white 640x480 image at 320: 240 white rows, 80 grey padding rows.
LETTERBOX_GATE = (240 * 1.0 + 80 * 114 / 255.0) / 320
BOXES = np.array([[100, 50, 300, 250], [400, 300, 620, 470], [10, 10, 60, 40]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7], np.float32)
CLASSES = np.array([2, 0, 1])


# --------------------------------------------------------------------------------------------
# Tiny ONNX models with the I/O of each export layout (Isaac ROS "proof of life" style).
#
# Boxes are constants; every score is multiplied by the mean of the input image, so a test can
# check the real preprocessing reached the graph (white image: mean 1 when stretched, less when
# letterbox padding is grey) and that thresholding follows. The rtdetr_ref model scales its
# normalized boxes by the `orig_target_sizes` input, as the reference export does, so feeding
# [h, w] instead of [w, h] shows up as wrong boxes.

OPSET = 17
IR_VERSION = 10  # below the newest onnx writes, so older onnxruntime builds load these too


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(value, name + "_value")
    )


def _image_gate(fp16: bool, gate_shape: tuple[int, ...]) -> list[onnx.NodeProto]:
    """Nodes computing `gate` = mean(images) reshaped to gate_shape."""
    nodes = []
    source = "images"
    if fp16:
        nodes.append(helper.make_node("Cast", ["images"], ["images_f32"], to=TensorProto.FLOAT))
        source = "images_f32"
    nodes += [
        helper.make_node("ReduceMean", [source], ["mean"], keepdims=1),  # (1, 1, 1, 1)
        _const("gate_shape", np.array(gate_shape, np.int64)),
        helper.make_node("Reshape", ["mean", "gate_shape"], ["gate"]),
    ]
    return nodes


def _image_input(input_hw: tuple, fp16: bool) -> onnx.ValueInfoProto:
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    return helper.make_tensor_value_info("images", elem, [1, 3, *input_hw])


def _save(path: Path, nodes, inputs, outputs, metadata: dict[str, str] | None) -> Path:
    graph = helper.make_graph(nodes, "armstack_test_detector", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _out(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def yolo_raw_model(
    path: Path, raw: np.ndarray, input_hw=(320, 320), fp16=False, metadata=None
) -> Path:
    """Output `output0` = raw (1, 4 + nc, A) with score rows times mean(images)."""
    nodes = _image_gate(fp16, (1, 1, 1)) + [
        _const("box_rows", raw[:, :4].astype(np.float32)),
        _const("score_rows", raw[:, 4:].astype(np.float32)),
        helper.make_node("Mul", ["score_rows", "gate"], ["scores"]),
        helper.make_node("Concat", ["box_rows", "scores"], ["output0"], axis=1),
    ]
    out = _out("output0", TensorProto.FLOAT, list(raw.shape))
    return _save(path, nodes, [_image_input(input_hw, fp16)], [out], metadata)


def _rows_model(path: Path, rows: np.ndarray, score_cols: slice, input_hw, metadata) -> Path:
    """Output `output0` = rows (1, K, C) with columns `score_cols` times mean(images)."""
    nodes = _image_gate(False, (1, 1, 1)) + [
        _const("head_cols", rows[:, :, : score_cols.start].astype(np.float32)),
        _const("score_cols", rows[:, :, score_cols].astype(np.float32)),
        _const("tail_cols", rows[:, :, score_cols.stop :].astype(np.float32)),
        helper.make_node("Mul", ["score_cols", "gate"], ["scores"]),
        helper.make_node("Concat", ["head_cols", "scores", "tail_cols"], ["output0"], axis=2),
    ]
    out = _out("output0", TensorProto.FLOAT, list(rows.shape))
    return _save(path, nodes, [_image_input(input_hw, False)], [out], metadata)


def end_to_end_model(path: Path, rows: np.ndarray, input_hw=(320, 320)) -> Path:
    """Output `output0` = rows (1, K, 6) x1 y1 x2 y2 score class, score times mean(images)."""
    return _rows_model(path, rows, slice(4, 5), input_hw, None)


def rtdetr_ultralytics_model(
    path: Path, raw: np.ndarray, input_hw=(640, 640), metadata=None
) -> Path:
    """Output `output0` = raw (1, Q, 4 + nc) with class scores times mean(images)."""
    metadata = metadata or {"description": "Ultralytics rtdetr-l model"}
    return _rows_model(path, raw, slice(4, raw.shape[2]), input_hw, metadata)


def rtdetr_ref_model(
    path: Path, labels: np.ndarray, boxes_norm: np.ndarray, scores: np.ndarray, input_hw=(640, 640)
) -> Path:
    """RT-DETR reference I/O: boxes (1, Q, 4) = boxes_norm * [w, h, w, h] from orig_target_sizes."""
    nodes = _image_gate(False, (1, 1)) + [
        helper.make_node("Cast", ["orig_target_sizes"], ["size_f"], to=TensorProto.FLOAT),  # (1, 2)
        helper.make_node("Concat", ["size_f", "size_f"], ["size4"], axis=1),  # (1, 4) w h w h
        _const("boxes_norm", boxes_norm.astype(np.float32)),
        helper.make_node("Mul", ["boxes_norm", "size4"], ["boxes"]),  # broadcast (1, Q, 4)
        _const("score_const", scores.astype(np.float32)),
        helper.make_node("Mul", ["score_const", "gate"], ["scores"]),
        _const("labels_const", labels.astype(np.int64)),
        helper.make_node("Identity", ["labels_const"], ["labels"]),
    ]
    q = labels.shape[1]
    inputs = [
        _image_input(input_hw, False),
        helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2]),
    ]
    outputs = [
        _out("labels", TensorProto.INT64, [1, q]),
        _out("boxes", TensorProto.FLOAT, [1, q, 4]),
        _out("scores", TensorProto.FLOAT, [1, q]),
    ]
    return _save(path, nodes, inputs, outputs, None)


def constant_outputs_model(path: Path, outputs: dict[str, np.ndarray], input_hw=(320, 320)) -> Path:
    """The usual image input, and the given constants as outputs (for malformed I/O)."""
    nodes = [_const(name + "_c", value) for name, value in outputs.items()]
    nodes += [helper.make_node("Identity", [name + "_c"], [name]) for name in outputs]
    outs = [
        _out(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
        for name, value in outputs.items()
    ]
    return _save(path, nodes, [_image_input(input_hw, False)], outs, None)


# --------------------------------------------------------------------------------------------
# Tests


def _cxcywh(b):
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1
    )


def _yolo_raw_tensor(image, boxes, size=320, nc=3, anchors=40):
    tf = letterbox(image, (size, size))[1]
    raw = np.zeros((1, 4 + nc, anchors), np.float32)
    raw[0, :4, : len(boxes)] = _cxcywh(tf.to_input(boxes)).T
    raw[0, 4 + CLASSES, np.arange(len(boxes))] = SCORES
    return raw


def _detector(path, **overrides):
    return OnnxDetector(
        DetectorConfig(model_path=str(path), conf_threshold=0.5, iou_threshold=0.5, **overrides)
    )


def _check(dets, boxes, scores, classes):
    np.testing.assert_allclose(dets.boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(dets.scores, scores, atol=1e-4)
    np.testing.assert_array_equal(dets.class_ids, classes)


@pytest.mark.parametrize("fp16", [False, True])
def test_yolo_raw_end_to_end(tmp_path, fp16):
    path = yolo_raw_model(tmp_path / "m.onnx", _yolo_raw_tensor(WHITE_LANDSCAPE, BOXES), fp16=fp16)
    det = _detector(path)
    assert det.layout == "yolo_raw" and det.input_hw == (320, 320)
    assert det.providers == ["CPUExecutionProvider"]
    dets, timings = det.detect(WHITE_LANDSCAPE)
    # Scores carry the mean of the letterboxed input: proves padding value and /255 scaling.
    tol = 1e-3 if fp16 else 1e-4
    np.testing.assert_allclose(dets.scores, SCORES * LETTERBOX_GATE, atol=tol)
    np.testing.assert_allclose(dets.boxes, BOXES, atol=1e-3)
    np.testing.assert_array_equal(dets.class_ids, CLASSES)
    assert set(timings) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    assert all(v >= 0.0 for v in timings.values())
    # A black image leaves only the grey padding: every score falls under the threshold.
    assert len(det.detect(np.zeros_like(WHITE_LANDSCAPE))[0]) == 0
    # Thresholds can change live without a new session.
    det.decode_config = DecodeConfig(conf_threshold=0.7)
    np.testing.assert_array_equal(det.detect(WHITE_LANDSCAPE)[0].class_ids, CLASSES[:1])


def test_yolo_raw_dynamic_input_needs_input_size(tmp_path):
    path = yolo_raw_model(
        tmp_path / "m.onnx", _yolo_raw_tensor(WHITE_LANDSCAPE, BOXES), input_hw=("h", "w")
    )
    with pytest.raises(ValueError, match="input_size must be set"):
        _detector(path)
    det = _detector(path, input_size=320)
    assert det.input_hw == (320, 320)
    _check(det.detect(WHITE_LANDSCAPE)[0], BOXES, SCORES * LETTERBOX_GATE, CLASSES)


def test_static_input_size_mismatch_names_field(tmp_path):
    path = yolo_raw_model(tmp_path / "m.onnx", _yolo_raw_tensor(WHITE_LANDSCAPE, BOXES))
    with pytest.raises(ValueError, match="input_size 640 does not match .* 320x320"):
        _detector(path, input_size=640)


def test_end_to_end_portrait(tmp_path):
    boxes = BOXES[:, [1, 0, 3, 2]]  # the same objects in a portrait image
    tf = letterbox(WHITE_PORTRAIT, (320, 320))[1]
    rows = np.zeros((1, 20, 6), np.float32)
    rows[0, :3, :4] = tf.to_input(boxes)
    rows[0, :3, 4] = SCORES
    rows[0, :3, 5] = CLASSES
    det = _detector(end_to_end_model(tmp_path / "m.onnx", rows))
    assert det.layout == "end_to_end"
    _check(det.detect(WHITE_PORTRAIT)[0], boxes, SCORES * LETTERBOX_GATE, CLASSES)


def test_rtdetr_ref_feeds_original_size_as_w_h(tmp_path):
    q = 300
    labels = np.zeros((1, q), np.int64)
    boxes_norm = np.zeros((1, q, 4), np.float32)
    scores = np.zeros((1, q), np.float32)
    labels[0, :3], scores[0, :3] = CLASSES, SCORES
    boxes_norm[0, :3] = BOXES / np.array([640, 480, 640, 480], np.float32)
    det = _detector(rtdetr_ref_model(tmp_path / "m.onnx", labels, boxes_norm, scores))
    assert det.layout == "rtdetr_ref"
    # Stretched white image: mean exactly 1, scores unchanged.
    _check(det.detect(WHITE_LANDSCAPE)[0], BOXES, SCORES, CLASSES)


def test_rtdetr_ultralytics_with_class_names(tmp_path):
    raw = np.zeros((1, 300, 6), np.float32)  # two classes: rows of 6 like end_to_end
    tf = stretch(WHITE_LANDSCAPE, (640, 640))[1]
    raw[0, :3, :4] = _cxcywh(tf.to_input(BOXES) / 640.0)
    classes = CLASSES % 2
    raw[0, np.arange(3), 4 + classes] = SCORES
    metadata = {"description": "Ultralytics rtdetr-l model", "names": "{0: 'cube', 1: 'cylinder'}"}
    det = _detector(rtdetr_ultralytics_model(tmp_path / "m.onnx", raw, metadata=metadata))
    assert det.layout == "rtdetr_ultralytics"
    assert det.class_names == {0: "cube", 1: "cylinder"}
    _check(det.detect(WHITE_LANDSCAPE)[0], BOXES, SCORES, classes)


def test_malformed_model_names_layout_and_found(tmp_path):
    outputs = {"a": np.zeros((1, 7, 40), np.float32), "b": np.zeros((1, 7, 40), np.float32)}
    path = constant_outputs_model(tmp_path / "m.onnx", outputs)
    with pytest.raises(
        ModelLayoutError, match=r"yolo_raw.*exactly one float output.*a \[1, 7, 40\]"
    ):
        _detector(path, layout="yolo_raw")
    with pytest.raises(ModelLayoutError, match="cannot tell the layout"):
        _detector(path)


def test_wrong_dtype_output_is_refused(tmp_path):
    path = constant_outputs_model(tmp_path / "m.onnx", {"output0": np.zeros((1, 20, 6), np.int64)})
    with pytest.raises(ModelLayoutError, match=r"end_to_end.*tensor\(int64\)"):
        _detector(path, layout="end_to_end")


def test_missing_model_names_path_and_tool(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*{TRAIN_TOOL}"):
        _detector(missing)


def test_missing_provider_falls_back_with_a_log_line(tmp_path, caplog):
    path = yolo_raw_model(tmp_path / "m.onnx", _yolo_raw_tensor(WHITE_LANDSCAPE, BOXES))
    with caplog.at_level(logging.WARNING, logger="armstack_common.onnx_session"):
        det = _detector(path, provider="tensorrt", fp16=True, engine_cache_dir=str(tmp_path))
    assert det.providers == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider (tensorrt) is not available" in caplog.text
    assert "using CPUExecutionProvider instead" in caplog.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layout", "yolov5"),
        ("input_size", 300),
        ("provider", "rocm"),
        ("intra_op_threads", -1),
        ("conf_threshold", 2.0),
        ("max_det", 0),
    ],
)
def test_config_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        DetectorConfig(model_path="x.onnx", **{field: value})
