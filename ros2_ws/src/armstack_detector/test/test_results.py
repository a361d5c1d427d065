"""Class names, Detection2DArray conversion, the overlay, and the latest-frame slot."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml
from std_msgs.msg import Header

from armstack_common import paths
from armstack_common.params import check_values, file_section_problems
from armstack_detector.decoders import Detections
from armstack_detector.latest import LatestSlot
from armstack_detector.node_config import PARAMS, DetectorNodeConfig
from armstack_detector.results import ClassNames, detections_to_msg, draw_overlay, load_labels

DETS = Detections(
    np.array([[10.0, 20.0, 50.0, 60.0], [100.5, 0.0, 131.5, 33.0]], np.float32),
    np.array([0.9, 0.4], np.float32),
    np.array([2, 7], np.int64),
)


def test_labels_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# simulator cubes\nred_cube\n\ngreen_cube  # second\nblue_cube\n")
    names = ClassNames(load_labels(path))
    assert [names(i) for i in range(4)] == ["red_cube", "green_cube", "blue_cube", "3"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no class"):
        load_labels(tmp_path / "empty.txt")


def test_detections_become_centre_size_boxes_with_named_hypotheses():
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = detections_to_msg(DETS, ClassNames({2: "blue_cube"}), header)
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 345
    assert len(msg.detections) == 2
    first, second = msg.detections
    assert first.header.frame_id == "camera_color_optical_frame"
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (30.0, 40.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 40.0)
    assert first.results[0].hypothesis.class_id == "blue_cube"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert second.results[0].hypothesis.class_id == "7"  # unnamed class: its index
    assert second.bbox.center.position.x == pytest.approx(116.0)
    assert len(detections_to_msg(Detections.empty(), ClassNames(), header).detections) == 0


def test_overlay_draws_boxes_on_a_copy():
    image = np.zeros((80, 160, 3), np.uint8)
    out = draw_overlay(image, DETS, ClassNames({2: "blue_cube"}))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not image.any()  # the input is untouched
    assert out[40, 10].any() and out[40, 50].any()  # left and right edges of the first box
    assert not out[40, 30].any()  # its inside stays clear


def test_slot_keeps_only_the_newest_item_and_counts_the_skipped():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(0.1) == 3 and slot.skipped == 2
    assert slot.take(0.05) is None  # empty: times out


def test_slot_wakes_a_waiting_worker_and_close_ends_it():
    slot: LatestSlot[str] = LatestSlot()
    taken: list[str | None] = []
    worker = threading.Thread(target=lambda: taken.extend([slot.take(5.0), slot.take(5.0)]))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    time.sleep(0.05)
    slot.close()
    worker.join(2.0)
    assert not worker.is_alive() and taken == ["frame", None]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"conf_threshold": 1.5}, "conf_threshold"),
        ({"layout": "yolo9000"}, "layout"),
        ({"input_size": 100}, "input_size must be 0 or a positive multiple of 32"),
        ({"latency_warn_ms": 500.0, "latency_error_ms": 100.0}, "latency_error_ms"),
        ({"model_path": ""}, "model_path"),
    ],
)
def test_node_config_rejects_bad_values_naming_the_field(changes, match):
    values = {spec.name: spec.default for spec in PARAMS} | changes
    problems = check_values(PARAMS, values)
    if problems:
        assert any(match in p for p in problems)
        return
    with pytest.raises(ValueError, match=match):
        DetectorNodeConfig.from_params(values)


def test_node_config_defaults_build_the_detector_config():
    cfg = DetectorNodeConfig.from_params({spec.name: spec.default for spec in PARAMS})
    det = cfg.detector_config("/x/model.onnx")
    assert det.model_path == "/x/model.onnx" and det.provider == "cpu"
    assert cfg.decode_config() == det.decode_config()


def test_perception_yaml_section_configures_the_node():
    """config/perception.yaml: declared names only, the declared types, valid values."""
    raw = yaml.safe_load(paths.config_file("perception.yaml").read_text())
    section = raw["/**/detector"]["ros__parameters"]
    assert file_section_problems(PARAMS, section) == []
    DetectorNodeConfig.from_params({spec.name: spec.default for spec in PARAMS} | section)
