"""LeRobot dataset <-> rosbag2 MCAP bag, for `ros2 bag play` and Foxglove (no node).

dataset -> bag (`dataset_to_mcap`): frame k of an episode becomes messages stamped (header and
MCAP log time) T_e + floor(k * 1e9 / fps) ns, the recorder's own dataset grid; T_0 is the chosen
start and each next episode starts one gap after the end (n / fps) of the one before. Topics,
named as in armstack's graph (under an optional namespace):

    /joint_states             sensor_msgs/JointState        observation.state (names: info.json)
    /joint_command            sensor_msgs/JointState        action, when its names are the state's
    /ee_command               armstack_interfaces/EndEffectorCommand
                                                            action x y z qx qy qz qw gripper
    /objects                  vision_msgs/Detection3DArray  environment_state slots present:
                                                            class_id = class, pose and bbox centre
                                                            = x y z, frame base_link
    /camera/<name>/image_raw  sensor_msgs/Image (rgb8)      decoded video frames (every Nth/none)
    /teleop/episode           armstack_interfaces/EpisodeStatus, the teleop episode contract:
                              "recording" (task, take_start = T_e) at an episode's start, then
                              "idle" (the last: "finished"), outcome saved, take_end = its last
                              frame; a recorder following teleop/episode records the same episodes.

The file is what rosbag2's MCAP storage plugin (Jazzy) writes: profile "ros2", one schema per type
named pkg/msg/Type with encoding "ros2msg" and the full definition text (the .msg file, then each
dependency once after a line of 80 "=" and "MSG: pkg/Type", depth first, in sorted order, as
rosbag2's LocalMessageDefinitionSource builds it), channels with message encoding "cdr" and the
metadata keys "offered_qos_profiles" and "topic_type_hash", and a "rosbag2" metadata record
holding the bag's metadata. Messages are serialized by rclpy from the real message classes
(ros2_message.py: definitions, type hashes, exact CDR).
OUT ending in ".mcap" is written as a bare file (Jazzy plays it: `ros2 bag play x.mcap`);
otherwise OUT is a bag directory: OUT/<name>_0.mcap and OUT/metadata.yaml (version 9), which
`ros2 bag play OUT` needs. A record "armstack.dataset" keeps the dataset's schema (fps,
robot_type, names, cameras, codec), so the way back rebuilds the same dataset.

Caution: playing such a bag into a live graph publishes joint_command (or ee_command) to a running
IK/driver, which moves the arm; play only the topics you mean (`ros2 bag play --topics ...`).

bag -> dataset (`mcap_to_dataset`): messages are fed, in log-time order, to the recorder's own
Sampler and RecorderSession (configured by the recorder's parameter code, node_config), with
the log time as the receive time and every sample decided at exactly t_k + sample_delay, as an
on-time recorder would; so the max-age, startup-skip, drop and timing-error rules are the
recorder's. Episodes follow /teleop/episode through the recorder's TeleopFollower; a bag without
it becomes one episode from its first to its last message (a task must then be given).

Round trip (dataset -> bag -> dataset, same fps): state, action, environment_state, timestamp,
frame/episode/task indices and tasks come back exactly (float32 -> float64 -> float32 is exact),
except that the recorder re-normalizes an ee action's quaternion (observation.ee_action), which
can move a component by one float32 step. Images come back re-encoded: equal up to a second
lossy encoding. Not kept: the x y z of a slot that is absent (present = 0) come back as zeros
(what the recorder writes); images thinned with image_every > 1 come back held from the last
frame sent (the max image age is raised to cover it); robot_type and codec come back from the
armstack.dataset record, or as the recorder's defaults without it.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from armstack_recorder import layout
from armstack_recorder import observation as obs
from armstack_recorder.lerobot_dataset import CameraSpec, LeRobotDatasetReader, LeRobotDatasetWriter
from armstack_recorder.metadata import DatasetFormatError
from armstack_recorder.node_config import RecorderConfig, default_values, recorder_config
from armstack_recorder.ros2_message import (
    deserialize,
    message_class,
    message_definition,
    serialize,
    type_hash,
)
from armstack_recorder.sampler import NS, Sampler, seconds_to_ns
from armstack_recorder.session import (
    ACTION_STREAM,
    OBJECTS_STREAM,
    STATE_STREAM,
    EpisodeReport,
    Frame,
    RecorderSession,
    SaveCallback,
    SavedEpisode,
    image_stream,
)
from armstack_recorder.teleop_follow import TeleopFollower, TeleopStatus
from armstack_recorder.video import CANONICAL_CODEC

logger = logging.getLogger(__name__)

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
DETECTIONS = "vision_msgs/msg/Detection3DArray"
EE_COMMAND = "armstack_interfaces/msg/EndEffectorCommand"
EPISODE_STATUS = "armstack_interfaces/msg/EpisodeStatus"

STATE_TOPIC = "joint_states"
ACTION_TOPICS = {"joint_command": "joint_command", "ee_command": "ee_command"}
OBJECTS_TOPIC = "objects"
EPISODE_TOPIC = "teleop/episode"
_CAMERA_TOPIC = re.compile(r"^camera/([A-Za-z0-9_\-]+)/image_raw$")
BASE_FRAME = "base_link"
ARMSTACK_RECORD = "armstack.dataset"
ROS_DISTRO = "jazzy"
BAG_METADATA_VERSION = 9  # rosbag2 Jazzy's BagMetadata version
DEFAULT_START_NS = 1_735_689_600 * NS  # 2025-01-01T00:00:00Z: a fixed start, reproducible bags
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4,
                "none": CompressionType.NONE}
_DECODE_BATCH = 32  # video frames decoded per call (bounded memory for long episodes)


class _PlainDumper(yaml.SafeDumper):
    """No anchors/aliases: every QoS profile spelled out, as rosbag2's yaml-cpp writes it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False)


