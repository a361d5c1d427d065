"""Parameters of the recorder node: declared once here, validated through RecorderConfig
(no ROS; the node hands these specs to armstack_common.params.NodeParameters)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from armstack_common.params import ParamSpec
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES

from armstack_recorder.lerobot_dataset import CameraSpec, FeatureSpec, WriterConfig
from armstack_recorder.observation import OBJECT_CLASSES, ObjectSlots
from armstack_recorder.sampler import SamplerConfig, StreamConfig
from armstack_recorder.session import (
    ACTION_STREAM,
    OBJECTS_STREAM,
    STATE_STREAM,
    TIMING_POLICIES,
    SessionConfig,
    image_stream,
)
from armstack_recorder.video import CODECS, VideoConfig

ACTION_SOURCES = ("joint_command", "ee_command")
ACTION_CLOCKS = ("receive", "stamp")
RELIABILITIES = ("best_effort", "reliable")

RECORDER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("dataset_root", "", "LeRobot dataset directory; an existing one is resumed "
              "(appended to) if its schema matches (~ is expanded)", read_only=True),
    ParamSpec("robot_type", "armstack_6dof", "robot_type written to meta/info.json",
              read_only=True),
    ParamSpec("fps", 30, "dataset clock: samples per second", "Hz", (1, 200), read_only=True),
    ParamSpec("task", "", "task of episodes started with recorder/start (teleop's episodes "
              "carry their own)"),
    ParamSpec("follow_teleop", True, "start/save/discard episodes as teleop's episode topic "
              "says", read_only=True),
    ParamSpec("episode_topic", "teleop/episode", "teleop's latched EpisodeStatus topic",
              read_only=True),
    ParamSpec("joint_names", list(JOINT_NAMES), "joints of observation.state (and of the "
              "action with joint_command), in order", read_only=True),
    ParamSpec("action_source", "joint_command", "topic recorded as the action: joint_command "
              "(7 position targets) or ee_command (x y z qx qy qz qw gripper)",
              choices=ACTION_SOURCES, read_only=True),
    ParamSpec("action_clock", "receive", "time of a command on the dataset clock: receive (when "
              "the recorder got it, i.e. when it was sent) or stamp (its header stamp). "
              "armstack's commands carry the stamp of the observation they answer (for the "
              "camera-to-bus latency), 31 ms median and up to 0.1 s before they are sent "
              "(measured here): sampled by stamp, each frame's action is a later command, "
              "and a policy learns to run ahead of its own state", choices=ACTION_CLOCKS,
              read_only=True),
    ParamSpec("base_frame", "base_link", "frame ee_command and objects must be expressed in",
              read_only=True),
    ParamSpec("objects_topic", "objects", "localized objects (Detection3DArray); empty: no "
              "observation.environment_state", read_only=True),
    ParamSpec("object_classes", list(OBJECT_CLASSES), "class_ids of the environment state "
              "slots, in order (x, y, z, present each)", read_only=True),
    ParamSpec("record_images", True, "record the camera streams as videos", read_only=True),
    ParamSpec("camera_names", ["color"], "camera names (feature observation.images.<name>)",
              read_only=True),
    ParamSpec("camera_topics", ["camera/color/image_raw"], "image topic of each camera, in "
              "camera_names order", read_only=True),
    ParamSpec("image_size", [480, 640], "height, width of every camera's images; other sizes "
              "are refused, not resized", "px", read_only=True),
    ParamSpec("image_reliability", "reliable", "QoS of the image subscriptions: reliable "
              "(between processes a best-effort reader of 0.9 MB frames lost 10-15 % of them "
              "on a busy 2-core machine); best_effort for best-effort camera drivers",
              choices=RELIABILITIES,
              read_only=True),
    ParamSpec("max_age_state", 0.1, "oldest joint_states a sample may use", "s", (0.0, 10.0),
              read_only=True),
    ParamSpec("max_age_action", 0.1, "oldest command a sample may use; 0: no limit (the last "
              "position target holds)", "s", (0.0, 10.0), read_only=True),
    ParamSpec("max_age_objects", 0.2, "oldest objects message a sample may use", "s",
              (0.0, 10.0), read_only=True),
    ParamSpec("max_age_image", 0.1, "oldest camera image a sample may use", "s", (0.0, 10.0),
              read_only=True),
    ParamSpec("sample_delay", 0.3, "a sample at time t is decided at t + sample_delay, so "
              "messages stamped before t that arrive late still count; must exceed the "
              "slowest stream's latency (perception's objects)", "s", (0.0, 5.0),
              read_only=True),
    ParamSpec("max_lag", 0.5, "a sampling loop further behind than this drops samples as "
              "overrun (bounds the buffers)", "s", (0.05, 30.0), read_only=True),
    ParamSpec("max_timing_error", 0.1, "largest shift of stored frames from their sample time "
              "(dropped samples / fps) an episode may have", "s", (0.0, 10.0), read_only=True),
    ParamSpec("on_timing_error", "discard", "an episode over max_timing_error is discarded or "
              "kept (flagged degraded in its report)", choices=TIMING_POLICIES, read_only=True),
    ParamSpec("writer_queue_frames", 150, "frames that may wait for the writer (e.g. during "
              "the previous episode's save) before samples are dropped", range=(1, 10000),
              read_only=True),
    ParamSpec("video_codec", "libsvtav1", "MP4 video codec", choices=CODECS, read_only=True),
    ParamSpec("video_crf", 30, "video constant rate factor (lower: better, bigger)",
              range=(0, 63), read_only=True),
    ParamSpec("video_gop", 2, "keyframe interval in frames (LeRobot's default 2)",
              range=(1, 300), read_only=True),
    ParamSpec("video_preset", "", "encoder preset; empty: the codec's fastest / default",
              read_only=True),
    ParamSpec("niceness", 10, "scheduling niceness added to the dataset writer thread (disk and "
              "the video encoders it starts): on a busy machine the control nodes get the CPU "
              "before it, and a backlog shows in the reports (writer:backlog). The receiving "
              "and sampling threads keep their priority: commands are timed by their receipt "
              "(action_clock receive), which a starved receiver would make late "
              "(0: unchanged)", range=(0, 19), read_only=True),
    ParamSpec("save_timeout", 60.0, "longest a recorder/save call waits for the save", "s",
              (1.0, 3600.0), read_only=True),
    ParamSpec("diagnostics_period", 1.0, "period of the diagnostics status", "s", (0.1, 60.0),
              read_only=True),
)


@dataclass(frozen=True)
class RecorderConfig:
    writer: WriterConfig
    sampler: SamplerConfig
    session: SessionConfig
    joint_names: tuple[str, ...]
    action_source: str
    base_frame: str
    objects_topic: str  # "" when not recorded
    object_slots: ObjectSlots | None
    camera_topics: dict[str, str]  # camera name -> topic
    image_reliability: str
    follow_teleop: bool
    episode_topic: str
    writer_queue_frames: int
    save_timeout_s: float
    diagnostics_period_s: float
    niceness: int = 0
    action_clock: str = "receive"  # one of ACTION_CLOCKS

    def __post_init__(self) -> None:
        if self.action_clock not in ACTION_CLOCKS:
            raise ValueError(f"RecorderConfig.action_clock must be one of {ACTION_CLOCKS}, "
                             f"got {self.action_clock!r}")
        if self.action_source not in ACTION_SOURCES:
            raise ValueError(f"RecorderConfig.action_source must be one of {ACTION_SOURCES}, "
                             f"got {self.action_source!r}")
        if self.follow_teleop and not self.episode_topic:
            raise ValueError("RecorderConfig.episode_topic must be set when follow_teleop is on")


def _names(values: dict[str, Any], key: str) -> tuple[str, ...]:
    names = tuple(str(v) for v in values[key])
    if not names or not all(names) or len(set(names)) != len(names):
        raise ValueError(f"{key} must be distinct non-empty names, got {list(names)}")
    return names


def _cameras(values: dict[str, Any]) -> tuple[list[CameraSpec], dict[str, str]]:
    if not values["record_images"]:
        return [], {}
    names, topics = _names(values, "camera_names"), tuple(values["camera_topics"])
    if len(topics) != len(names) or not all(topics):
        raise ValueError(f"camera_topics must name one topic per camera {list(names)}, "
                         f"got {list(topics)}")
    size = list(values["image_size"])
    if len(size) != 2:
        raise ValueError(f"image_size must be [height, width], got {size}")
    return ([CameraSpec(n, int(size[0]), int(size[1])) for n in names],
            dict(zip(names, topics, strict=True)))


def _dataset_root(raw: str) -> Path:
    if not raw:
        raise ValueError("dataset_root must be set (the dataset directory to write or resume)")
    return Path(os.path.expanduser(raw))


def recorder_config(values: dict[str, Any]) -> RecorderConfig:
    """The node config from a full set of RECORDER_PARAMS values; ValueError names the field."""
    joints = _names(values, "joint_names")
    objects_topic = values["objects_topic"]
    slots = ObjectSlots(_names(values, "object_classes")) if objects_topic else None
    cameras, camera_topics = _cameras(values)
    action_names = list(joints) if values["action_source"] == "joint_command" \
        else list(EE_ACTION_NAMES)
    features = FeatureSpec(state_names=list(joints), action_names=action_names,
                           env_state_names=slots.names if slots else [], cameras=cameras)
    fps = int(values["fps"])
    video = VideoConfig(codec=values["video_codec"], crf=int(values["video_crf"]),
                        gop=int(values["video_gop"]), preset=values["video_preset"] or None)
    writer = WriterConfig(root=_dataset_root(values["dataset_root"]), fps=fps,
                          robot_type=values["robot_type"], features=features, video=video)
    streams = [StreamConfig(STATE_STREAM, float(values["max_age_state"])),
               StreamConfig(ACTION_STREAM, float(values["max_age_action"]))]
    if slots:
        streams.append(StreamConfig(OBJECTS_STREAM, float(values["max_age_objects"])))
    streams += [StreamConfig(image_stream(c.name), float(values["max_age_image"]))
                for c in cameras]
    sampler = SamplerConfig(fps=fps, streams=tuple(streams),
                            delay_s=float(values["sample_delay"]),
                            max_lag_s=float(values["max_lag"]))
    session = SessionConfig(fps=fps, cameras=tuple(c.name for c in cameras),
                            has_objects=slots is not None,
                            max_timing_error_s=float(values["max_timing_error"]),
                            on_timing_error=values["on_timing_error"])
    return RecorderConfig(
        writer=writer, sampler=sampler, session=session, joint_names=joints,
        action_source=values["action_source"], action_clock=values["action_clock"],
        base_frame=values["base_frame"],
        objects_topic=objects_topic, object_slots=slots, camera_topics=camera_topics,
        image_reliability=values["image_reliability"], follow_teleop=values["follow_teleop"],
        episode_topic=values["episode_topic"],
        writer_queue_frames=int(values["writer_queue_frames"]),
        save_timeout_s=float(values["save_timeout"]),
        diagnostics_period_s=float(values["diagnostics_period"]),
        niceness=int(values["niceness"]))


def default_values(**overrides: Any) -> dict[str, Any]:
    """Every parameter at its default, with overrides (for tests and tools)."""
    values = {spec.name: spec.default for spec in RECORDER_PARAMS}
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"unknown recorder parameters {sorted(unknown)}")
    values.update(overrides)
    return values
