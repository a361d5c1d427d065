"""Decoders on hand-made output tensors: boxes are placed at known original-image positions,
encoded the way each export encodes them, and must come back exactly."""

import numpy as np
import pytest

from armstack_detector.decoders import (
    DecodeConfig,
    Detections,
    ModelLayoutError,
    TensorMeta,
    check_layout,
    decode_end_to_end,
    decode_rtdetr_ref,
    decode_rtdetr_ultralytics,
    decode_yolo_raw,
    detect_layout,
    nms,
)
from armstack_detector.preprocess import letterbox, stretch

CFG = DecodeConfig(conf_threshold=0.5, iou_threshold=0.5, max_det=100)
# Known objects in original pixels (x1, y1, x2, y2), with score and class.
BOXES_LANDSCAPE = np.array(
    [[100, 50, 300, 250], [400, 300, 620, 470], [10, 10, 60, 40]], np.float32
)
BOXES_PORTRAIT = np.array([[50, 100, 250, 300], [300, 400, 470, 620], [10, 10, 40, 60]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7], np.float32)
CLASSES = np.array([2, 0, 1])
NC = 3


def _transform(h, w, resize=letterbox, size=320):
    return resize(np.zeros((h, w, 3), np.uint8), (size, size))[1]


def _xyxy_to_cxcywh(b):
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1
    )


def _yolo_raw(input_boxes, scores, classes, anchors=64):
    """(1, 4 + NC, anchors) with the given boxes in the first anchors, the rest empty."""
    out = np.zeros((1, 4 + NC, anchors), np.float32)
    n = len(input_boxes)
    out[0, :4, :n] = _xyxy_to_cxcywh(input_boxes).T
    out[0, 4 + classes, np.arange(n)] = scores
    out[0, 4:, n:] = 0.01  # background anchors, below threshold
    return {"output0": out}


def _assert_dets(dets, boxes, scores, classes):
    order = np.argsort(-scores)
    np.testing.assert_allclose(dets.boxes, boxes[order], atol=1e-3)
    np.testing.assert_allclose(dets.scores, scores[order], atol=1e-6)
    np.testing.assert_array_equal(dets.class_ids, classes[order])
    assert dets.boxes.dtype == np.float32 and dets.class_ids.dtype == np.int64


@pytest.mark.parametrize(
    ("h", "w", "boxes"), [(480, 640, BOXES_LANDSCAPE), (640, 480, BOXES_PORTRAIT)]
)
def test_yolo_raw_recovers_original_boxes(h, w, boxes):
    tf = _transform(h, w)
    dets = decode_yolo_raw(_yolo_raw(tf.to_input(boxes), SCORES, CLASSES), tf, CFG)
    _assert_dets(dets, boxes, SCORES, CLASSES)


def test_yolo_raw_nms_classwise_and_agnostic():
    tf = _transform(480, 640)
    base = np.array([100, 100, 300, 300], np.float32)
    boxes = np.stack([base, base + 5, base + 8])  # heavily overlapping
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 0, 1])  # the duplicate of class 0 goes; class 1 stays
    raw = _yolo_raw(tf.to_input(boxes), scores, classes)
    dets = decode_yolo_raw(raw, tf, CFG)
    _assert_dets(dets, boxes[[0, 2]], scores[[0, 2]], classes[[0, 2]])
    agnostic = decode_yolo_raw(raw, tf, DecodeConfig(0.5, 0.5, 100, agnostic_nms=True))
    _assert_dets(agnostic, boxes[[0]], scores[[0]], classes[[0]])


def test_yolo_raw_max_det_keeps_best():
    tf = _transform(480, 640)
    boxes = np.array([[i * 60, 0, i * 60 + 50, 50] for i in range(10)], np.float32)
    scores = np.linspace(0.6, 0.95, 10).astype(np.float32)
    dets = decode_yolo_raw(
        _yolo_raw(tf.to_input(boxes), scores, np.zeros(10, int)), tf, DecodeConfig(0.5, 0.5, 4)
    )
    _assert_dets(dets, boxes[6:], scores[6:], np.zeros(4, int))


def test_yolo_raw_all_below_threshold_and_no_anchors():
    tf = _transform(480, 640)
    raw = _yolo_raw(tf.to_input(BOXES_LANDSCAPE), SCORES * 0.5, CLASSES)
    assert len(decode_yolo_raw(raw, tf, DecodeConfig(0.5))) == 0
    empty = decode_yolo_raw({"output0": np.zeros((1, 4 + NC, 0), np.float32)}, tf, CFG)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        (
            {"a": np.zeros((1, 7, 10), np.float32), "b": np.zeros((1, 7, 10), np.float32)},
            "exactly one output",
        ),
        ({"output0": np.zeros((7, 10), np.float32)}, "shape"),
        ({"output0": np.zeros((1, 4, 10), np.float32)}, "at least 1 class"),
        ({"output0": np.zeros((1, 7, 10), np.int64)}, "dtype"),
    ],
)
def test_yolo_raw_malformed(outputs, match):
    with pytest.raises(ModelLayoutError, match=f"yolo_raw.*{match}"):
        decode_yolo_raw(outputs, _transform(480, 640), CFG)


