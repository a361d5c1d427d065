"""Observation assembly from plain message values: layout, history timing, staleness."""

import threading

import numpy as np
import pytest
from armstack_policy.observation import (ENV_STATE_KEY, IMAGE_PREFIX, STATE_KEY, DetectedObject,
                                         ObservationAssembler, ObservationConfig, Status,
                                         image_feature, object_slots)

NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger")
CLASSES = ("red", "green", "blue")
FIELDS = ("x", "y", "z", "present")
T0 = 1000.0


def config(**overrides) -> ObservationConfig:
    fields = {"state_names": NAMES, "object_classes": CLASSES, "spacing": 0.02,
              "max_observation_age": 0.2, "max_source_skew": 0.05} | overrides
    return ObservationConfig(**fields)


def state_at(t: float) -> list[float]:
    """Joint positions that encode their stamp: joint j is t - T0 + j/10."""
    return [t - T0 + j / 10 for j in range(len(NAMES))]


def feed_states(asm: ObservationAssembler, start: float, stop: float, period: float = 0.01,
                order: tuple[str, ...] = NAMES) -> None:
    for t in np.arange(start, stop + 1e-9, period):
        positions = dict(zip(NAMES, state_at(t), strict=True))
        assert asm.add_joint_state(t, order, [positions[n] for n in order])


def red_at(x: float) -> list[DetectedObject]:
    return [DetectedObject("red_cube", 0.9, (x, 0.1, 0.02))]


# ---------------------------------------------------------------- layout pieces


