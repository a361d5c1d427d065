"""The state publisher launched for real: tf from joint_states equals the forward kinematics,
fixed joints and the URDF arrive latched, the mimic finger follows its master."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import urdf_path

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def matrix(transform) -> np.ndarray:
    t, r = transform.translation, transform.rotation
    x, y, z, w = r.x, r.y, r.z, r.w
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = (t.x, t.y, t.z)
    return m


@pytest.fixture(scope="module")
def received(launch_node, probe) -> dict:
    """Starts the node, subscribes late (latched topics must still arrive), records."""
    node = launch_node("state_publisher")
    got: dict = {"tf": []}
    n = probe.node
    n.create_subscription(TFMessage, "/tf", lambda m: got["tf"].append(m), 100)
    n.create_subscription(TFMessage, "/tf_static", lambda m: got.__setitem__("static", m), LATCHED)
    n.create_subscription(
        String, "robot_description", lambda m: got.__setitem__("description", m.data), LATCHED
    )
    pub = n.create_publisher(JointState, "joint_states", 10)
    probe.spin_until(lambda: pub.get_subscription_count() > 0, 30.0, "the state publisher", node)
    probe.spin_until(lambda: "static" in got and "description" in got, 10.0, "latched topics", node)
    got["node"], got["pub"] = node, pub
    return got


def publish_and_wait(probe, received: dict, names: list[str], positions: list[float]):
    msg = JointState()
    msg.header.stamp = probe.now_msg()
    msg.header.stamp.nanosec = (msg.header.stamp.nanosec // 1000) * 1000 + 7  # recognisable
    msg.name, msg.position = names, positions
    stamp = msg.header.stamp

    def answered():
        return any(m.transforms and m.transforms[0].header.stamp == stamp for m in received["tf"])

    for _ in range(20):  # joint_states is not latched: resend until answered
        received["pub"].publish(msg)
        try:
            probe.spin_until(answered, 0.25, "tf for the joint state", received["node"])
            break
        except TimeoutError:
            pass
    assert answered(), received["node"].log()
    return next(m for m in received["tf"] if m.transforms[0].header.stamp == stamp)


def test_robot_description_is_the_urdf_text(received: dict):
    assert received["description"] == urdf_path().read_text()


def test_static_tf_holds_the_fixed_ee_joint(received: dict):
    (edge,) = received["static"].transforms
    assert (edge.header.frame_id, edge.child_frame_id) == ("gripper_link", "ee_link")
    expected = np.eye(4)
    expected[0, 3] = 0.08
    np.testing.assert_allclose(matrix(edge.transform), expected, atol=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_tf_chain_equals_forward_kinematics_and_fingers_mirror(probe, received: dict, seed: int):
    kin = ArmKinematics(urdf_path())
    q = kin.random_configuration(np.random.default_rng(seed))
    finger = 0.011 + 0.01 * seed / 5
    tf = publish_and_wait(probe, received, [*ARM, "left_finger"], [*q.tolist(), finger])
    edges = {t.child_frame_id: t for t in [*tf.transforms, *received["static"].transforms]}
    assert set(edges) == {
        "shoulder_link",
        "upper_arm_link",
        "upper_forearm_link",
        "lower_forearm_link",
        "wrist_link",
        "gripper_link",
        "left_finger_link",
        "right_finger_link",
        "ee_link",
    }
    pose, link = np.eye(4), "ee_link"
    while link != "base_link":
        pose = matrix(edges[link].transform) @ pose
        link = edges[link].header.frame_id
    np.testing.assert_allclose(pose, kin.fk(q), atol=1e-9)
    left = edges["left_finger_link"].transform.translation
    right = edges["right_finger_link"].transform.translation
    assert (left.y, right.y) == (pytest.approx(finger), pytest.approx(-finger))
