"""Messages to feature vectors: joint order, ee actions, object slots, image encodings."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.robot_names import JOINT_NAMES
from armstack_recorder.observation import (
    Detection,
    ObjectSlots,
    ObservationError,
    detections_of,
    ee_action,
    image_rgb,
    joint_vector,
)


def test_joint_vector_follows_the_fixed_order_and_ignores_extra_joints():
    names = ["right_finger", *reversed(JOINT_NAMES)]
    positions = [0.5] + [float(i) for i in reversed(range(7))]
    out = joint_vector(names, positions, JOINT_NAMES)
    assert out.dtype == np.float32 and out.tolist() == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("names, positions, match", [
    (list(JOINT_NAMES[:6]), [0.0] * 6, "left_finger"),
    (list(JOINT_NAMES), [0.0] * 6, "7 names but 6 positions"),
    (list(JOINT_NAMES), [0.0] * 6 + [float("nan")], "non-finite"),
])
def test_joint_vector_refuses_incomplete_messages(names, positions, match):
    with pytest.raises(ObservationError, match=match):
        joint_vector(names, positions, JOINT_NAMES)


def test_ee_action_normalizes_the_quaternion_into_the_qw_positive_hemisphere():
    out = ee_action((0.3, -0.1, 0.2), (0.0, 0.0, 2.0, -2.0), 0.015, "base_link", "base_link")
    s = np.sqrt(0.5)
    np.testing.assert_allclose(out, [0.3, -0.1, 0.2, 0.0, 0.0, -s, s, 0.015], rtol=1e-6)


@pytest.mark.parametrize("quaternion, frame, match", [
    ((0.0, 0.0, 0.0, 1.0), "world", "frame 'world'"),
    ((0.0, 0.0, 0.0, 0.0), "base_link", "not a rotation"),
])
def test_ee_action_refuses_other_frames_and_degenerate_rotations(quaternion, frame, match):
    with pytest.raises(ObservationError, match=match):
        ee_action((0.0, 0.0, 0.0), quaternion, 0.0, frame, "base_link")


def test_object_slots_fixed_order_absent_classes_are_zero_with_flag_zero():
    slots = ObjectSlots()
    assert slots.names[:4] == ["red_cube_x", "red_cube_y", "red_cube_z", "red_cube_present"]
    assert slots.names[-1] == "blue_cube_present" and len(slots.names) == 12
    dets = [Detection("blue_cube", 0.9, (0.3, 0.1, 0.02)),
            Detection("red_cube", 0.4, (0.2, -0.1, 0.02)),
            Detection("red_cube", 0.8, (0.25, -0.12, 0.021)),  # the better red one wins
            Detection("mug", 0.99, (1.0, 1.0, 1.0))]  # not a slot: ignored
    out = slots.vector(dets, "base_link", "base_link").reshape(3, 4)
    np.testing.assert_allclose(out[0], [0.25, -0.12, 0.021, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0, 0, 0, 0])  # green: not seen in this frame
    np.testing.assert_allclose(out[2], [0.3, 0.1, 0.02, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(slots.vector([], "base_link", "base_link"), np.zeros(12))


def test_object_slots_refuse_another_frame_and_bad_class_lists():
    with pytest.raises(ObservationError, match="camera_link"):
        ObjectSlots().vector([], "camera_link", "base_link")
    with pytest.raises(ValueError, match="duplicates"):
        ObjectSlots(("red_cube", "red_cube"))


def test_detections_of_a_detection3d_array():
    msgs = pytest.importorskip("vision_msgs.msg")
    array = msgs.Detection3DArray()
    for label, score, x in (("red_cube", 0.3, 0.1), ("green_cube", 0.9, 0.2)):
        det = msgs.Detection3D()
        for cls, sc in ((label, score), ("other", score / 2)):
            hyp = msgs.ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = cls, sc
            det.results.append(hyp)
        det.bbox.center.position.x, det.bbox.center.position.z = x, 0.02
        array.detections.append(det)
    array.detections.append(msgs.Detection3D())  # no hypothesis: says nothing
    assert detections_of(array) == [Detection("red_cube", pytest.approx(0.3), (0.1, 0.0, 0.02)),
                                    Detection("green_cube", pytest.approx(0.9), (0.2, 0.0, 0.02))]


def _pixels(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # (H, W, 3) RGB


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_image_encodings_become_rgb_with_row_padding(encoding):
    rgb = _pixels(6, 10)
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}.get(encoding)
    if channels is None:
        alpha = np.full((6, 10, 1), 7, np.uint8)
        channels = np.concatenate([rgb if encoding == "rgba8" else rgb[..., ::-1], alpha], axis=2)
    step = channels.shape[1] * channels.shape[2] + 6  # padded rows, as some drivers send
    data = np.zeros((6, step), np.uint8)
    data[:, : channels.shape[1] * channels.shape[2]] = channels.reshape(6, -1)
    buf = bytearray(data.tobytes())
    out = image_rgb(encoding, 6, 10, step, buf, (6, 10))
    np.testing.assert_array_equal(out, rgb)
    buf[:] = bytes(len(buf))  # the driver reuses its buffer: the result is a copy
    np.testing.assert_array_equal(out, rgb)


def test_unpadded_rgb8_can_be_taken_without_a_copy():
    rgb = _pixels(4, 6)
    buf = bytearray(rgb.tobytes())
    view = image_rgb("rgb8", 4, 6, 18, buf, (4, 6), copy=False)
    np.testing.assert_array_equal(view, rgb)
    assert np.shares_memory(view, np.frombuffer(buf, np.uint8))
    padded = bytearray(np.pad(rgb.reshape(4, 18), ((0, 0), (0, 2))).tobytes())
    compact = image_rgb("rgb8", 4, 6, 20, padded, (4, 6), copy=False)
    assert compact.flags.c_contiguous and not np.shares_memory(compact, np.frombuffer(padded,
                                                                                      np.uint8))


def test_mono8_is_replicated_to_three_channels():
    gray = _pixels(4, 6)[..., 0]
    out = image_rgb("mono8", 4, 6, 6, gray.tobytes(), (4, 6))
    assert out.shape == (4, 6, 3) and (out == gray[..., None]).all()


@pytest.mark.parametrize("args, match", [
    (("16UC1", 4, 6, 12, bytes(48)), "16UC1"),
    (("rgb8", 4, 8, 24, bytes(96)), "4x8"),
    (("rgb8", 4, 6, 18, bytes(50)), "too short"),
])
def test_images_the_dataset_cannot_hold_are_refused(args, match):
    with pytest.raises(ObservationError, match=match):
        image_rgb(*args, (4, 6))
