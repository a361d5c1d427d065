"""Recorder parameters -> RecorderConfig: features, streams, and errors naming the key."""

from __future__ import annotations

import pytest
import yaml
from armstack_common.paths import config_file
from armstack_recorder.node_config import default_values, recorder_config


def test_defaults_give_the_documented_features_and_streams(tmp_path):
    cfg = recorder_config(default_values(dataset_root=str(tmp_path / "ds")))
    features = cfg.writer.features.to_features()
    assert features["observation.state"]["names"][-1] == "left_finger"
    assert features["action"]["shape"] == [7]
    assert features["observation.environment_state"]["shape"] == [12]
    assert features["observation.images.color"]["shape"] == [480, 640, 3]
    assert [s.name for s in cfg.sampler.streams] == ["state", "action", "objects", "image.color"]
    assert cfg.camera_topics == {"color": "camera/color/image_raw"}
    assert cfg.session.cameras == ("color",) and cfg.session.has_objects


def test_ee_actions_no_objects_no_images(tmp_path):
    cfg = recorder_config(default_values(dataset_root=str(tmp_path), action_source="ee_command",
                                         objects_topic="", record_images=False,
                                         max_age_action=0.0))
    features = cfg.writer.features.to_features()
    assert features["action"]["names"] == ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"]
    assert "observation.environment_state" not in features
    assert [s.name for s in cfg.sampler.streams] == ["state", "action"]
    assert cfg.sampler.streams[1].max_age_s == 0.0 and cfg.object_slots is None


def test_dataset_root_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = recorder_config(default_values(dataset_root="~/demos"))
    assert cfg.writer.root == tmp_path / "demos"


@pytest.mark.parametrize("overrides, match", [
    ({"dataset_root": ""}, "dataset_root"),
    ({"camera_topics": ["a", "b"]}, "camera_topics"),
    ({"image_size": [480]}, "image_size"),
    ({"image_size": [481, 640]}, "height"),
    ({"joint_names": ["waist", "waist"]}, "joint_names"),
    ({"object_classes": ["red_cube", ""]}, "object_classes"),
    ({"video_codec": "mpeg4"}, "codec"),
    ({"on_timing_error": "ignore"}, "on_timing_error"),
    ({"follow_teleop": True, "episode_topic": ""}, "episode_topic"),
])
def test_bad_values_are_refused_naming_the_key(overrides, match, tmp_path):
    values = default_values(dataset_root=str(tmp_path))
    values.update(overrides)
    with pytest.raises(ValueError, match=match):
        recorder_config(values)


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="camera_size"):
        default_values(camera_size=[1, 2])


def test_the_shipped_parameter_file_is_valid(tmp_path):
    raw = yaml.safe_load(config_file("recorder.yaml").read_text())
    params = raw["/**/recorder"]["ros__parameters"]
    values = default_values(**params)
    values["dataset_root"] = str(tmp_path / "ds")  # not the user's home in a test
    cfg = recorder_config(values)
    assert cfg.sampler.fps == 50 and cfg.session.on_timing_error == "discard"