class BagError(ValueError):
    """The bag or dataset cannot be converted; the message says what is missing or wrong."""


def camera_topic(name: str) -> str:
    return f"camera/{name}/image_raw"


def _qualified(namespace: str, topic: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


# ---------------------------------------------------------------------- dataset features <-> topics

@dataclass(frozen=True)
class TopicMap:
    """Which dataset feature travels on which topic (derived from the feature names)."""

    joints: tuple[str, ...]  # observation.state names, JointState order
    action_source: str  # joint_command | ee_command
    classes: tuple[str, ...]  # environment_state slots; () without objects
    cameras: tuple[CameraSpec, ...]

    @classmethod
    def from_features(cls, features: dict[str, dict]) -> TopicMap:
        def names(key: str) -> tuple[str, ...]:
            found = features.get(key, {}).get("names")
            return tuple(found) if isinstance(found, list) else ()

        joints, action = names(layout.STATE_KEY), names(layout.ACTION_KEY)
        if not joints:
            raise BagError(f"the dataset has no named {layout.STATE_KEY} feature")
        if action == joints:
            source = "joint_command"
        elif action == EE_ACTION_NAMES:
            source = "ee_command"
        else:
            raise BagError(f"action names {list(action)} are neither the joint positions of "
                           f"{layout.STATE_KEY} {list(joints)} (-> joint_command) nor the end-"
                           f"effector command {list(EE_ACTION_NAMES)} (-> ee_command)")
        classes = _slot_classes(names(layout.ENV_STATE_KEY)) \
            if layout.ENV_STATE_KEY in features else ()
        cameras = []
        for key, ft in features.items():
            if ft.get("dtype") == "video" and key.startswith(layout.IMAGE_PREFIX):
                h, w = int(ft["shape"][0]), int(ft["shape"][1])
                cameras.append(CameraSpec(key[len(layout.IMAGE_PREFIX):], h, w))
        return cls(joints, source, classes, tuple(cameras))


def _slot_classes(env_names: tuple[str, ...]) -> tuple[str, ...]:
    """Classes of <class>_x, _y, _z, _present slots (the recorder's layout), else BagError."""
    width = len(obs.OBJECT_FIELDS)
    groups = [env_names[i:i + width] for i in range(0, len(env_names), width)]
    classes = tuple(g[0][:-2] for g in groups if g and g[0].endswith("_x"))
    if not env_names or len(classes) != len(groups) or \
            obs.ObjectSlots(classes).names != list(env_names):
        raise BagError(f"{layout.ENV_STATE_KEY} names {list(env_names)[:8]} are not object "
                       f"slots <class>_x, _y, _z, _present; cannot map them to objects")
    return classes


# ---------------------------------------------------------------------- dataset -> bag

@dataclass(frozen=True)
class ExportConfig:
    """Options of `dataset_to_mcap`; validated on construction."""

    episodes: tuple[int, ...] | None = None  # None: all
    image_every: int = 1  # send every Nth frame's images; 0: no images
    start_ns: int = DEFAULT_START_NS  # stamp of the first frame
    gap_s: float = 1.0  # between one episode's last frame and the next one's first
    namespace: str = ""
    compression: str = "zstd"  # zstd | lz4 | none (rosbag2 reads all three)

    def __post_init__(self) -> None:
        if not isinstance(self.image_every, int) or self.image_every < 0:
            raise ValueError(f"ExportConfig.image_every must be an int >= 0, "
                             f"got {self.image_every!r}")
        if not isinstance(self.start_ns, int) or self.start_ns <= 0:
            raise ValueError(f"ExportConfig.start_ns must be a positive int, got {self.start_ns!r}")
        if not self.gap_s >= 0.0:
            raise ValueError(f"ExportConfig.gap_s must be >= 0, got {self.gap_s!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"ExportConfig.compression must be one of {sorted(COMPRESSIONS)}, "
                             f"got {self.compression!r}")


@dataclass
class ExportResult:
    bag: Path  # the bag directory, or the .mcap file
    mcap_path: Path
    episodes: list[int]  # dataset episode indices written, in bag order
    frames: int
    messages: dict[str, int]  # topic -> count
    bytes: int
    seconds: float


@dataclass
class _Channel:
    id: int
    type_name: str
    qos: dict
    count: int = 0


def _qos(depth: int, durability: str) -> dict:
    """A publisher's offered QoS as rosbag2 (metadata version 9) writes it."""
    infinite = {"sec": 9223372036, "nsec": 854775807}
    return {"history": "keep_last", "depth": depth, "reliability": "reliable",
            "durability": durability, "deadline": dict(infinite), "lifespan": dict(infinite),
            "liveliness": "automatic", "liveliness_lease_duration": dict(infinite),
            "avoid_ros_namespace_conventions": False}


class _BagWriter:
    """An MCAP file laid out as rosbag2's MCAP storage writes one."""

    def __init__(self, path: Path, compression: str) -> None:
        self.path = path
        self._file = path.open("wb")
        self._writer = Writer(self._file, compression=COMPRESSIONS[compression])
        self._writer.start(profile="ros2",
                           library=f"armstack mcap_bag, mcap-python {package_version('mcap')}")
        self._schemas: dict[str, int] = {}
        self.channels: dict[str, _Channel] = {}
        self.first_ns: int | None = None
        self.last_ns = 0

    def channel(self, topic: str, type_name: str, qos: dict) -> None:
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                type_name, "ros2msg", message_definition(type_name).encode())
        metadata = {"offered_qos_profiles": _yaml([qos]),
                    "topic_type_hash": type_hash(type_name)}
        cid = self._writer.register_channel(topic, "cdr", self._schemas[type_name], metadata)
        self.channels[topic] = _Channel(cid, type_name, qos)

    def write(self, topic: str, msg: Any, log_ns: int) -> None:
        ch = self.channels[topic]
        self._writer.add_message(ch.id, log_time=log_ns, data=serialize(msg),
                                 publish_time=log_ns, sequence=0)
        ch.count += 1
        self.first_ns = log_ns if self.first_ns is None else min(self.first_ns, log_ns)
        self.last_ns = max(self.last_ns, log_ns)

    def bag_metadata(self, relative_path: str) -> dict:
        """rosbag2's BagMetadata (version 9) of this file, as metadata.yaml holds it."""
        start = self.first_ns or 0
        duration = {"nanoseconds": self.last_ns - start if self.first_ns is not None else 0}
        total = sum(c.count for c in self.channels.values())
        return {
            "version": BAG_METADATA_VERSION, "storage_identifier": "mcap",
            "duration": duration, "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": total,
            "topics_with_message_count": [
                {"topic_metadata": {"name": topic, "type": c.type_name,
                                    "serialization_format": "cdr",
                                    "offered_qos_profiles": [c.qos],
                                    "type_description_hash": type_hash(c.type_name)},
                 "message_count": c.count} for topic, c in self.channels.items()],
            "compression_format": "", "compression_mode": "",
            "relative_file_paths": [relative_path],
            "files": [{"path": relative_path, "starting_time": {"nanoseconds_since_epoch": start},
                       "duration": dict(duration), "message_count": total}],
            "custom_data": None, "ros_distro": ROS_DISTRO}

    def finish(self, armstack: dict[str, str], relative_path: str) -> dict:
        self._writer.add_metadata(ARMSTACK_RECORD, armstack)
        meta = self.bag_metadata(relative_path)
        self._writer.add_metadata("rosbag2", {
            "serialized_metadata": _yaml(meta)})
        self._writer.finish()
        self._file.close()
        return meta

    def abort(self) -> None:
        self._file.close()


