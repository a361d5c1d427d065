"""Stamp pairing of detections with depth, and the localization message conversions."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
from visualization_msgs.msg import Marker

from armstack_common.tf_buffer import TransformBuffer
from armstack_localization.pairing import PairingConfig, StampPairer
from armstack_localization.ros_conv import (
    PlacedObject,
    add_tf_message,
    class_colour,
    detections_from_msg,
    markers_msg,
    object_size,
    objects_to_msg,
)

# ------------------------------------------------------------------------------- pairing


def test_detection_pairs_with_the_cached_depth_of_its_stamp():
    pairer = StampPairer(PairingConfig(tolerance_s=0.002, depth_cache_size=5))
    for k in range(5):
        assert pairer.add_depth(10.0 + k / 30, f"depth{k}") == []
    assert pairer.add_detection(10.0 + 3 / 30 + 0.001, "det3") == ("det3", "depth3")
    assert pairer.add_detection(10.0 + 1 / 30, "det1") == ("det1", "depth1")
    assert (pairer.paired, pairer.dropped) == (2, 0)


def test_detection_before_its_depth_waits_and_pairs_on_arrival():
    pairer = StampPairer(PairingConfig(tolerance_s=0.002))
    pairer.add_depth(1.0, "d0")
    assert pairer.add_detection(1.1, "det") is None  # its depth is not here yet
    assert pairer.add_depth(1.05, "d1") == []  # older: still waiting
    assert pairer.add_depth(1.1005, "d2") == [("det", "d2")]
    assert (pairer.paired, pairer.dropped) == (1, 0)


@pytest.mark.parametrize("late", [True, False], ids=["depth-after", "depth-before"])
def test_a_lost_depth_frame_drops_its_detection(late):
    pairer = StampPairer(PairingConfig(tolerance_s=0.002))
    pairer.add_depth(1.0, "d0")
    if late:
        assert pairer.add_detection(1.1, "det") is None  # waits...
        assert pairer.add_depth(1.2, "d2") == []  # ...until a newer frame proves it lost
    else:
        pairer.add_depth(1.2, "d2")
        assert pairer.add_detection(1.1, "det") is None  # known lost at once
    assert (pairer.paired, pairer.dropped) == (0, 1)


def test_depth_evicted_from_the_cache_drops_late_detections_and_pending_is_bounded():
    pairer = StampPairer(PairingConfig(tolerance_s=0.001, depth_cache_size=3, max_pending=2))
    for k in range(6):
        pairer.add_depth(float(k), k)
    assert pairer.add_detection(1.0, "old") is None  # depth 1 was evicted
    for k in range(3):
        pairer.add_detection(10.0 + k, f"future{k}")
    assert pairer.dropped == 2  # "old" and the oldest pending beyond max_pending


@pytest.mark.parametrize(
    "field, value", [("tolerance_s", -1.0), ("depth_cache_size", 0), ("max_pending", -1)]
)
def test_pairing_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PairingConfig(**{field: value})


# ----------------------------------------------------------------------------- conversions


def _detection(cx, cy, w, h, hypotheses) -> Detection2D:
    det = Detection2D()
    det.bbox.center.position.x, det.bbox.center.position.y = cx, cy
    det.bbox.size_x, det.bbox.size_y = w, h
    for label, score in hypotheses:
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = label, score
        det.results.append(hyp)
    return det


def test_detections_from_msg_takes_the_best_hypothesis_and_skips_empty_ones():
    msg = Detection2DArray(
        detections=[
            _detection(100.0, 50.0, 20.0, 10.0, [("red_cube", 0.3), ("blue_cube", 0.8)]),
            _detection(5.0, 5.0, 2.0, 2.0, []),
            _detection(300.5, 200.0, 41.0, 40.0, [("green_cube", 0.6)]),
        ]
    )
    boxes, scores, labels = detections_from_msg(msg)
    np.testing.assert_allclose(boxes, [[90, 45, 110, 55], [280, 180, 321, 220]])
    np.testing.assert_allclose(scores, [0.8, 0.6])
    assert labels == ["blue_cube", "green_cube"]
    empty = detections_from_msg(Detection2DArray())
    assert empty[0].shape == (0, 4) and empty[2] == []


def test_tf_messages_fill_the_buffer():
    def stamped(parent, child, sec, x):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.header.stamp = Time(sec=sec)
        t.transform.translation.x = x
        t.transform.rotation.w = 1.0
        return t

    buffer = TransformBuffer()
    bad = stamped("a", "a", 1, 0.0)  # a frame cannot be its own parent
    assert (
        add_tf_message(
            buffer, TFMessage(transforms=[stamped("base_link", "cam", 0, 0.5), bad]), static=True
        )
        == 1
    )
    add_tf_message(buffer, TFMessage(transforms=[stamped("cam", "tool", 1, 1.0)]), static=False)
    add_tf_message(buffer, TFMessage(transforms=[stamped("cam", "tool", 3, 2.0)]), static=False)
    assert buffer.lookup("base_link", "tool", 2.0).translation[0] == pytest.approx(2.0)


OBJECTS = [
    PlacedObject(
        "red_cube", 0.9, np.array([0.3, -0.1, 0.015]), object_size(np.array([0.03, 0.028])), 7
    ),
    PlacedObject("widget", 0.5, np.array([0.2, 0.2, 0.05]), np.array([0.05, 0.05, 0.1])),
]


def test_objects_message_carries_positions_sizes_ids_and_the_image_stamp():
    header = Header(frame_id="base_link", stamp=Time(sec=5, nanosec=7))
    msg = objects_to_msg(OBJECTS, header)
    assert msg.header.stamp == Time(sec=5, nanosec=7) and len(msg.detections) == 2
    red = msg.detections[0]
    assert red.id == "7" and red.results[0].hypothesis.class_id == "red_cube"
    assert red.results[0].hypothesis.score == pytest.approx(0.9)
    p = red.results[0].pose.pose.position
    assert (p.x, p.y, p.z) == pytest.approx((0.3, -0.1, 0.015))
    assert red.bbox.center.position.x == pytest.approx(0.3)
    assert (red.bbox.size.x, red.bbox.size.y, red.bbox.size.z) == pytest.approx((0.03, 0.03, 0.028))
    assert msg.detections[1].id == ""  # untracked


def test_markers_start_with_deleteall_and_colour_by_class():
    header = Header(frame_id="base_link", stamp=Time(sec=5))
    markers = markers_msg(OBJECTS, header, lifetime_s=0.25).markers
    assert markers[0].action == Marker.DELETEALL
    cubes = [m for m in markers if m.type == Marker.CUBE]
    texts = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(cubes) == len(texts) == 2
    assert (cubes[0].color.r, cubes[0].color.g) == pytest.approx((0.85, 0.1))  # red_cube is red
    assert cubes[0].lifetime.nanosec == 250_000_000 and cubes[0].header.frame_id == "base_link"
    assert texts[0].text == "red_cube #7 0.90" and texts[1].text == "widget 0.50"
    assert texts[0].pose.position.z > cubes[0].pose.position.z
    assert len({(m.ns, m.id) for m in markers[1:]}) == 4  # unique marker ids


def test_unnamed_classes_get_a_stable_colour():
    assert class_colour("widget") == class_colour("widget")
    assert class_colour("widget") != class_colour("gadget")
    assert all(0.0 <= c <= 1.0 for c in class_colour("gadget"))
