"""Feature layout: names, units, validation against datasets (no torch)."""

import numpy as np
import pytest
from armstack_learning.features import (
    JOINT_NAMES,
    ActionSpaceConfig,
    FeatureLayout,
    ObjectSlotsConfig,
    canonicalize_quaternions,
    hold_last_seen,
    layout_for_dataset,
)
from armstack_recorder.metadata import read_info


def test_object_slot_names_are_class_major():
    slots = ObjectSlotsConfig(classes=("red", "blue"), fields=("x", "present"))
    assert slots.names == ["red_x", "red_present", "blue_x", "blue_present"]
    assert (slots.num_slots, slots.slot_dim) == (2, 2)
    assert [slots.unit(n) for n in slots.names] == ["m", "flag", "m", "flag"]


def test_default_layout_is_joint_actions_with_three_cubes():
    layout = FeatureLayout()
    assert layout.state_dim == 7 and layout.env_dim == 12 and layout.action.dim == 7
    assert layout.action.topic == "joint_command"
    assert layout.input_keys == ["observation.state", "observation.environment_state"]
    assert [layout.action.unit(n) for n in JOINT_NAMES] == ["rad"] * 6 + ["m"]


@pytest.mark.parametrize("build, field", [
    (lambda: ObjectSlotsConfig(classes=()), "ObjectSlotsConfig.classes"),
    (lambda: ObjectSlotsConfig(fields=("x", "x")), "ObjectSlotsConfig.fields"),
    (lambda: ActionSpaceConfig(kind="torque"), "ActionSpaceConfig.kind"),
    (lambda: ActionSpaceConfig(kind="ee", names=("x", "y", "z", "gripper")), "ActionSpaceConfig.names"),
    (lambda: FeatureLayout(state_names=()), "FeatureLayout.state_names"),
    (lambda: FeatureLayout(cameras=("top",)), "FeatureLayout.image_size"),
    (lambda: FeatureLayout(objects=None), "FeatureLayout needs objects"),
    (lambda: ObjectSlotsConfig(hold=-0.1), "ObjectSlotsConfig.hold"),
    (lambda: ObjectSlotsConfig(hold=60.0), "ObjectSlotsConfig.hold"),
    (lambda: ObjectSlotsConfig(fields=("x", "y"), hold=0.5), "ObjectSlotsConfig.hold needs"),
])
def test_validation_names_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_ee_action_space():
    act = ActionSpaceConfig(kind="ee", names=("x", "y", "z", "qx", "qy", "qz", "qw", "gripper"))
    assert act.topic == "ee_command"
    assert act.quaternion_index == [3, 4, 5, 6]
    assert [act.unit(n) for n in act.names] == ["m"] * 3 + ["1"] * 4 + ["m"]


def test_canonicalize_quaternions_puts_qw_non_negative():
    a = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.6, -0.8, 0.02],
                  [0.1, 0.2, 0.3, 0.0, 0.0, 0.6, 0.8, 0.02]], np.float32)
    out = canonicalize_quaternions(a, [3, 4, 5, 6])
    assert out[0, 3:7].tolist() == pytest.approx([0.0, 0.0, -0.6, 0.8])
    assert out[1].tolist() == pytest.approx(a[1].tolist())
    assert out[0, [0, 1, 2, 7]].tolist() == pytest.approx(a[0, [0, 1, 2, 7]].tolist())
    assert a[0, 6] == pytest.approx(-0.8)  # input untouched


def test_layout_round_trips_through_dict():
    layout = FeatureLayout(cameras=("top",), image_size=(64, 96),
                           action=ActionSpaceConfig(kind="ee", names=("x", "y", "z", "qx", "qy",
                                                                      "qz", "qw", "gripper")))
    assert FeatureLayout.from_dict(layout.to_dict()) == layout
    held = FeatureLayout(objects=ObjectSlotsConfig(hold=0.5))
    assert FeatureLayout.from_dict(held.to_dict()).objects.hold == 0.5
    older = held.to_dict()
    del older["objects"]["hold"]  # checkpoints from before the object hold
    assert FeatureLayout.from_dict(older).objects.hold == 0.0


