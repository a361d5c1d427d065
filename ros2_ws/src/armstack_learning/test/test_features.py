"""Feature layout: names, units, validation against datasets (no torch)."""

import numpy as np
import pytest
from armstack_learning.features import (
    JOINT_NAMES,
    ActionSpaceConfig,
    FeatureLayout,
    ObjectSlotsConfig,
    canonicalize_quaternions,
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