@pytest.mark.parametrize(
    ("h", "w", "boxes"), [(480, 640, BOXES_LANDSCAPE), (640, 480, BOXES_PORTRAIT)]
)
def test_end_to_end_thresholds_and_recovers(h, w, boxes):
    tf = _transform(h, w)
    rows = np.zeros((1, 10, 6), np.float32)  # trailing all-zero rows, as padded exports give
    rows[0, :3, :4] = tf.to_input(boxes)
    rows[0, :3, 4] = SCORES
    rows[0, :3, 5] = CLASSES
    rows[0, 3] = [1, 1, 20, 20, 0.3, 1]  # below threshold
    dets = decode_end_to_end({"output0": rows}, tf, CFG)
    _assert_dets(dets, boxes, SCORES, CLASSES)


def test_end_to_end_wrong_row_width():
    with pytest.raises(ModelLayoutError, match="end_to_end.*rows of 6.*rows of 7"):
        decode_end_to_end({"output0": np.zeros((1, 10, 7), np.float32)}, _transform(480, 640), CFG)


def _rtdetr_ref(boxes, scores, labels, queries=300):
    out = {
        "labels": np.zeros((1, queries), np.int64),
        "boxes": np.zeros((1, queries, 4), np.float32),
        "scores": np.zeros((1, queries), np.float32),
    }
    n = len(boxes)
    out["labels"][0, :n], out["boxes"][0, :n], out["scores"][0, :n] = labels, boxes, scores
    return out


def test_rtdetr_ref_keeps_multi_label_queries_and_clips():
    tf = _transform(480, 640, stretch)
    # Query 0 reported twice with two labels (focal-loss top-k); the last box leaves the image.
    boxes = np.array([[100, 50, 300, 250], [100, 50, 300, 250], [600, 400, 700, 500]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    labels = np.array([1, 2, 0])
    dets = decode_rtdetr_ref(_rtdetr_ref(boxes, scores, labels), tf, CFG)
    expected = np.array(
        [[100, 50, 300, 250], [600, 400, 640, 480], [100, 50, 300, 250]], np.float32
    )
    np.testing.assert_allclose(dets.boxes, expected)
    np.testing.assert_array_equal(dets.class_ids, [1, 0, 2])


def test_rtdetr_ref_all_below_threshold():
    tf = _transform(480, 640, stretch)
    assert len(decode_rtdetr_ref(_rtdetr_ref(BOXES_LANDSCAPE, SCORES * 0.1, CLASSES), tf, CFG)) == 0


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o: o.pop("labels"), "labels, boxes, scores"),
        (lambda o: o.update(boxes=np.zeros((1, 300, 5), np.float32)), r"boxes \(1, 300, 5\)"),
        (lambda o: o.update(labels=np.zeros((1, 300), np.float32)), "integer labels"),
    ],
)
def test_rtdetr_ref_malformed(mutate, match):
    outputs = _rtdetr_ref(BOXES_LANDSCAPE, SCORES, CLASSES)
    mutate(outputs)
    with pytest.raises(ModelLayoutError, match=f"rtdetr_ref.*{match}"):
        decode_rtdetr_ref(outputs, _transform(480, 640, stretch), CFG)


@pytest.mark.parametrize(
    ("h", "w", "boxes"), [(480, 640, BOXES_LANDSCAPE), (640, 480, BOXES_PORTRAIT)]
)
def test_rtdetr_ultralytics_recovers_original_boxes(h, w, boxes):
    tf = _transform(h, w, stretch, size=640)
    out = np.zeros((1, 300, 4 + NC), np.float32)
    input_boxes = tf.to_input(boxes) / 640.0  # normalized to the stretched input
    out[0, :3, :4] = _xyxy_to_cxcywh(input_boxes)
    out[0, np.arange(3), 4 + CLASSES] = SCORES
    out[0, np.arange(3), 4 + (CLASSES + 1) % NC] = 0.2  # runner-up classes lose the argmax
    dets = decode_rtdetr_ultralytics({"output0": out}, tf, CFG)
    _assert_dets(dets, boxes, SCORES, CLASSES)


def test_rtdetr_ultralytics_empty():
    tf = _transform(480, 640, stretch)
    assert (
        len(decode_rtdetr_ultralytics({"output0": np.zeros((1, 300, 6), np.float32)}, tf, CFG)) == 0
    )