def test_object_slots_pick_the_best_detection_per_class_and_zero_absent_ones():
    objects = [DetectedObject("red_cube", 0.4, (1.0, 1.0, 1.0)),
               DetectedObject("red_cube", 0.8, (0.3, -0.1, 0.02)),
               DetectedObject("blue", 0.5, (0.2, 0.2, 0.03)),
               DetectedObject("reddish_cube", 0.99, (9.0, 9.0, 9.0)),  # not class "red"
               DetectedObject("bin", 0.9, (0.0, 0.4, 0.0))]
    slots = object_slots(objects, CLASSES, FIELDS).reshape(3, 4)
    np.testing.assert_allclose(slots[0], [0.3, -0.1, 0.02, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(slots[1], [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(slots[2], [0.2, 0.2, 0.03, 1.0], rtol=1e-6)


def test_object_slots_follow_the_cards_field_order():
    slots = object_slots([DetectedObject("green", 0.7, (1.0, 2.0, 3.0))], ("green",),
                         ("present", "score", "z"))
    np.testing.assert_allclose(slots, [1.0, 0.7, 3.0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(8, 8), (16, 12), (4, 6)])
def test_image_feature_is_channels_first_unit_range_at_the_cards_size(shape):
    rgb = np.zeros((*shape, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[..., 2] = 51
    feature = image_feature(rgb, (8, 8))
    assert feature.shape == (3, 8, 8) and feature.dtype == np.float32
    np.testing.assert_allclose(feature[:, 0, 0], [1.0, 0.0, 0.2], rtol=1e-6)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"state_names": ()}, "state_names"),
    ({"object_fields": ("x", "colour")}, "object_fields"),
    ({"cameras": ("front",)}, "image_size"),
    ({"n_obs_steps": 0}, "n_obs_steps"),
    ({"spacing": 0.0}, "spacing"),
    ({"max_observation_age": float("nan")}, "max_observation_age"),
    ({"history_size": 1}, "history_size"),
    ({"object_hold": -1.0}, "object_hold"),
    ({"object_hold": 0.5, "object_fields": ("x", "y", "z")}, "object_hold"),
])
def test_config_names_the_bad_field(overrides, field):
    with pytest.raises(ValueError, match=f"ObservationConfig.{field}"):
        config(**overrides)


# ---------------------------------------------------------------- assembly


def _red_slot(asm: ObservationAssembler, now: float) -> list[float]:
    return asm.assemble(now).features[ENV_STATE_KEY][0, :4].tolist()


def test_object_hold_keeps_a_hidden_class_where_it_was_last_seen():
    asm = ObservationAssembler(config(object_hold=0.1))
    feed_states(asm, T0, T0 + 0.5)
    asm.add_objects(T0 + 0.2, red_at(0.3))
    asm.add_objects(T0 + 0.25, [])  # red hidden: held, present
    assert _red_slot(asm, T0 + 0.25) == pytest.approx([0.3, 0.1, 0.02, 1.0])
    asm.add_objects(T0 + 0.19, red_at(0.9))  # a late message does not move the memory back
    asm.add_objects(T0 + 0.3, [])
    assert _red_slot(asm, T0 + 0.3) == pytest.approx([0.3, 0.1, 0.02, 1.0])
    asm.add_objects(T0 + 0.35, [])  # 0.15 s after the detection: no longer held
    assert _red_slot(asm, T0 + 0.35) == [0.0, 0.0, 0.0, 0.0]
    asm.add_objects(T0 + 0.4, red_at(0.25))
    asm.clear()  # a new episode forgets the old one's objects
    feed_states(asm, T0 + 0.41, T0 + 0.45)
    asm.add_objects(T0 + 0.45, [])
    assert _red_slot(asm, T0 + 0.45) == [0.0, 0.0, 0.0, 0.0]


def test_without_object_hold_a_hidden_class_is_not_seen():
    asm = ObservationAssembler(config())
    feed_states(asm, T0, T0 + 0.3)
    asm.add_objects(T0 + 0.2, red_at(0.3))
    asm.add_objects(T0 + 0.22, [])
    assert _red_slot(asm, T0 + 0.22) == [0.0, 0.0, 0.0, 0.0]


def test_state_follows_the_card_order_whatever_the_message_order():
    asm = ObservationAssembler(config(object_classes=()))
    shuffled = (*NAMES[::-1], "right_finger")
    positions = dict(zip(NAMES, state_at(T0 + 0.5), strict=True), right_finger=-1.0)
    asm.add_joint_state(T0 + 0.5, shuffled, [positions[n] for n in shuffled])
    got = asm.assemble(T0 + 0.51)
    assert got.ready and got.stamp == T0 + 0.5
    np.testing.assert_allclose(got.features[STATE_KEY], [state_at(T0 + 0.5)], rtol=1e-6)


def test_joint_states_missing_a_name_or_finite_value_are_refused():
    asm = ObservationAssembler(config(object_classes=()))
    assert not asm.add_joint_state(T0, NAMES[:-1], [0.0] * 6)
    assert not asm.add_joint_state(T0, NAMES, [0.0] * 6 + [float("nan")])
    assert asm.rejected_joint_states == 2
    assert asm.assemble(T0).status is Status.MISSING


def test_observation_takes_the_camera_stamp_and_the_state_at_that_time():
    asm = ObservationAssembler(config())
    feed_states(asm, T0, T0 + 0.1)  # joint_states run ahead of the camera pipeline
    asm.add_objects(T0 + 0.033, red_at(0.25))
    got = asm.assemble(T0 + 0.1)
    assert got.ready and got.stamp == T0 + 0.033
    np.testing.assert_allclose(got.features[STATE_KEY], [state_at(T0 + 0.03)], atol=1e-6)
    np.testing.assert_allclose(got.features[ENV_STATE_KEY][0, :4], [0.25, 0.1, 0.02, 1.0],
                               rtol=1e-6)
    assert got.features[ENV_STATE_KEY].shape == (1, 12)


def test_history_frames_are_one_dataset_period_apart_oldest_first():
    asm = ObservationAssembler(config(n_obs_steps=3))
    feed_states(asm, T0, T0 + 0.2)
    for i, t in enumerate([T0 + 0.1, T0 + 0.133, T0 + 0.166]):
        asm.add_objects(t, red_at(float(i)))
    got = asm.assemble(T0 + 0.2)
    # Frames at t_obs - 0.04, - 0.02, 0: the newest message at or before each.
    np.testing.assert_allclose(got.features[STATE_KEY][:, 0], [0.12, 0.14, 0.16], atol=1e-6)
    np.testing.assert_allclose(got.features[ENV_STATE_KEY][:, 0], [0.0, 1.0, 2.0])


def test_history_before_the_first_message_repeats_it_as_training_does():
    asm = ObservationAssembler(config(n_obs_steps=2))
    feed_states(asm, T0, T0 + 0.05)
    asm.add_objects(T0 + 0.04, red_at(0.5))
    got = asm.assemble(T0 + 0.05)
    assert got.ready
    np.testing.assert_allclose(got.features[ENV_STATE_KEY][:, 0], [0.5, 0.5])
    np.testing.assert_allclose(got.features[STATE_KEY][:, 0], [0.02, 0.04], atol=1e-6)


def test_images_are_sampled_with_the_other_sources_and_converted_once_each():
    asm = ObservationAssembler(config(object_classes=(), cameras=("front",), image_size=(4, 4),
                                      n_obs_steps=2))
    feed_states(asm, T0, T0 + 0.1)
    for value, t in [(10, T0 + 0.05), (200, T0 + 0.08)]:
        asm.add_image("front", t, np.full((8, 8, 3), value, np.uint8))
    got = asm.assemble(T0 + 0.1)
    assert got.stamp == T0 + 0.08
    image = got.features[IMAGE_PREFIX + "front"]
    assert image.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(image[:, 0, 0, 0], [10 / 255, 200 / 255], rtol=1e-6)
    with pytest.raises(KeyError, match="side"):
        asm.add_image("side", T0, np.zeros((8, 8, 3), np.uint8))


def test_two_camera_sources_use_the_older_newest_stamp():
    asm = ObservationAssembler(config(cameras=("front",), image_size=(4, 4)))
    feed_states(asm, T0, T0 + 0.1)
    asm.add_objects(T0 + 0.05, red_at(0.1))
    asm.add_image("front", T0 + 0.083, np.zeros((4, 4, 3), np.uint8))
    assert asm.newest_stamp() == T0 + 0.05
    assert asm.assemble(T0 + 0.1).stamp == T0 + 0.05


@pytest.mark.parametrize(("now", "status", "reason"), [
    (T0 + 0.25, Status.READY, ""),
    (T0 + 0.30, Status.READY, ""),  # age 0.2 s: at the limit
    (T0 + 0.31, Status.STALE, "0.210 s old"),
    (T0 - 0.11, Status.STALE, "ahead of the clock"),
])
def test_observation_age_limit(now, status, reason):
    asm = ObservationAssembler(config())
    feed_states(asm, T0, T0 + 0.1)
    asm.add_objects(T0 + 0.1, red_at(0.2))
    got = asm.assemble(now)
    assert got.status is status and reason in got.reason
    assert got.stamp == T0 + 0.1


@pytest.mark.parametrize(("state_until", "status"), [
    (T0 + 0.10, Status.READY),
    (T0 + 0.06, Status.READY),  # 40 ms before the frame: within max_source_skew 50 ms
    (T0 + 0.04, Status.STALE),  # joint_states stopped 60 ms before the frame
])
def test_joint_states_that_stopped_make_the_observation_stale(state_until, status):
    asm = ObservationAssembler(config())
    feed_states(asm, T0, state_until)
    asm.add_objects(T0 + 0.1, red_at(0.2))
    got = asm.assemble(T0 + 0.12)
    assert got.status is status
    if status is Status.STALE:
        assert "joint_states" in got.reason and "max_source_skew" in got.reason


def test_a_newest_frame_without_its_own_state_is_stale():
    asm = ObservationAssembler(config())
    asm.add_objects(T0, red_at(0.2))
    feed_states(asm, T0 + 0.08, T0 + 0.1)  # states began 80 ms after the camera frame
    got = asm.assemble(T0 + 0.1)
    assert got.status is Status.STALE and "after it" in got.reason


def test_missing_source_and_clear():
    asm = ObservationAssembler(config())
    asm.add_objects(T0, red_at(0.2))
    got = asm.assemble(T0)
    assert got.status is Status.MISSING and "joint_states" in got.reason and got.stamp == T0
    feed_states(asm, T0 - 0.02, T0)
    assert asm.assemble(T0).ready
    asm.clear()
    assert asm.newest_stamp() is None and asm.assemble(T0).status is Status.MISSING


def test_late_messages_are_kept_in_stamp_order_and_history_is_bounded():
    asm = ObservationAssembler(config(history_size=4))
    feed_states(asm, T0, T0 + 0.1)
    asm.add_objects(T0 + 0.1, red_at(2.0))
    asm.add_objects(T0 + 0.05, red_at(1.0))  # arrives late
    assert asm.assemble(T0 + 0.1).features[ENV_STATE_KEY][0, 0] == 2.0
    for i in range(10):
        asm.add_objects(T0 + 0.2 + i * 0.01, red_at(3.0))
    assert len(asm._tracks["objects"].stamps) == 4


def test_wait_for_newer_wakes_on_a_new_camera_frame_only():
    asm = ObservationAssembler(config())
    feed_states(asm, T0, T0 + 0.1)
    assert not asm.wait_for_newer(None, timeout=0.01)  # joint_states alone are no frame
    asm.add_objects(T0 + 0.1, red_at(0.2))
    assert asm.wait_for_newer(None, timeout=0.01)
    assert not asm.wait_for_newer(T0 + 0.1, timeout=0.01)
    timer = threading.Timer(0.05, asm.add_objects, (T0 + 0.133, red_at(0.3)))
    timer.start()
    assert asm.wait_for_newer(T0 + 0.1, timeout=2.0)
    timer.join()


def test_state_only_policies_are_clocked_by_joint_states():
    asm = ObservationAssembler(config(object_classes=()))
    feed_states(asm, T0, T0 + 0.1)
    assert asm.wait_for_newer(None, timeout=0.01)
    assert asm.assemble(T0 + 0.1).stamp == pytest.approx(T0 + 0.1)