def _red_seen(seen: list[int]) -> np.ndarray:
    """(T, 8) environment states of red (x = frame index + 1) and an always-absent blue."""
    env = np.zeros((len(seen), 8), np.float32)
    for t, s in enumerate(seen):
        if s:
            env[t, :4] = [t + 1, 0.5, 0.02, 1.0]
    return env


def test_hold_keeps_the_last_detection_for_the_hold_within_an_episode():
    objects = ObjectSlotsConfig(classes=("red", "blue"), hold=0.05)
    env = _red_seen([1, 0, 0, 0, 1, 0, 1, 0])
    episode = np.array([0] * 6 + [1] * 2)
    timestamp = np.r_[np.arange(6), np.arange(2)] * 0.02  # per episode, as LeRobot stores it
    out = hold_last_seen(env, episode, timestamp, objects)
    # frames 1-2 hold frame 0 (0.02 and 0.04 s later); frame 3 is 0.06 s after it
    assert out[:, 0].tolist() == [1, 1, 1, 0, 5, 5, 7, 7]
    assert out[:, 3].tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(out[:, 4:], 0.0)  # never seen: nothing to hold
    assert env[1, 3] == 0.0  # the input is untouched
    # a new episode does not hold the last one's detections
    assert hold_last_seen(_red_seen([1, 0]), np.array([0, 1]), np.zeros(2), objects)[1, 3] == 0
    np.testing.assert_array_equal(
        hold_last_seen(env, episode, timestamp, ObjectSlotsConfig(("red", "blue"))), env)


def test_training_holds_objects_exactly_as_the_runtime_does():
    """The same detections through hold_last_seen (the training data) and through the policy
    node's ObservationAssembler give the same environment states."""
    from armstack_policy.observation import (ENV_STATE_KEY, DetectedObject, ObservationAssembler,
                                             ObservationConfig)

    rng = np.random.default_rng(3)
    classes, hold, dt = ("red_cube", "green_cube"), 0.1, 0.02
    seen = rng.random((200, 2)) < 0.6
    positions = rng.uniform(-0.3, 0.3, (200, 2, 3)).astype(np.float32)
    env = np.zeros((200, 8), np.float32)
    asm = ObservationAssembler(ObservationConfig(
        state_names=("waist",), object_classes=classes, object_hold=hold, spacing=dt))
    online = []
    for t in range(200):
        stamp = 100.0 + t * dt
        asm.add_joint_state(stamp, ("waist",), [0.0])
        asm.add_objects(stamp, [DetectedObject(c, 0.9, tuple(positions[t, i]))
                                for i, c in enumerate(classes) if seen[t, i]])
        online.append(asm.assemble(stamp).features[ENV_STATE_KEY][0])
        for i in range(2):
            if seen[t, i]:
                env[t, 4 * i:4 * i + 4] = [*positions[t, i], 1.0]
    offline = hold_last_seen(env, np.zeros(200, int), np.arange(200) * dt,
                             ObjectSlotsConfig(classes, hold=hold))
    np.testing.assert_array_equal(online, offline)
    assert (offline[:, 3] > env[:, 3]).any() and (offline[:, 3] < 1).any()  # held and expired


def test_layout_for_dataset_and_mismatches(dataset_root):
    features = read_info(dataset_root)["features"]
    layout = layout_for_dataset(features, ObjectSlotsConfig(), "joint")
    assert layout.state_names == JOINT_NAMES and layout.action.names == JOINT_NAMES
    with pytest.raises(ValueError, match="observation.environment_state"):
        layout_for_dataset(features, ObjectSlotsConfig(classes=("red_cube", "green_cube")), "joint")
    with pytest.raises(ValueError, match="observation.images.top"):
        layout_for_dataset(features, ObjectSlotsConfig(), "joint", cameras=("top",))
    with pytest.raises(ValueError, match="ActionSpaceConfig.names"):
        layout_for_dataset(features, ObjectSlotsConfig(), "ee")
    renamed = dict(features)
    renamed["observation.state"] = {**features["observation.state"],
                                    "names": [f"j{i}" for i in range(7)]}
    with pytest.raises(ValueError, match="observation.state"):
        layout.check_dataset(renamed)
