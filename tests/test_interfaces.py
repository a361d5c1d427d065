"""The interface packages built by setup.sh: wire compatibility and round trips.

vision_msgs and tf2_msgs are built from ros2_ws/src/msgs_compat where no upstream package is
installed. They must be the same types as upstream ROS 2 Jazzy's: the RIHS01 type hash covers
every field's name, type and order, is announced in discovery, and is what rmw_zenoh matches on
and rosbag2 records. The hash is read from the running middleware (what our publisher
announces), not recomputed, so a changed field, type or order in our .msg files fails here.

Upstream hashes (facts, REP-2011 RIHS01): computed with the Jazzy rosidl_generator_type_description
(4.6.6) from the upstream .msg files at ros-perception/vision_msgs tag 4.1.1 (the Jazzy release)
and ros2/geometry2 tag 0.36.4 (tf2_msgs, Jazzy); every value equals the one in rosidl code
generated from upstream vision_msgs 4.1.x / tf2_msgs in public Jazzy workspaces.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message

UPSTREAM_JAZZY_HASHES: dict[str, str] = {
    "vision_msgs/msg/Point2D":
        "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "vision_msgs/msg/Pose2D":
        "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "vision_msgs/msg/BoundingBox2D":
        "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "vision_msgs/msg/BoundingBox3D":
        "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "vision_msgs/msg/ObjectHypothesis":
        "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "vision_msgs/msg/Detection2D":
        "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "vision_msgs/msg/Detection2DArray":
        "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection3D":
        "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/Detection3DArray":
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "tf2_msgs/msg/TFMessage":
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
}


def _import_type(type_name: str) -> type:
    """'pkg/msg/Name' -> the generated Python class."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    # Own context: the test neither needs nor disturbs a global rclpy.init of other tests.
    context = rclpy.Context()
    rclpy.init(context=context)
    n = rclpy.create_node(f"test_interfaces_{os.getpid()}", context=context)
    try:
        yield n
    finally:
        n.destroy_node()
        rclpy.shutdown(context=context)


def announced_hash(node: Node, msg_type: type, topic: str) -> str:
    """The type hash our own publisher of `msg_type` announces on `topic`."""
    publisher = node.create_publisher(msg_type, topic, 1)
    try:
        # Filter on our node: another process on the same domain may use the topic name.
        infos = [i for i in node.get_publishers_info_by_topic(topic)
                 if i.node_name == node.get_name()]
        assert len(infos) == 1, infos
        return str(infos[0].topic_type_hash)
    finally:
        node.destroy_publisher(publisher)


@pytest.mark.parametrize("type_name", sorted(UPSTREAM_JAZZY_HASHES))
def test_type_hash_matches_upstream_jazzy(node: Node, type_name: str) -> None:
    msg_type = _import_type(type_name)
    topic = "test_interfaces/" + type_name.replace("/", "_")
    assert announced_hash(node, msg_type, topic) == UPSTREAM_JAZZY_HASHES[type_name]


def test_detection_array_round_trip() -> None:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = "cube"
    hyp.hypothesis.score = 0.87
    det = Detection2D(id="7", results=[hyp])
    det.bbox.center.position.x = 320.5
    det.bbox.center.theta = 0.25
    det.bbox.size_x = 40.0
    msg = Detection2DArray(detections=[det])
    msg.header.frame_id = "camera_color_optical_frame"
    msg.header.stamp.sec = 12

    back = deserialize_message(serialize_message(msg), Detection2DArray)

    assert back == msg


def test_end_effector_command_fields() -> None:
    from armstack_interfaces.msg import EndEffectorCommand

    assert EndEffectorCommand.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "pose": "geometry_msgs/Pose",
        "gripper": "double",
    }


def test_action_chunk_fields_and_round_trip() -> None:
    from armstack_interfaces.msg import ActionChunk

    assert ActionChunk.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "period": "double",
        "horizon": "uint32",
        "dim": "uint32",
        "names": "sequence<string>",
        "data": "sequence<double>",
    }
    names = ["waist", "shoulder", "left_finger"]
    horizon = 4
    data = [0.01 * k + j for k in range(horizon) for j in range(len(names))]  # (horizon, dim)
    msg = ActionChunk(period=0.02, horizon=horizon, dim=len(names), names=names, data=data)
    msg.header.stamp.nanosec = 5

    back = deserialize_message(serialize_message(msg), ActionChunk)

    assert back.names == names
    assert list(back.data) == data
    assert (back.horizon, back.dim, back.period) == (horizon, len(names), 0.02)

