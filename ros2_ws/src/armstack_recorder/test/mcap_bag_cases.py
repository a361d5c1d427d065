"""Dataset <-> rosbag2 MCAP bag (mcap_bag): the round trip, the bag as independent readers see
it (mcap's own reader, and mcap_ros2 decoding from the schema text alone, as Foxglove does),
sampling of a bag that was not written from a dataset, and the errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES
from armstack_recorder import layout
from armstack_recorder import observation as obs
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.mcap_bag import (
    BagError,
    ExportConfig,
    ImportConfig,
    dataset_to_mcap,
    mcap_to_dataset,
)
from armstack_recorder.ros2_message import message_definition
from armstack_recorder.sampler import NS
from armstack_recorder.validate import validate_dataset
from armstack_recorder.video import VideoConfig
from mcap.reader import make_reader
from mcap.writer import Writer

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")
pytest.importorskip("armstack_interfaces.msg")

TOOL = Path(__file__).resolve().parents[4] / "tools" / "dataset.py"
FPS = 30
FRAMES = 20
TASKS = ("put the red cube in the bin", "stack the cubes")
START = 1_735_689_600 * NS  # ExportConfig's default start
GAP = NS  # ExportConfig's default gap_s = 1.0
# sensor_msgs/msg/JointState of ROS 2 Jazzy (its rosidl type description hash)
JOINT_STATE_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
VECTOR_KEYS = (layout.STATE_KEY, layout.ENV_STATE_KEY, layout.ACTION_KEY)
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
TOPICS = {"/joint_states": "sensor_msgs/msg/JointState",
          "/joint_command": "sensor_msgs/msg/JointState",
          "/objects": "vision_msgs/msg/Detection3DArray",
          "/camera/color/image_raw": "sensor_msgs/msg/Image",
          "/teleop/episode": "armstack_interfaces/msg/EpisodeStatus"}


def _write_dataset(synthetic, root: Path, episodes: int = 2, frames: int = FRAMES,
                   cameras: tuple[str, ...] = ("color",), ee: bool = False) -> Path:
    """The recorder's layout: 7 joints, the action as joint_command (or ee_command), 3 object
    slots with some classes absent, cameras showing the conftest's numbered stripes. Vectors
    are random float32, so an exact match means nothing was rounded on the way."""
    rng = np.random.default_rng(7)
    height, width = synthetic.image(0, 0, 0).shape[:2]
    spec = FeatureSpec(list(JOINT_NAMES),
                       list(EE_ACTION_NAMES) if ee else list(JOINT_NAMES),
                       [] if ee else obs.ObjectSlots().names,
                       [CameraSpec(c, height, width) for c in cameras])
    cfg = WriterConfig(root=root, fps=FPS, robot_type="armstack_wx250s", features=spec,
                       video=VideoConfig(codec="libx264"))
    with LeRobotDatasetWriter(cfg) as writer:
        for e in range(episodes):
            writer.start_episode(TASKS[e % len(TASKS)])
            for k in range(frames):
                env = None
                if not ee:
                    env = rng.normal(size=(3, 4)).astype(np.float32)  # (class, x y z present)
                    env[:, 3] = rng.random(3) > 0.4
                    env[env[:, 3] == 0, :3] = 0.0  # what the recorder writes for an absent class
                    env = env.reshape(-1)
                action = obs.ee_action(rng.normal(size=3), rng.normal(size=4), 0.02, "base_link",
                                       "base_link") if ee else rng.normal(size=7)
                images = {c: synthetic.image(k, e, i) for i, c in enumerate(cameras)}
                writer.add_frame(rng.normal(size=7), action, env, images)
            writer.save_episode()
    return root


def _columns(root: Path) -> dict[str, np.ndarray]:
    cols = LeRobotDatasetReader(root).columns
    return {k: np.asarray(v) for k, v in cols.items()}


# ---------------------------------------------------------------------- round trip

def test_round_trip_gives_the_same_dataset(synthetic, tmp_path: Path) -> None:
    src = _write_dataset(synthetic, tmp_path / "src")
    export = dataset_to_mcap(src, tmp_path / "bag")
    assert export.episodes == [0, 1] and export.frames == 2 * FRAMES
    result = mcap_to_dataset(tmp_path / "bag", tmp_path / "back")

    assert [r.outcome for r in result.reports] == ["saved", "saved"]
    assert all(r.frames == FRAMES and r.dropped == 0 and r.startup_skipped == 0
               and r.max_timing_error_s < 1e-6 for r in result.reports)  # (k * 1e9) // fps ns
    assert result.rejected == {}
    a, b = LeRobotDatasetReader(src), LeRobotDatasetReader(tmp_path / "back")
    assert b.fps == a.fps and b.tasks == a.tasks == list(TASKS)
    assert b.meta.info["robot_type"] == a.meta.info["robot_type"]
    assert {k: (v["shape"], v.get("names")) for k, v in b.features.items() if k != "info"} == \
        {k: (v["shape"], v.get("names")) for k, v in a.features.items() if k != "info"}
    key = "observation.images.color"
    assert b.features[key]["info"]["video.codec"] == a.features[key]["info"]["video.codec"]
    ca, cb = _columns(src), _columns(tmp_path / "back")
    for name in (*VECTOR_KEYS, *INDEX_KEYS):
        assert cb[name].dtype == ca[name].dtype
        np.testing.assert_array_equal(cb[name], ca[name], err_msg=name)  # exact, bit for bit
    for e in range(2):
        times = ca["timestamp"][a.episode_range(e).start:a.episode_range(e).stop]
        img_a, img_b = a.decode_video(e, key, times), b.decode_video(e, key, times)
        # re-encoded: the same frames (their stripes say which), up to a second lossy encoding
        assert [synthetic.read(img) for img in img_b] == [(k, e, 0) for k in range(FRAMES)]
        assert np.abs(img_a.astype(int) - img_b.astype(int)).mean() < 2.0
    assert validate_dataset(tmp_path / "back").ok


def test_ee_action_round_trip(synthetic, tmp_path: Path) -> None:
    """ee_command: position and gripper exact; the recorder re-normalizes the quaternion (in
    float64), which may move a component by one float32 step."""
    src = _write_dataset(synthetic, tmp_path / "src", episodes=1, frames=40, cameras=(), ee=True)
    export = dataset_to_mcap(src, tmp_path / "ee.mcap")
    assert set(export.messages) == {"/joint_states", "/ee_command", "/teleop/episode"}
    mcap_to_dataset(tmp_path / "ee.mcap", tmp_path / "back")
    ca, cb = _columns(src), _columns(tmp_path / "back")
    np.testing.assert_array_equal(cb[layout.STATE_KEY], ca[layout.STATE_KEY])
    np.testing.assert_array_equal(cb["action"][:, [0, 1, 2, 7]], ca["action"][:, [0, 1, 2, 7]])
    np.testing.assert_array_max_ulp(cb["action"][:, 3:7], ca["action"][:, 3:7], maxulp=1)


def test_thinned_images_are_held_and_no_images_drops_cameras(synthetic, tmp_path: Path) -> None:
    src = _write_dataset(synthetic, tmp_path / "src", episodes=1, frames=10)
    thin = dataset_to_mcap(src, tmp_path / "thin", ExportConfig(image_every=4))
    assert thin.messages["/camera/color/image_raw"] == 3  # frames 0, 4, 8
    mcap_to_dataset(tmp_path / "thin", tmp_path / "held")
    held = LeRobotDatasetReader(tmp_path / "held")
    images = held.decode_video(0, "observation.images.color", np.arange(10) / FPS)
    assert [synthetic.read(img)[0] for img in images] == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]

    bare = dataset_to_mcap(src, tmp_path / "bare", ExportConfig(image_every=0))
    assert "/camera/color/image_raw" not in bare.messages
    mcap_to_dataset(tmp_path / "bare", tmp_path / "numbers")
    back = LeRobotDatasetReader(tmp_path / "numbers")
    assert back.video_keys == []
    ca, cb = _columns(src), _columns(tmp_path / "numbers")
    for name in VECTOR_KEYS:
        np.testing.assert_array_equal(cb[name], ca[name])


# ---------------------------------------------------------------------- the bag, read independently

def test_bag_is_rosbag2_mcap(synthetic, tmp_path: Path) -> None:
    from mcap_ros2._dynamic import serialize_dynamic
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    src = _write_dataset(synthetic, tmp_path / "src")
    export = dataset_to_mcap(src, tmp_path / "bag")
    mcap_path = tmp_path / "bag" / "bag_0.mcap"
    assert export.mcap_path == mcap_path and sorted(p.name for p in (tmp_path / "bag").iterdir()) \
        == ["bag_0.mcap", "metadata.yaml"]
    with mcap_path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        schemas = {s.id: s for s in summary.schemas.values()}
        channels = {c.topic: c for c in summary.channels.values()}
        assert {t: schemas[c.schema_id].name for t, c in channels.items()} == TOPICS
        assert {s.encoding for s in schemas.values()} == {"ros2msg"}
        assert {c.message_encoding for c in channels.values()} == {"cdr"}
        assert channels["/joint_states"].metadata["topic_type_hash"] == JOINT_STATE_HASH
        qos = yaml.safe_load(channels["/teleop/episode"].metadata["offered_qos_profiles"])
        assert qos[0]["durability"] == "transient_local" and qos[0]["reliability"] == "reliable"
        counts = {t: summary.statistics.channel_message_counts[c.id] for t, c in channels.items()}
        assert counts == {**{t: 2 * FRAMES for t in TOPICS}, "/teleop/episode": 4}
        decoded = [(c.topic, m, d) for _, c, m, d in reader.iter_decoded_messages()]
        records = {m.name: m.metadata for m in reader.iter_metadata()}
    assert sum(1 for t, _, _ in decoded if t != "/teleop/episode") == 8 * FRAMES
    # every payload is exactly the CDR an encoder built from the schema text writes: no bytes
    # past the message (rmw_serialize leaves some), padding zeroed
    encoders = {s.name: serialize_dynamic(s.name, s.data.decode())[s.name]
                for s in schemas.values()}
    for topic, message, msg in decoded:
        assert encoders[TOPICS[topic]](msg) == message.data, topic
    (tmp_path / "second").mkdir()
    again = dataset_to_mcap(src, tmp_path / "second" / "bag")
    assert again.mcap_path.read_bytes() == mcap_path.read_bytes()  # reproducible

    data = LeRobotDatasetReader(src)
    cols = _columns(src)
    starts = [START, START + (FRAMES * NS + FPS - 1) // FPS + GAP]  # a gap after n / fps
    states = [(m, d) for t, m, d in decoded if t == "/joint_states"]
    for i, (message, msg) in enumerate(states):
        e, k = divmod(i, FRAMES)
        stamp = starts[e] + k * NS // FPS
        assert message.log_time == stamp == msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        assert list(msg.name) == list(JOINT_NAMES)
        np.testing.assert_array_equal(np.float32(msg.position), cols[layout.STATE_KEY][i])
    # the same bytes through rclpy's own type support
    first = deserialize_message(states[5][0].data, JointState)
    np.testing.assert_array_equal(np.float32(first.position), cols[layout.STATE_KEY][5])

    objects = [d for t, _, d in decoded if t == "/objects"]
    env = cols[layout.ENV_STATE_KEY].reshape(-1, 3, 4)
    for i, msg in enumerate(objects):
        assert msg.header.frame_id == "base_link"
        expect = {c: tuple(env[i, j, :3]) for j, c in enumerate(obs.OBJECT_CLASSES)
                  if env[i, j, 3] == 1.0}
        got = {d.results[0].hypothesis.class_id: tuple(np.float32(
            [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z]))
            for d in msg.detections}
        assert got == expect
    images = [d for t, _, d in decoded if t == "/camera/color/image_raw"]
    decoded_src = data.decode_video(1, "observation.images.color", [3 / FPS])[0]
    assert images[FRAMES + 3].encoding == "rgb8"
    np.testing.assert_array_equal(
        np.frombuffer(images[FRAMES + 3].data, np.uint8).reshape(decoded_src.shape), decoded_src)
    status = [d for t, _, d in decoded if t == "/teleop/episode"]
    assert [(s.state, s.task, s.outcome) for s in status] == [
        ("recording", TASKS[0], ""), ("idle", TASKS[0], "saved"),
        ("recording", TASKS[1], ""), ("finished", TASKS[1], "saved")]
    assert status[3].take_end.sec * NS + status[3].take_end.nanosec == \
        starts[1] + (FRAMES - 1) * NS // FPS

    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    assert (info["version"], info["storage_identifier"], info["ros_distro"]) == (9, "mcap", "jazzy")
    assert info["relative_file_paths"] == ["bag_0.mcap"] and info["message_count"] == 164
    assert {t["topic_metadata"]["name"]: t["message_count"]
            for t in info["topics_with_message_count"]} == counts
    assert info["starting_time"]["nanoseconds_since_epoch"] == START
    assert "&id" not in (tmp_path / "bag" / "metadata.yaml").read_text()  # no YAML aliases
    assert yaml.safe_load(records["rosbag2"]["serialized_metadata"]) == info
    assert records["armstack.dataset"]["fps"] == str(FPS)


def test_message_definition_is_rosbag2s_concatenation() -> None:
    text = message_definition("sensor_msgs/msg/JointState")
    parts = text.split("\n" + "=" * 80 + "\n")
    heads = [p.split("\n", 1)[0] for p in parts[1:]]
    assert heads == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time"]
    assert "float64[] position" in parts[0] and "string frame_id" in parts[1]
    assert "uint32 nanosec" in parts[2]
    nested = message_definition("vision_msgs/msg/Detection3DArray")
    names = [line for line in nested.split("\n") if line.startswith("MSG: ")]
    assert len(names) == len(set(names))  # each dependency once
    assert {"MSG: vision_msgs/Detection3D", "MSG: geometry_msgs/Pose",
            "MSG: vision_msgs/ObjectHypothesis", "MSG: geometry_msgs/Point"} <= set(names)


# ---------------------------------------------------------------------- a bag from a live graph

def _raw_bag(path: Path, topics: dict[str, list[tuple[int, int, object]]]) -> None:
    """A rosbag2-style MCAP from (log time, stamp, message) lists, written with mcap directly."""
    from rclpy.serialization import serialize_message
    with path.open("wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="test")
        for topic, messages in topics.items():
            type_name = type(messages[0][2]).__module__.split(".")[0] + "/msg/" + \
                type(messages[0][2]).__name__
            sid = writer.register_schema(type_name, "ros2msg",
                                         message_definition(type_name).encode())
            cid = writer.register_channel(topic, "cdr", sid)
            for log_ns, stamp, msg in messages:
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS)
                writer.add_message(cid, log_time=log_ns, data=serialize_message(msg),
                                   publish_time=log_ns)
        writer.finish()


def _joints(value: float, extra: bool) -> object:
    from sensor_msgs.msg import JointState
    names = [*JOINT_NAMES, "right_finger"] if extra else list(JOINT_NAMES)
    return JointState(name=names, position=[value, 0.1, 0.2, 0.3, 0.4, 0.5, 0.01][:7] +
                      ([0.01] if extra else []))


def test_live_bag_is_sampled_like_the_recorder(tmp_path: Path) -> None:
    """50 Hz joint streams with a command stall, received 3 ms after their stamps, no episode
    topic: one episode on a 30 Hz grid from the first message, each sample the latest message
    stamped at or before it, a sample whose command is older than 0.1 s dropped."""
    t0 = 1_800_000_000 * NS
    stamps = np.array([t0 + n * 20_000_000 for n in range(60)])  # 1.2 s at 50 Hz
    commands = [n for n in range(60) if not 20 <= n < 27]  # no command 0.40 .. 0.52 s
    _raw_bag(tmp_path / "live.mcap", {
        "/joint_states": [(int(s) + 3_000_000, int(s), _joints(float(n), True))
                          for n, s in enumerate(stamps)],
        "/joint_command": [(int(stamps[n]) + 3_000_000, int(stamps[n]), _joints(-float(n), False))
                           for n in commands]})
    result = mcap_to_dataset(tmp_path / "live.mcap", tmp_path / "ds",
                             ImportConfig(task="teleop demo"))

    # the expected frames, worked out here from the stamps alone
    grid = [t0 + 3_000_000 + k * NS // FPS for k in range(40)]
    grid = [t for t in grid if t <= stamps[-1] + 3_000_000]
    cmd_stamps = stamps[commands]
    expected = []
    for t in grid:
        i = np.searchsorted(stamps, t, side="right") - 1
        j = np.searchsorted(cmd_stamps, t, side="right") - 1
        if t - cmd_stamps[j] <= 100_000_000:
            expected.append((float(i), -float(commands[j])))
    report = result.reports[0]
    assert report.outcome == "saved" and report.dropped == len(grid) - len(expected) > 0
    cols = _columns(tmp_path / "ds")
    assert list(zip(cols[layout.STATE_KEY][:, 0], cols["action"][:, 0])) == expected
    back = LeRobotDatasetReader(tmp_path / "ds")
    assert back.features[layout.STATE_KEY]["names"] == list(JOINT_NAMES)  # right_finger not
    assert back.tasks == ["teleop demo"] and back.fps == 30 and back.video_keys == []


# ---------------------------------------------------------------------- errors

def test_export_errors(synthetic, tmp_path: Path) -> None:
    generic = synthetic.write(tmp_path / "generic", episodes=1, frames=3, cameras=()).root
    with pytest.raises(BagError, match=r"action names \['x', 'y', 'gripper'\]"):
        dataset_to_mcap(generic, tmp_path / "a")
    with pytest.raises(BagError, match="not a LeRobot dataset"):
        dataset_to_mcap(tmp_path / "nothing", tmp_path / "b")
    src = _write_dataset(synthetic, tmp_path / "src", episodes=1, frames=3, cameras=())
    with pytest.raises(BagError, match=r"episodes \[4\] not in the dataset's 0..0"):
        dataset_to_mcap(src, tmp_path / "c", ExportConfig(episodes=(0, 4)))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BagError, match="not an empty directory"):
        dataset_to_mcap(src, tmp_path / "full")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_import_errors(tmp_path: Path) -> None:
    _raw_bag(tmp_path / "no_state.mcap", {"/joint_command": [(NS, NS, _joints(0.0, False))]})
    with pytest.raises(BagError, match=r"no /joint_states .*topics: \['/joint_command'\]"):
        mcap_to_dataset(tmp_path / "no_state.mcap", tmp_path / "a")
    _raw_bag(tmp_path / "no_task.mcap", {"/joint_states": [(NS, NS, _joints(0.0, False))],
                                         "/joint_command": [(NS, NS, _joints(0.0, False))]})
    with pytest.raises(BagError, match="needs a task"):
        mcap_to_dataset(tmp_path / "no_task.mcap", tmp_path / "b")
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="not a readable MCAP file"):
        mcap_to_dataset(tmp_path / "junk.mcap", tmp_path / "c")
    with pytest.raises(BagError, match="does not exist"):
        mcap_to_dataset(tmp_path / "missing", tmp_path / "d")
    sqlite = tmp_path / "sqlite_bag"
    sqlite.mkdir()
    (sqlite / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": {
        "storage_identifier": "sqlite3", "relative_file_paths": ["x.db3"]}}))
    with pytest.raises(BagError, match="sqlite3 bag"):
        mcap_to_dataset(sqlite, tmp_path / "e")
    with pytest.raises(BagError, match="not empty"):
        mcap_to_dataset(tmp_path / "no_task.mcap", sqlite, ImportConfig(task="t"))
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_cli(synthetic, tmp_path: Path) -> None:
    src = _write_dataset(synthetic, tmp_path / "src", episodes=2, frames=5, cameras=())
    run = subprocess.run([sys.executable, str(TOOL), "to-mcap", str(src), str(tmp_path / "bag"),
                          "--episodes", "1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "/joint_states: 5 messages" in run.stdout and "episodes  1 (1), 5 frames" in run.stdout
    _raw_bag(tmp_path / "no_state.mcap", {"/joint_command": [(NS, NS, _joints(0.0, False))]})
    bad = subprocess.run([sys.executable, str(TOOL), "from-mcap", str(tmp_path / "no_state.mcap"),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "error: the bag has no /joint_states (sensor_msgs/msg/JointState)" in bad.stderr