def test_nms_greedy_chain():
    """A suppresses B; C overlaps only B, so C survives (greedy, not transitive)."""
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [7, 0, 17, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, 10), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, 1), [0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.99, 10), [0, 1, 2])


def test_nms_classwise_offset_separates_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.7])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 10, np.array([0, 1, 1])), [1, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, 10), [1])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5, 10).shape == (0,)


def test_detections_record_checks_shapes():
    with pytest.raises(ValueError, match="inconsistent"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(2, np.int64))


@pytest.mark.parametrize(
    ("field", "value"), [("conf_threshold", 1.5), ("iou_threshold", 0.0), ("max_det", 0)]
)
def test_decode_config_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        DecodeConfig(**{field: value})


IMG = [TensorMeta("images", (1, 3, 640, 640), "tensor(float)")]
REF_IN = IMG + [TensorMeta("orig_target_sizes", (1, 2), "tensor(int64)")]
REF_OUT = [
    TensorMeta("labels", (1, 300), "tensor(int64)"),
    TensorMeta("boxes", (1, 300, 4), "tensor(float)"),
    TensorMeta("scores", (1, 300), "tensor(float)"),
]


@pytest.mark.parametrize(
    ("inputs", "outputs", "metadata", "layout"),
    [
        (IMG, [TensorMeta("output0", (1, 84, 8400), "tensor(float)")], None, "yolo_raw"),
        (IMG, [TensorMeta("output0", ("batch", 84, "anchors"), "tensor(float)")], None, "yolo_raw"),
        (IMG, [TensorMeta("output0", (1, 300, 6), "tensor(float)")], None, "end_to_end"),
        (IMG, [TensorMeta("output0", ("batch", 300, 6), "tensor(float16)")], None, "end_to_end"),
        (IMG, [TensorMeta("output0", (1, 300, 84), "tensor(float)")], None, "rtdetr_ultralytics"),
        # A two-class RT-DETR has rows of 6 too; ultralytics' description tells them apart.
        (
            IMG,
            [TensorMeta("output0", (1, 300, 6), "tensor(float)")],
            {"description": "Ultralytics rtdetr-l model trained on blocks.yaml"},
            "rtdetr_ultralytics",
        ),
        (REF_IN, REF_OUT, None, "rtdetr_ref"),
    ],
)
def test_detect_layout(inputs, outputs, metadata, layout):
    assert detect_layout(inputs, outputs, metadata) == layout
    check_layout(layout, inputs, outputs)


def test_detect_layout_refuses_unknown():
    outputs = [TensorMeta("a", (1, 10), "tensor(float)"), TensorMeta("b", (1, 10), "tensor(float)")]
    with pytest.raises(ModelLayoutError, match="cannot tell the layout"):
        detect_layout(IMG, outputs)


@pytest.mark.parametrize(
    ("layout", "inputs", "outputs", "match"),
    [
        (
            "end_to_end",
            IMG,
            [TensorMeta("output0", (1, 84, 8400), "tensor(float)")],
            r"end_to_end.*\(1, K, 6\).*output0 \[1, 84, 8400\]",
        ),
        (
            "yolo_raw",
            IMG,
            [TensorMeta("output0", (1, 84, 8400), "tensor(int64)")],
            r"yolo_raw.*tensor\(int64\)",
        ),
        ("yolo_raw", IMG, REF_OUT, "yolo_raw.*exactly one float output"),
        (
            "yolo_raw",
            REF_IN,
            [TensorMeta("output0", (1, 84, 8400), "tensor(float)")],
            "yolo_raw.*inputs images only",
        ),
        ("rtdetr_ref", IMG, REF_OUT, "rtdetr_ref.*orig_target_sizes"),
        ("rtdetr_ref", REF_IN, REF_OUT[:2], "rtdetr_ref.*labels, boxes, scores"),
        (
            "rtdetr_ref",
            REF_IN,
            [REF_OUT[0], TensorMeta("boxes", (1, 300, 5), "tensor(float)"), REF_OUT[2]],
            "rtdetr_ref.*boxes float",
        ),
        (
            "rtdetr_ultralytics",
            [TensorMeta("images", (1, 1, 640, 640), "tensor(float)")],
            [TensorMeta("output0", (1, 300, 84), "tensor(float)")],
            r"rtdetr_ultralytics.*\(1, 3, H, W\)",
        ),
        ("nonsense", IMG, REF_OUT, "unknown layout"),
    ],
)
def test_check_layout_names_expected_and_found(layout, inputs, outputs, match):
    with pytest.raises(ModelLayoutError, match=match):
        check_layout(layout, inputs, outputs)