def _output_paths(out: Path) -> tuple[Path, Path, Path | None]:
    """(bag, mcap file, metadata.yaml or None) for OUT (a .mcap file or a bag directory)."""
    if out.suffix == ".mcap":
        if out.exists():
            raise BagError(f"{out} exists; not overwriting it")
        if not out.parent.is_dir():
            raise BagError(f"{out.parent} is not a directory")
        return out, out, None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BagError(f"{out} exists and is not an empty directory; give a new bag directory "
                       "(or a path ending in .mcap for a single file)")
    if not out.parent.is_dir():
        raise BagError(f"{out.parent} is not a directory")
    return out, out / f"{out.name}_0.mcap", out / "metadata.yaml"


def _open_dataset(path: Path) -> LeRobotDatasetReader:
    if not (path / layout.INFO_PATH).is_file():
        raise BagError(f"{path} is not a LeRobot dataset (no {layout.INFO_PATH})")
    try:
        return LeRobotDatasetReader(path)
    except (DatasetFormatError, OSError) as exc:
        raise BagError(f"{path}: {exc}") from None


def dataset_to_mcap(dataset: Path | str, out: Path | str,
                    config: ExportConfig | None = None) -> ExportResult:
    """Write episodes of a LeRobot dataset as a rosbag2 MCAP bag (see the module doc)."""
    config = config or ExportConfig()
    t_start = time.perf_counter()
    reader = _open_dataset(Path(dataset))
    tmap = TopicMap.from_features(reader.features)
    episodes = list(range(reader.num_episodes)) if config.episodes is None \
        else list(config.episodes)
    bad = [e for e in episodes if not 0 <= e < reader.num_episodes]
    if bad or not episodes:
        raise BagError(f"episodes {bad or episodes} not in the dataset's "
                       f"0..{reader.num_episodes - 1}")
    bag_path, mcap_path, yaml_path = _output_paths(Path(out))
    if yaml_path is not None:
        bag_path.mkdir(exist_ok=True)
    bag = _BagWriter(mcap_path, config.compression)
    try:
        topics = _register(bag, tmap, config)
        t0, frames, tasks = config.start_ns, 0, []
        for i, e in enumerate(episodes):
            n, task = _write_episode(bag, reader, tmap, topics, e, i, len(episodes), t0, config)
            frames += n
            tasks.append(task)
            t0 += (n * NS + reader.fps - 1) // reader.fps + seconds_to_ns(config.gap_s)
        record = _armstack_record(reader, tmap, config, episodes, tasks)
        meta = bag.finish(record, mcap_path.name)
    except BaseException:
        bag.abort()
        if yaml_path is not None:
            shutil.rmtree(bag_path, ignore_errors=True)
        else:
            mcap_path.unlink(missing_ok=True)
        raise
    if yaml_path is not None:  # written last: a bag directory without it is unfinished
        yaml_path.write_text(_yaml({"rosbag2_bagfile_information": meta}))
    return ExportResult(bag=bag_path, mcap_path=mcap_path, episodes=episodes, frames=frames,
                        messages={t: c.count for t, c in bag.channels.items()},
                        bytes=mcap_path.stat().st_size, seconds=time.perf_counter() - t_start)


