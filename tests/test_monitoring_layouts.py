"""The rviz and rqt layouts against the live graph: every topic and frame they name exists.

config/rviz/armstack.rviz and config/rqt/armstack.perspective are parsed; every topic a
display or plugin reads (with the QoS rviz would subscribe with) and every frame they name
are collected. The graph is then launched with armstack's launcher (sim, perception with a
tiny generated detector, the IK node, the state publisher and the driver on the simulated
servo bus) and read from an rclpy node in this process: each topic must be advertised with
the type its display expects and deliver messages to a subscriber with the layout's QoS;
each frame must be on /tf or /tf_static and connected to the fixed frame.

Topics of nodes that may not exist yet are listed in LATE_PUBLISHERS (today: /policy/path of
the policy node, in progress). When the node's executable is installed it joins the graph
(the policy with a generated proof-of-life model) and its topics are checked like the rest;
when it is not, the topic is not skipped: its test asserts that nothing publishes it, and
says which node is missing.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from graph import REPO, LaunchedGraph, Observer, unique_domain_id

RVIZ_FILE = REPO / "config/rviz/armstack.rviz"
RQT_FILE = REPO / "config/rqt/armstack.perspective"

# Topics a layout shows whose publishing node may not be installed yet:
# topic -> (package, executable). See graph_launch_file() for how each joins the graph.
LATE_PUBLISHERS: dict[str, tuple[str, str]] = {
    "/policy/path": ("armstack_policy", "policy_node"),
}

# rviz display class -> message type of its `Topic`; displays that read no topic map to None.
RVIZ_TOPIC_TYPES: dict[str, str | None] = {
    "rviz_default_plugins/Grid": None,
    "rviz_default_plugins/TF": None,
    "rviz_default_plugins/RobotModel": None,  # reads `Description Topic`, see below
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Path": "nav_msgs/msg/Path",
}
RVIZ_GROUP = "rviz_common/Group"
TF_TOPICS = (("/tf", "volatile", 100), ("/tf_static", "transient_local", 100))

# rqt plugin -> topics it reads without naming them in its settings.
RQT_IMPLICIT_TOPICS: dict[str, tuple[tuple[str, str], ...]] = {
    "rqt_graph/RosGraph": (),
    "rqt_reconfigure/Param": (),
    "rqt_plot/Plot": (),  # its `topics` setting, see rqt_topics()
    "rqt_image_view/ImageView": (),  # its `topic` setting
    # RuntimeMonitorWidget subscribes to "diagnostics" (a constructor default, not a setting).
    "rqt_runtime_monitor/RuntimeMonitor": (
        ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),),
}


@dataclass(frozen=True)
class Qos:
    reliability: str = "reliable"  # or best_effort
    durability: str = "volatile"  # or transient_local
    depth: int = 10


@dataclass
class LayoutTopic:
    """One topic a layout reads: its expected type (None: whatever the graph has), the QoS
    each viewer subscribes with, and for rqt_plot the fields plotted (e.g. position[0])."""

    topic: str
    msg_type: str | None
    qos: list[Qos] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


def _add(found: dict[str, LayoutTopic], topic: str, msg_type: str | None, qos: Qos, source: str,
         fields: list[str] | None = None) -> None:
    if not topic.startswith("/"):
        topic = "/" + topic  # rviz and rqt run in the root namespace
    entry = found.setdefault(topic, LayoutTopic(topic, msg_type))
    if qos not in entry.qos:
        entry.qos.append(qos)
    if msg_type is not None and entry.msg_type not in (None, msg_type):
        raise ValueError(f"{topic}: {source} expects {msg_type}, another view {entry.msg_type}")
    entry.msg_type = entry.msg_type or msg_type
    entry.sources.append(source)
    entry.fields.extend(fields or [])


def _rviz_qos(topic: dict[str, Any]) -> Qos:
    return Qos(
        reliability=topic.get("Reliability Policy", "Reliable").lower().replace(" ", "_"),
        durability=topic.get("Durability Policy", "Volatile").lower().replace(" ", "_"),
        depth=int(topic.get("Depth", 5)),
    )


def _rviz_displays(displays: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for display in displays:
        if display["Class"] == RVIZ_GROUP:
            flat += _rviz_displays(display.get("Displays", []))
        else:
            flat.append(display)
    return flat


def rviz_topics(doc: dict[str, Any]) -> dict[str, LayoutTopic]:
    found: dict[str, LayoutTopic] = {}
    for display in _rviz_displays(doc["Visualization Manager"]["Displays"]):
        cls, name = display["Class"], display.get("Name", "?")
        if cls not in RVIZ_TOPIC_TYPES:
            raise ValueError(f"rviz display {name!r}: class {cls} unknown to this test")
        source = f"rviz {name} ({cls})"
        if RVIZ_TOPIC_TYPES[cls] is not None:
            topic = display["Topic"]
            _add(found, topic["Value"], RVIZ_TOPIC_TYPES[cls], _rviz_qos(topic), source)
        described_by_topic = display.get("Description Source") == "Topic"
        if cls == "rviz_default_plugins/RobotModel" and described_by_topic:
            topic = display["Description Topic"]
            _add(found, topic["Value"], "std_msgs/msg/String", _rviz_qos(topic), source)
        if cls == "rviz_default_plugins/TF":
            for tf_topic, durability, depth in TF_TOPICS:
                qos = Qos("reliable", durability, depth)
                _add(found, tf_topic, "tf2_msgs/msg/TFMessage", qos, source)
    return found


def rviz_frames(doc: dict[str, Any]) -> set[str]:
    manager = doc["Visualization Manager"]
    frames = {manager["Global Options"]["Fixed Frame"]}
    for display in _rviz_displays(manager["Displays"]):
        frames.add(display.get("Reference Frame", "<Fixed Frame>"))
        if display["Class"] == "rviz_default_plugins/TF":
            frames |= set(display.get("Frames", {})) - {"All Enabled"}
    frames.add(manager["Views"]["Current"].get("Target Frame", "<Fixed Frame>"))
    return {f.lstrip("/") for f in frames} - {"<Fixed Frame>", ""}


def _rqt_setting(group: dict[str, Any], key: str) -> Any:
    value = group["groups"]["plugin"]["keys"][key]
    assert value["type"] == "repr", f"{key}: only repr-typed settings are read here"
    return ast.literal_eval(value["repr"])


def rqt_topics(doc: dict[str, Any],
               found: dict[str, LayoutTopic] | None = None) -> dict[str, LayoutTopic]:
    """The topics of an rqt perspective, added to `found` (e.g. an rviz layout's)."""
    manager = doc["groups"]["pluginmanager"]
    running = ast.literal_eval(manager["keys"]["running-plugins"]["repr"])
    found = {} if found is None else found
    for plugin, serials in running.items():
        if plugin not in RQT_IMPLICIT_TOPICS:
            raise ValueError(f"rqt plugin {plugin} unknown to this test")
        for serial in serials:
            group = manager["groups"][f"plugin__{plugin.replace('/', '__')}__{serial}"]
            source = f"rqt {plugin} #{serial}"
            for topic, msg_type in RQT_IMPLICIT_TOPICS[plugin]:
                _add(found, topic, msg_type, Qos(), source)
            if plugin == "rqt_image_view/ImageView":
                _add(found, _rqt_setting(group, "topic"), "sensor_msgs/msg/Image", Qos(), source)
            if plugin == "rqt_plot/Plot":
                for path in _rqt_setting(group, "topics"):
                    topic, _, fld = path.rpartition("/")  # '/joint_states/position[0]'
                    _add(found, topic, None, Qos(), source, [fld])
    return found


def layout_topics() -> dict[str, LayoutTopic]:
    rviz = rviz_topics(yaml.safe_load(RVIZ_FILE.read_text()))
    return rqt_topics(json.loads(RQT_FILE.read_text()), rviz)


def plotted_field(msg: Any, path: str) -> float:
    """`position[3]` of a message, as rqt_plot reads it."""
    name, _, index = path.partition("[")
    value = getattr(msg, name)
    return float(value[int(index.rstrip("]"))]) if index else float(value)


# --- the layouts themselves -----------------------------------------------------------------

def test_rviz_parser_reads_groups_qos_and_description_topic():
    doc = {"Visualization Manager": {
        "Global Options": {"Fixed Frame": "/base_link"},
        "Views": {"Current": {"Target Frame": "<Fixed Frame>"}},
        "Displays": [
            {"Class": RVIZ_GROUP, "Name": "g", "Displays": [
                {"Class": "rviz_default_plugins/Path", "Name": "p",
                 "Topic": {"Value": "a/path", "Reliability Policy": "Best Effort", "Depth": 3}}]},
            {"Class": "rviz_default_plugins/RobotModel", "Name": "m",
             "Description Source": "File", "Description Topic": {"Value": "/unused"}},
            {"Class": "rviz_default_plugins/Grid", "Name": "grid", "Reference Frame": "table"},
        ]}}
    topics = rviz_topics(doc)
    assert list(topics) == ["/a/path"]
    assert topics["/a/path"].qos == [Qos("best_effort", "volatile", 3)]
    assert rviz_frames(doc) == {"base_link", "table"}
    doc["Visualization Manager"]["Displays"].append({"Class": "rviz_default_plugins/Map"})
    with pytest.raises(ValueError, match="unknown to this test"):
        rviz_topics(doc)


def test_rqt_parser_reads_plot_fields_and_implicit_topics():
    def plugin(**keys):
        return {"keys": {}, "groups": {"plugin": {"keys": {
            k: {"type": "repr", "repr": repr(v)} for k, v in keys.items()}, "groups": {}}}}

    running = {"rqt_plot/Plot": [2], "rqt_runtime_monitor/RuntimeMonitor": [1]}
    doc = {"groups": {"pluginmanager": {
        "keys": {"running-plugins": {"type": "repr", "repr": repr(running)}},
        "groups": {"plugin__rqt_plot__Plot__2": plugin(topics=["/js/position[1]", "/js/effort[0]"]),
                   "plugin__rqt_runtime_monitor__RuntimeMonitor__1": {"keys": {}, "groups": {}}}}}}
    topics = rqt_topics(doc)
    assert set(topics) == {"/js", "/diagnostics"}
    assert topics["/js"].fields == ["position[1]", "effort[0]"]


def test_layout_files_name_the_graph_they_were_made_for():
    topics = layout_topics()
    assert set(topics) == {
        "/robot_description", "/tf", "/tf_static", "/objects/markers", "/policy/path",
        "/detections/image", "/joint_states", "/joint_command", "/diagnostics",
    }
    assert rviz_frames(yaml.safe_load(RVIZ_FILE.read_text())) == {
        "base_link", "ee_link", "camera_color_optical_frame"}
    assert set(LATE_PUBLISHERS) <= set(topics), "LATE_PUBLISHERS names a topic no layout shows"


# --- the live graph -------------------------------------------------------------------------

def tiny_detector(path: Path) -> str:
    """An end-to-end (1, 8, 6) detector whose one box sits on the middle of the 640x480 image
    (letterboxed to 320: scale 0.5, 40 px padding above), so localization finds depth there.
    The other 7 rows score 0; 8 rows > 6 columns tells the layout guess it is end_to_end."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    row = np.zeros((1, 8, 6), np.float32)
    row[0, 0] = [145.0, 105.0, 175.0, 135.0, 0.9, 0.0]  # x1 y1 x2 y2 score class
    nodes = [  # rows + 0 * mean(images): the output depends on the input, as a real model's does
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"],
                         value=numpy_helper.from_array(np.zeros_like(row), "z")),
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(row, "r")),
        helper.make_node("Mul", ["zero", "mean"], ["gated"]),
        helper.make_node("Add", ["rows", "gated"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "center_box",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 8, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def installed(package: str, executable: str) -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return (Path(get_package_prefix(package)) / "lib" / package / executable).exists()
    except PackageNotFoundError:
        return False


def missing_publishers() -> dict[str, tuple[str, str]]:
    """The LATE_PUBLISHERS entries whose node is not installed: not in the graph today."""
    return {t: pe for t, pe in LATE_PUBLISHERS.items() if not installed(*pe)}


def policy_node(tmp: Path) -> dict[str, Any]:
    """The policy node on a proof-of-life model with end-effector actions: it drives the
    arm through the IK node, as a trained policy would, and publishes policy/path."""
    from armstack_policy.proof_models import ProofSpec, write_proof_model

    model = write_proof_model(tmp / "policy", ProofSpec(action_kind="ee"))
    return {"node": {"pkg": "armstack_policy", "exec": "policy_node", "name": "policy", "param": [
        {"from": str(REPO / "config/policy.yaml")},
        {"name": "model_path", "value": str(model.path)},
        {"name": "start_running", "value": True}]}}


def graph_launch_file(tmp: Path, servo_link: str) -> Path:
    """sim + perception + motion (driver, IK, state publisher) + the policy once installed."""
    entities = [
        {"include": {"file": str(REPO / "launch/sim.launch.yaml"), "arg": [
            {"name": "seed", "value": "3"}, {"name": "camera_rate", "value": "10.0"},
            {"name": "servo_port_link", "value": servo_link}]}},
        {"include": {"file": str(REPO / "launch/perception.launch.yaml"), "arg": [
            {"name": "camera", "value": "sim"},
            {"name": "detector_model", "value": tiny_detector(tmp / "center_box.onnx")}]}},
        {"include": {"file": str(REPO / "launch/motion.launch.yaml"), "arg": [
            {"name": "servo_port", "value": servo_link},
            {"name": "driver_reply_margin_ms", "value": "100.0"},
            {"name": "driver_read_retries", "value": "10"}]}},
    ]
    if installed(*LATE_PUBLISHERS["/policy/path"]):
        entities.append(policy_node(tmp))
    path = tmp / "monitoring_graph.launch.yaml"
    path.write_text(yaml.safe_dump({"launch": entities}, sort_keys=False))
    return path


def message_class(type_name: str) -> Any:
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def qos_profile(qos: Qos) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
        reliability=ReliabilityPolicy[qos.reliability.upper()],
        durability=DurabilityPolicy[qos.durability.upper()],
    )


@dataclass
class LiveGraph:
    topics: dict[str, LayoutTopic]
    advertised: dict[str, list[str]]  # topic -> types, from get_topic_names_and_types()
    received: dict[str, deque]  # topic -> latest messages, from any of its layout QoS
    counts: dict[tuple[str, Qos], int]  # messages per topic and layout QoS
    tf_parents: dict[str, str]  # child frame -> parent frame, from /tf and /tf_static
    log: str


def _wait_types(observer: Observer, wanted: set[str], timeout: float) -> dict[str, list[str]]:
    advertised: dict[str, list[str]] = {}

    def all_advertised() -> bool:
        advertised.clear()
        advertised.update(dict(observer.node.get_topic_names_and_types()))
        return wanted <= set(advertised)

    try:
        observer.spin_until(all_advertised, timeout, "the layout topics to be advertised")
    except TimeoutError:
        pass  # the per-topic tests say which are missing
    return advertised


def command_current_pose(node: Any) -> None:
    """Command the pose the arm is in (sim/ee_pose) on ee_command at 10 Hz, as a policy would:
    the IK node publishes joint_command for the driver, and the arm holds still."""
    from armstack_interfaces.msg import EndEffectorCommand
    from geometry_msgs.msg import PoseStamped

    latest: dict[str, PoseStamped] = {}
    node.create_subscription(
        PoseStamped, "sim/ee_pose", lambda m: latest.__setitem__("ee", m), 10)
    pub = node.create_publisher(EndEffectorCommand, "ee_command", 10)

    def send() -> None:
        if "ee" in latest:
            msg = EndEffectorCommand(pose=latest["ee"].pose, gripper=0.02)
            msg.header.frame_id = "base_link"
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)

    node.create_timer(0.1, send)


def _enough(topic: str, messages: deque) -> bool:
    if topic == "/robot_description":  # latched: one message, once
        return len(messages) >= 1
    if topic == "/objects/markers":  # localization confirms a track after a few frames
        return any(msg.markers for msg in messages)
    return len(messages) >= 2


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LiveGraph:
    pytest.importorskip("rclpy")
    from tf2_msgs.msg import TFMessage

    os.environ["ROS_DOMAIN_ID"] = str(unique_domain_id())
    tmp = tmp_path_factory.mktemp("monitoring")
    link = str(tmp / "servo_bus")
    graph = LaunchedGraph(str(graph_launch_file(tmp, link)), log_path=tmp / "launch.log")
    observer = Observer("layout_observer")
    topics = layout_topics()
    received: dict[str, deque] = {t: deque(maxlen=20) for t in topics}
    counts = {(t, q): 0 for t, entry in topics.items() for q in entry.qos}

    def store(msg: Any, topic: str, qos: Qos) -> None:
        received[topic].append(msg)
        counts[(topic, qos)] += 1

    tf_parents: dict[str, str] = {}
    try:
        expected = set(topics) - set(missing_publishers())
        advertised = _wait_types(observer, expected, timeout=40.0)
        for topic, entry in topics.items():
            types = advertised.get(topic, [])
            if len(types) != 1:
                continue
            for qos in entry.qos:  # one subscription per viewer's QoS
                observer.node.create_subscription(
                    message_class(types[0]), topic,
                    lambda m, t=topic, q=qos: store(m, t, q), qos_profile(qos))

        def on_tf(msg: TFMessage) -> None:
            tf_parents.update({t.child_frame_id: t.header.frame_id for t in msg.transforms})

        observer.node.create_subscription(TFMessage, "/tf", on_tf, qos_profile(Qos(depth=100)))
        observer.node.create_subscription(
            TFMessage, "/tf_static", on_tf, qos_profile(Qos("reliable", "transient_local", 100)))
        if not installed(*LATE_PUBLISHERS["/policy/path"]):
            command_current_pose(observer.node)  # else the policy commands the arm
        frames = rviz_frames(yaml.safe_load(RVIZ_FILE.read_text()))

        def tf_has_frames() -> bool:  # static transforms of late-starting nodes come last
            return frames <= set(tf_parents) | set(tf_parents.values())

        try:
            observer.spin_until(
                lambda: all(_enough(t, received[t]) for t in expected)
                and all(counts[(t, q)] for t, q in counts if t in expected) and tf_has_frames(),
                timeout=30.0, what="messages on every layout topic and the layout's TF frames")
        except TimeoutError:
            pass
        advertised = dict(observer.node.get_topic_names_and_types())
        yield LiveGraph(topics, advertised, received, counts, tf_parents, graph.log())
    finally:
        observer.close()
        graph.stop()


def _live_reason(live: LiveGraph, topic: str) -> str:
    return f"{topic} (shown by {', '.join(live.topics[topic].sources)})"


@pytest.mark.parametrize("topic", sorted(layout_topics()))
def test_layout_topic_is_live(live: LiveGraph, topic: str):
    entry = live.topics[topic]
    missing = missing_publishers()
    if topic in missing:
        package, executable = missing[topic]
        assert topic not in live.advertised, (
            f"{topic} is published although {package}/{executable} is not installed: "
            "update LATE_PUBLISHERS")
        pytest.xfail(f"{package}/{executable} is not installed yet: nothing publishes {topic}")
    types = live.advertised.get(topic)
    assert types, f"{_live_reason(live, topic)} is not advertised; launch log:\n{live.log[-3000:]}"
    assert entry.msg_type in (None, *types) and len(types) == 1, (
        f"{_live_reason(live, topic)}: layout expects {entry.msg_type}, graph has {types}")
    for qos in entry.qos:
        assert live.counts[(topic, qos)], (
            f"{_live_reason(live, topic)}: no message reached a subscriber with the layout's "
            f"{qos}; launch log:\n{live.log[-3000:]}")
    for path in entry.fields:
        assert np.isfinite(plotted_field(live.received[topic][-1], path)), f"{topic}/{path}"


def test_plots_compare_each_joint_with_its_own_command(live: LiveGraph):
    """rqt_plot picks array elements by index: /joint_states/position[i] and
    /joint_command/position[i] in one plot must be the same joint in both messages."""
    states, commands = live.received["/joint_states"], live.received["/joint_command"]
    assert states and commands, "joint_states or joint_command never arrived"
    def indices(topic: str) -> set[int]:
        return {int(p.partition("[")[2].rstrip("]")) for p in live.topics[topic].fields}

    assert indices("/joint_states") == indices("/joint_command")
    for i in sorted(indices("/joint_states")):
        assert states[-1].name[i] == commands[-1].name[i], (
            f"position[{i}] is {states[-1].name[i]} in joint_states but {commands[-1].name[i]} "
            "in joint_command")


def _root(frame: str, parents: dict[str, str]) -> str:
    seen = {frame}
    while frame in parents:
        frame = parents[frame]
        assert frame not in seen, f"TF cycle through {frame}"
        seen.add(frame)
    return frame


def test_layout_frames_are_in_the_tf_tree(live: LiveGraph):
    doc = yaml.safe_load(RVIZ_FILE.read_text())
    fixed = doc["Visualization Manager"]["Global Options"]["Fixed Frame"]
    known = set(live.tf_parents) | set(live.tf_parents.values())
    for frame in sorted(rviz_frames(doc)):
        assert frame in known, f"rviz names frame {frame}; TF has {sorted(known)}"
        assert _root(frame, live.tf_parents) == _root(fixed, live.tf_parents) == fixed, (
            f"{frame} is not connected to the fixed frame {fixed}")


def test_frames_of_displayed_messages_resolve_to_the_fixed_frame(live: LiveGraph):
    """rviz draws markers and paths only when their header frame reaches the fixed frame."""
    frames = {m.header.frame_id for msg in live.received["/objects/markers"] for m in msg.markers}
    frames |= {msg.header.frame_id for msg in live.received.get("/policy/path", [])}
    assert frames, "no marker arrived (empty MarkerArrays only?)"
    for frame in frames:
        assert _root(frame, live.tf_parents) == "base_link", f"{frame} does not reach base_link"