def _register(bag: _BagWriter, tmap: TopicMap, config: ExportConfig) -> dict[str, str]:
    """Create the channels; returns role -> topic (state, action, objects, episode, cam:<name>)."""
    ns, reliable = config.namespace, _qos(10, "volatile")
    topics = {"state": _qualified(ns, STATE_TOPIC),
              "action": _qualified(ns, ACTION_TOPICS[tmap.action_source]),
              "episode": _qualified(ns, EPISODE_TOPIC)}
    bag.channel(topics["state"], JOINT_STATE, reliable)
    bag.channel(topics["action"], JOINT_STATE if tmap.action_source == "joint_command"
                else EE_COMMAND, reliable)
    if tmap.classes:
        topics["objects"] = _qualified(ns, OBJECTS_TOPIC)
        bag.channel(topics["objects"], DETECTIONS, reliable)
    if config.image_every:
        for cam in tmap.cameras:
            topics[f"cam:{cam.name}"] = _qualified(ns, camera_topic(cam.name))
            bag.channel(topics[f"cam:{cam.name}"], IMAGE, reliable)
    # latched, as teleop publishes it: a recorder subscribes with transient local
    bag.channel(topics["episode"], EPISODE_STATUS, _qos(1, "transient_local"))
    return topics


def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time
    return Time(sec=ns // NS, nanosec=ns % NS)


def _write_episode(bag: _BagWriter, reader: LeRobotDatasetReader, tmap: TopicMap,
                   topics: dict[str, str], e: int, i: int, count: int, t0: int,
                   config: ExportConfig) -> tuple[int, str]:
    """One dataset episode from t0 on; returns (frames, task)."""
    data = reader.episode_data(e)
    n = len(data["frame_index"])
    task = reader.tasks[int(data["task_index"][0])]
    times = [t0 + (k * NS) // reader.fps for k in range(n)]
    bag.write(topics["episode"], _status("recording", task, i, count, t0, 0), t0)
    images = {cam.name: _episode_images(reader, e, cam, data["timestamp"], config.image_every)
              for cam in tmap.cameras} if config.image_every else {}
    for k, t in enumerate(times):
        stamp = _stamp(t)
        bag.write(topics["state"], _joint_state(stamp, tmap.joints, data[layout.STATE_KEY][k]), t)
        action = data[layout.ACTION_KEY][k]
        bag.write(topics["action"], _joint_state(stamp, tmap.joints, action)
                  if tmap.action_source == "joint_command" else _ee_command(stamp, action), t)
        if tmap.classes:
            bag.write(topics["objects"],
                      _detections(stamp, tmap.classes, data[layout.ENV_STATE_KEY][k]), t)
        for cam in tmap.cameras:
            if images and k % config.image_every == 0:
                bag.write(topics[f"cam:{cam.name}"],
                          _image(stamp, cam.name, next(images[cam.name])), t)
    end = "finished" if i == count - 1 else "idle"
    bag.write(topics["episode"], _status(end, task, i, count, t0, times[-1]), times[-1])
    return n, task


def _episode_images(reader: LeRobotDatasetReader, e: int, cam: CameraSpec,
                    timestamps: np.ndarray, every: int) -> Iterator[np.ndarray]:
    """Decoded frames 0, every, 2 * every, ... of one camera, (H, W, 3) uint8 each."""
    wanted = np.asarray(timestamps, dtype=np.float64)[::every]
    key = layout.IMAGE_PREFIX + cam.name
    for start in range(0, len(wanted), _DECODE_BATCH):
        yield from reader.decode_video(e, key, wanted[start:start + _DECODE_BATCH])


def _joint_state(stamp: Any, names: tuple[str, ...], values: np.ndarray) -> Any:
    msg = message_class(JOINT_STATE)(name=list(names), position=[float(v) for v in values])
    msg.header.stamp = stamp
    return msg


def _ee_command(stamp: Any, v: np.ndarray) -> Any:
    msg = message_class(EE_COMMAND)(gripper=float(v[7]))
    msg.header.stamp, msg.header.frame_id = stamp, BASE_FRAME
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(x) for x in v[:3])
    q.x, q.y, q.z, q.w = (float(x) for x in v[3:7])
    return msg


def _detections(stamp: Any, classes: tuple[str, ...], env: np.ndarray) -> Any:
    """The present slots as detections, laid out as armstack_localization publishes them."""
    from vision_msgs.msg import Detection3D, ObjectHypothesisWithPose
    msg = message_class(DETECTIONS)()
    msg.header.stamp, msg.header.frame_id = stamp, BASE_FRAME
    slots = np.asarray(env).reshape(len(classes), len(obs.OBJECT_FIELDS))  # (N, 4)
    for name, (x, y, z, present) in zip(classes, slots, strict=True):
        if present <= 0.5:
            continue
        det = Detection3D(header=msg.header)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = name, 1.0
        pose = hyp.pose.pose
        pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
        pose.orientation.w = 1.0
        det.results.append(hyp)
        det.bbox.center = pose
        msg.detections.append(det)
    return msg


def _image(stamp: Any, camera: str, rgb: np.ndarray) -> Any:
    h, w = rgb.shape[:2]
    msg = message_class(IMAGE)(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, f"camera_{camera}_optical_frame"
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def _status(state: str, task: str, i: int, count: int, start_ns: int, end_ns: int) -> Any:
    """EpisodeStatus of take i + 1 (saved ones count in `saved`), per the teleop contract."""
    ended = state != "recording"
    msg = message_class(EPISODE_STATUS)(
        state=state, task=task, source="dataset", episode_index=i + ended, take=i + 1,
        outcome="saved" if ended else "", take_start=_stamp(start_ns), take_end=_stamp(end_ns),
        saved=i + ended, discarded=0, target_episodes=count,
        summary=f"episode {i + 1}/{count} {'saved' if ended else 'recording'} (take {i + 1})")
    msg.header.stamp = _stamp(end_ns if ended else start_ns)
    return msg


def _armstack_record(reader: LeRobotDatasetReader, tmap: TopicMap, config: ExportConfig,
                     episodes: list[int], tasks: list[str]) -> dict[str, str]:
    codecs = {ft.get("info", {}).get("video.codec") for ft in reader.features.values()
              if ft.get("dtype") == "video"}
    return {
        "fps": str(reader.fps), "robot_type": str(reader.meta.info.get("robot_type") or ""),
        "joints": json.dumps(list(tmap.joints)), "action_source": tmap.action_source,
        "object_classes": json.dumps(list(tmap.classes)),
        "cameras": json.dumps([[c.name, c.height, c.width] for c in tmap.cameras]),
        "video_codec": next(iter(codecs)) if len(codecs) == 1 else "",
        "image_every": str(config.image_every), "namespace": config.namespace,
        "source": str(reader.root), "episodes": json.dumps(episodes), "tasks": json.dumps(tasks)}


# ---------------------------------------------------------------------- bag -> dataset

@dataclass(frozen=True)
class ImportConfig:
    """Options of `mcap_to_dataset`; None means: from the bag's armstack record, else discovered."""

    fps: int | None = None  # else the record's, else the recorder's default
    task: str | None = None  # for a bag without teleop/episode (required then)
    joints: tuple[str, ...] | None = None
    action_source: str | None = None  # joint_command | ee_command
    object_classes: tuple[str, ...] | None = None
    images: bool = True
    namespace: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # recorder parameter overrides

    def __post_init__(self) -> None:
        if self.fps is not None and (not isinstance(self.fps, int) or self.fps < 1):
            raise ValueError(f"ImportConfig.fps must be an int >= 1, got {self.fps!r}")
        if self.action_source not in (None, *ACTION_TOPICS):
            raise ValueError(f"ImportConfig.action_source must be one of {list(ACTION_TOPICS)}, "
                             f"got {self.action_source!r}")
        unknown = set(self.params) - set(default_values())
        if unknown:
            raise ValueError(f"ImportConfig.params: unknown recorder parameters {sorted(unknown)}")
        if "dataset_root" in self.params:
            raise ValueError("ImportConfig.params: dataset_root is the output dataset, not a param")


@dataclass
class ImportResult:
    dataset: Path
    reports: list[EpisodeReport]  # the recorder's account of each episode
    messages: int  # read from the bag
    rejected: dict[str, int]  # stream -> messages the recorder's conversions refused
    seconds: float

    @property
    def saved(self) -> list[EpisodeReport]:
        return [r for r in self.reports if r.outcome == "saved"]


def bag_files(path: Path) -> list[Path]:
    """The .mcap files of a bag directory (per metadata.yaml if present) or of a .mcap file."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BagError(f"{path} does not exist")
    meta_path = path / "metadata.yaml"
    if meta_path.is_file():
        try:
            info = yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"]
            storage, rel = info["storage_identifier"], info["relative_file_paths"]
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise BagError(f"{meta_path}: not a rosbag2 metadata file ({exc})") from None
        if storage != "mcap":
            raise BagError(f"{path} is a {storage} bag; only MCAP bags are read "
                           "(convert it: ros2 bag convert)")
        files = [path / Path(p).name for p in rel]
    else:
        files = sorted(path.glob("*.mcap"))
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise BagError(f"{path}: no MCAP file" + (f" ({missing} missing)" if missing else ""))
    return files


@dataclass
class _BagIndex:
    files: list[Path]
    topics: dict[str, tuple[str, str]]  # topic -> (schema name, message encoding)
    counts: Counter
    record: dict[str, str]  # the armstack.dataset record, {} if none


def _index(files: list[Path]) -> _BagIndex:
    topics: dict[str, tuple[str, str]] = {}
    counts: Counter = Counter()
    record: dict[str, str] = {}
    for path in files:
        try:
            with path.open("rb") as f:
                reader = make_reader(f)
                header = reader.get_header()
                summary = reader.get_summary()
                if summary is None:
                    raise BagError(f"{path}: no summary section (an unfinished recording?); "
                                   "repair it first: mcap recover")
                for cid, ch in summary.channels.items():
                    schema = summary.schemas.get(ch.schema_id)
                    topics[ch.topic] = (schema.name if schema else "", ch.message_encoding)
                    if summary.statistics:
                        counts[ch.topic] += summary.statistics.channel_message_counts.get(cid, 0)
                for meta in reader.iter_metadata():
                    if meta.name == ARMSTACK_RECORD:
                        record = dict(meta.metadata)
        except (McapError, OSError, ValueError) as exc:
            if isinstance(exc, BagError):
                raise
            raise BagError(f"{path}: not a readable MCAP file ({exc}); a recording cut off "
                           "by a crash can be repaired with: mcap recover") from None
        if header.profile not in ("ros2", ""):
            logger.warning("%s: MCAP profile %r, not ros2", path, header.profile)
    return _BagIndex(files, topics, counts, record)


def _first_message(index: _BagIndex, topic: str) -> Any:
    for path in index.files:
        with path.open("rb") as f:
            for _, _, message in make_reader(f).iter_messages(topics=[topic]):
                return deserialize(message.data, index.topics[topic][0])
    raise BagError(f"{topic} has no message")


def _require(index: _BagIndex, topic: str, type_name: str) -> None:
    if topic not in index.topics:
        raise BagError(f"the bag has no {topic} ({type_name}); its topics: "
                       f"{sorted(index.topics) or 'none'}")
    schema, encoding = index.topics[topic]
    if schema != type_name or encoding != "cdr":
        raise BagError(f"{topic} is {schema or '?'} ({encoding}), expected {type_name} (cdr)")


def _recorder_values(index: _BagIndex, config: ImportConfig, out: Path,
                     ns: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Recorder parameters for this bag, and role -> topic of the streams to read."""
    rec = index.record
    topics = {"state": _qualified(ns, STATE_TOPIC)}
    _require(index, topics["state"], JOINT_STATE)
    joints = config.joints or (tuple(json.loads(rec["joints"])) if "joints" in rec else None)
    if not joints:  # the recorder's joints if all are there (drops the mimic right_finger)
        names = tuple(_first_message(index, topics["state"]).name)
        joints = JOINT_NAMES if set(JOINT_NAMES) <= set(names) else names
    source = config.action_source or rec.get("action_source") or next(
        (s for s, t in ACTION_TOPICS.items() if _qualified(ns, t) in index.topics), "joint_command")
    topics["action"] = _qualified(ns, ACTION_TOPICS[source])
    _require(index, topics["action"], JOINT_STATE if source == "joint_command" else EE_COMMAND)
    values = default_values(dataset_root=str(out), joint_names=list(joints), action_source=source,
                            follow_teleop=False, niceness=0)
    fps = config.fps or int(rec.get("fps", 0)) or values["fps"]
    values.update(fps=fps, robot_type=rec.get("robot_type") or values["robot_type"])
    if rec.get("video_codec") in CANONICAL_CODEC.values():
        values["video_codec"] = {v: k for k, v in CANONICAL_CODEC.items()}[rec["video_codec"]]
    objects = _qualified(ns, OBJECTS_TOPIC)
    classes = config.object_classes or tuple(json.loads(rec.get("object_classes", "[]"))) \
        or obs.OBJECT_CLASSES
    if objects in index.topics:
        _require(index, objects, DETECTIONS)
        topics["objects"] = objects
        values.update(objects_topic=objects, object_classes=list(classes))
    else:
        values["objects_topic"] = ""
    _camera_values(index, config, ns, values, topics)
    return values, topics


def _camera_values(index: _BagIndex, config: ImportConfig, ns: str, values: dict[str, Any],
                   topics: dict[str, str]) -> None:
    prefix = _qualified(ns, "")
    cams = {}
    for topic, (schema, _) in sorted(index.topics.items()):
        match = _CAMERA_TOPIC.match(topic[len(prefix):]) if topic.startswith(prefix) else None
        if match and schema == IMAGE and index.counts.get(topic, 1):
            cams[match.group(1)] = topic
    if not config.images or not cams:
        values["record_images"] = False
        return
    sizes = {}
    for name, topic in cams.items():
        first = _first_message(index, topic)
        sizes[name] = (int(first.height), int(first.width))
    if len(set(sizes.values())) != 1:
        raise BagError(f"cameras of different sizes {sizes}: the recorder records one image_size; "
                       "convert without images (--no-images)")
    every = int(index.record.get("image_every", "1") or 1)
    if every > 1 and "max_age_image" not in config.params:
        # the bag holds every Nth frame of the source: hold each image until the next one
        source_fps = int(index.record.get("fps") or values["fps"])
        values["max_age_image"] = max(values["max_age_image"], every / source_fps)
        logger.info("images were thinned to every %d frame(s): each is held up to %.3f s",
                    every, values["max_age_image"])
    values.update(record_images=True, camera_names=list(cams), camera_topics=list(cams.values()),
                  image_size=list(next(iter(sizes.values()))))
    topics.update({f"cam:{name}": topic for name, topic in cams.items()})


class _DirectSink:
    """The recorder's FrameSink writing at once: offline nothing waits, so nothing is dropped."""

    def __init__(self, writer: LeRobotDatasetWriter) -> None:
        self._writer = writer

    def start(self, task: str) -> None:
        if self._writer.recording:
            self._writer.discard_episode()
        self._writer.start_episode(task)

    def frame(self, frame: Frame) -> bool:
        self._writer.add_frame(frame.state, frame.action, frame.env_state, frame.images,
                               timestamp=frame.time_s)
        return True

    def save(self, on_done: SaveCallback) -> None:
        try:
            report = self._writer.save_episode()
        except Exception as exc:  # reported in the episode's report, as the recorder does
            on_done(None, exc)
            return
        on_done(SavedEpisode(report.episode_index, report.length, report.save_s,
                             report.encode_wait_s, report.encoder_blocked_s), None)

    def discard(self) -> None:
        if self._writer.recording:
            self._writer.discard_episode()


class _Replay:
    """Feeds bag messages to the recorder's Sampler/RecorderSession on a virtual clock."""

    def __init__(self, cfg: RecorderConfig, writer: LeRobotDatasetWriter) -> None:
        self.sampler = Sampler(cfg.sampler)
        self.reports: list[EpisodeReport] = []
        self.session = RecorderSession(cfg.session, self.sampler, _DirectSink(writer),
                                       self.reports.append)
        self.follower = TeleopFollower()
        self._delay = seconds_to_ns(cfg.sampler.delay_s)

    def advance(self, now_ns: int) -> None:
        """Decide every sample due by now_ns at its own due time t_k + delay (never late)."""
        while True:
            nxt = self.sampler.next_time_ns()
            if nxt is None or nxt + self._delay > now_ns:
                break
            self.session.tick(nxt + self._delay)
            if self.sampler.next_time_ns() == nxt:
                break  # nothing was decided: the session has no episode on this grid
        self.session.tick(now_ns)

    def episode_status(self, msg: Any, now_ns: int) -> None:
        def ns(t: Any) -> int:
            return t.sec * NS + t.nanosec

        status = TeleopStatus(state=msg.state, task=msg.task, take=msg.take, outcome=msg.outcome,
                              take_start_ns=ns(msg.take_start), take_end_ns=ns(msg.take_end))
        for cmd in self.follower.update(status):
            if cmd.kind == "start":
                ok, text = self.session.start(cmd.time_ns, cmd.task, now_ns, cmd.owner)
            elif cmd.kind == "save":
                ok, text, _ = self.session.save(cmd.time_ns, cmd.owner)
            else:
                ok, text = self.session.discard(cmd.reason, cmd.owner)
            (logger.info if ok else logger.warning)("teleop %s (%s): %s", cmd.kind, cmd.owner, text)

    def finish(self, end_ns: int) -> None:
        self.advance(end_ns + self._delay)
        self.session.shutdown(end_ns + self._delay)  # a take left open at the bag's end: discarded


def _converters(cfg: RecorderConfig, topics: dict[str, str]) -> dict[str, tuple[str, str, Any]]:
    """topic -> (stream, type name, message -> feature value), the recorder node's conversions."""
    joints = cfg.joint_names

    def ee(m: Any) -> np.ndarray:
        p, o = m.pose.position, m.pose.orientation
        return obs.ee_action((p.x, p.y, p.z), (o.x, o.y, o.z, o.w), m.gripper,
                             m.header.frame_id, cfg.base_frame)

    out = {topics["state"]: (STATE_STREAM, JOINT_STATE,
                             lambda m: obs.joint_vector(m.name, m.position, joints))}
    if cfg.action_source == "joint_command":
        out[topics["action"]] = (ACTION_STREAM, JOINT_STATE,
                                 lambda m: obs.joint_vector(m.name, m.position, joints))
    else:
        out[topics["action"]] = (ACTION_STREAM, EE_COMMAND, ee)
    if cfg.object_slots is not None:
        slots = cfg.object_slots
        out[topics["objects"]] = (OBJECTS_STREAM, DETECTIONS, lambda m: slots.vector(
            obs.detections_of(m), m.header.frame_id, cfg.base_frame))
    for cam in cfg.writer.features.cameras:
        out[topics[f"cam:{cam.name}"]] = (
            image_stream(cam.name), IMAGE,
            lambda m, size=(cam.height, cam.width): obs.image_rgb(
                m.encoding, m.height, m.width, m.step, m.data, size, copy=False))
    return out


def _messages(files: list[Path], topics: list[str]) -> Iterator[tuple[str, int, bytes]]:
    """(topic, log time, data) of every file, merged in log-time order."""
    handles = [path.open("rb") for path in files]
    try:
        streams = [((ch.topic, m.log_time, m.data) for _, ch, m in
                    make_reader(f).iter_messages(topics=topics, log_time_order=True))
                   for f in handles]
        yield from heapq.merge(*streams, key=lambda item: item[1])
    finally:
        for f in handles:
            f.close()


def mcap_to_dataset(bag: Path | str, out: Path | str,
                    config: ImportConfig | None = None) -> ImportResult:
    """Record a rosbag2 MCAP bag into a new LeRobot dataset with the recorder's logic."""
    config = config or ImportConfig()
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BagError(f"{out} exists and is not empty; give a new dataset directory")
    if not out.parent.is_dir():
        raise BagError(f"{out.parent} is not a directory")
    index = _index(bag_files(Path(bag)))
    ns = config.namespace if config.namespace is not None else index.record.get("namespace", "")
    values, topics = _recorder_values(index, config, out, ns)
    values.update(config.params)
    episode_topic = _qualified(ns, EPISODE_TOPIC)
    follow = episode_topic in index.topics
    if follow:
        _require(index, episode_topic, EPISODE_STATUS)
    elif not config.task:
        raise BagError(f"the bag has no {episode_topic}: it is recorded as one episode, "
                       "which needs a task (--task)")
    try:
        cfg = recorder_config(values)
    except ValueError as exc:
        raise BagError(f"recorder parameters: {exc}") from None
    created = not out.exists()
    try:
        with LeRobotDatasetWriter(cfg.writer) as writer:
            replay = _Replay(cfg, writer)
            count = _play(replay, index.files, _converters(cfg, topics),
                          episode_topic if follow else None, config.task)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    rejected = {name: c.invalid for name, c in replay.sampler.counters.items() if c.invalid}
    return ImportResult(dataset=out, reports=replay.reports, messages=count, rejected=rejected,
                        seconds=time.perf_counter() - t_start)


def _play(replay: _Replay, files: list[Path], converters: dict[str, tuple[str, str, Any]],
          episode_topic: str | None, task: str | None) -> int:
    """Every message to the recorder logic, in log-time order; returns the count read."""
    wanted = [*converters, *([episode_topic] if episode_topic else [])]
    count, last_ns = 0, None
    for topic, log_ns, data in _messages(files, wanted):
        if last_ns is None and episode_topic is None:
            replay.session.start(log_ns, task, log_ns, "bag")
        replay.advance(log_ns)
        last_ns, count = log_ns, count + 1
        if topic == episode_topic:
            replay.episode_status(deserialize(data, EPISODE_STATUS), log_ns)
            continue
        stream, type_name, convert = converters[topic]
        msg = deserialize(data, type_name)
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        try:
            if stamp == 0:
                raise obs.ObservationError("no header stamp")
            value = convert(msg)
        except obs.ObservationError as exc:
            if not replay.sampler.counters[stream].invalid:
                logger.warning("%s message on %s not used: %s", stream, topic, exc)
            replay.sampler.reject(stream)
            continue
        replay.sampler.add(stream, stamp, value, log_ns)
    if last_ns is None:
        raise BagError(f"none of the topics {wanted} has a message")
    if episode_topic is None:
        replay.session.save(last_ns, "bag")
    replay.finish(last_ns)
    return count


def parse_param(text: str) -> tuple[str, Any]:
    """"name=value" (value as YAML, like `ros2 run -p`) -> (name, value)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected name=value, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: value is not YAML ({exc})") from None


