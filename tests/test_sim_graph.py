"""The simulator as the rest of the stack sees it: launched with armstack's launcher,
read over DDS from a separate rclpy process, its servo bus driven with the real
dynamixel_sdk over the pseudo-terminal."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from graph import LaunchedGraph, Observer, unique_domain_id

pytest.importorskip("rclpy")
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from armstack_common import paths  # noqa: E402
from armstack_common.transforms import invert, pose_matrix  # noqa: E402
from armstack_sim.world import load_calibration  # noqa: E402

COLOR, DEPTH, INFO = (
    "camera/color/image_raw", "camera/aligned_depth_to_color/image_raw", "camera/color/camera_info",
)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    os.environ["ROS_DOMAIN_ID"] = str(unique_domain_id())
    link = str(tmp_path_factory.mktemp("bus") / "servo_bus")
    graph = LaunchedGraph("launch/sim.launch.yaml", "seed:=3", f"servo_port_link:={link}",
                          log_path=tmp_path_factory.mktemp("log") / "launch.log")
    observer = Observer()
    for topic in (COLOR, DEPTH):
        observer.subscribe(Image, topic, qos_profile_sensor_data)
    observer.subscribe(CameraInfo, INFO, qos_profile_sensor_data)
    observer.subscribe(Detection3DArray, "sim/ground_truth")
    observer.subscribe(TFMessage, "/tf_static", LATCHED)
    observer.subscribe(String, "sim/servo_port", LATCHED)
    try:
        observer.spin_until(
            lambda: all(observer.counts.get(t, 0) >= 3 for t in (COLOR, DEPTH, INFO, "sim/ground_truth"))
            and "/tf_static" in observer.latest and "sim/servo_port" in observer.latest,
            timeout=60.0, what="the simulator's topics",
        )
    except TimeoutError:
        observer.close()
        graph.stop()
        raise AssertionError(f"simulator did not publish; launch log:\n{graph.log()}")
    yield graph, observer, link
    observer.close()
    assert graph.stop() == 0, graph.log()


def test_camera_topics_have_real_camera_encodings(sim):
    _, obs, _ = sim
    calib = load_calibration(paths.config_file("camera/calibration.yaml"))
    color, depth, info = obs.latest[COLOR], obs.latest[DEPTH], obs.latest[INFO]
    assert (color.encoding, color.width, color.height, color.step) == ("rgb8", calib.width, calib.height, 3 * calib.width)
    assert (depth.encoding, depth.width, depth.height, depth.step) == ("16UC1", calib.width, calib.height, 2 * calib.width)
    assert color.header.frame_id == depth.header.frame_id == info.header.frame_id == calib.frame_id
    assert np.allclose(np.reshape(info.k, (3, 3)), calib.k)
    stamp = lambda m: m.header.stamp.sec + m.header.stamp.nanosec * 1e-9  # noqa: E731
    assert abs(stamp(color) - time.time()) < 5.0, "frames must carry wall-clock capture time"


def test_tf_static_carries_calibrated_camera_pose(sim):
    _, obs, _ = sim
    calib = load_calibration(paths.config_file("camera/calibration.yaml"))
    [tf] = [t for t in obs.latest["/tf_static"].transforms if t.child_frame_id == calib.frame_id]
    assert tf.header.frame_id == "base_link"
    tr, rot = tf.transform.translation, tf.transform.rotation
    pose = pose_matrix([tr.x, tr.y, tr.z], [rot.x, rot.y, rot.z, rot.w])
    assert np.allclose(pose, calib.pose, atol=1e-6)


def test_depth_at_each_object_matches_its_true_distance(sim):
    _, obs, _ = sim
    calib = load_calibration(paths.config_file("camera/calibration.yaml"))
    depth_msg = obs.latest[DEPTH]
    depth_mm = np.frombuffer(bytes(depth_msg.data), dtype=np.uint16).reshape(depth_msg.height, depth_msg.width)
    cam_from_base = invert(calib.pose)
    truth = obs.latest["sim/ground_truth"].detections
    assert len(truth) >= 3
    for det in truth:
        p = det.results[0].pose.pose.position
        top = np.array([p.x, p.y, p.z + det.bbox.size.z / 2.0, 1.0])  # centre of the top face
        u, v, _ = calib.project(top[:3])[0]
        z_true = (cam_from_base @ top)[2]
        z_read = depth_mm[int(round(v)), int(round(u))] / 1000.0
        assert abs(z_read - z_true) < 0.005, f"{det.id}: depth {z_read:.4f} m, true {z_true:.4f} m"


def test_servo_bus_answers_the_real_dynamixel_sdk(sim):
    from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

    from armstack_common.servo_config import load_servo_config

    _, obs, link = sim
    config = load_servo_config(paths.config_file("robot/dynamixel.yaml"), paths.urdf_path())
    assert obs.latest["sim/servo_port"].data == link
    port, packets = PortHandler(link), PacketHandler(2.0)
    assert port.openPort() and port.setBaudRate(config.baudrate)
    try:
        for joint in config.joints:
            model, result, error = packets.ping(port, joint.servo_id)
            assert result == COMM_SUCCESS and error == 0, f"ping id {joint.servo_id}"
            assert model == joint.model.model_number
        reader = GroupSyncRead(port, packets, 132, 4)  # Present Position
        for servo_id in config.ids:
            assert reader.addParam(servo_id)

        def present() -> np.ndarray:
            assert reader.txRxPacket() == COMM_SUCCESS
            return np.array([reader.getData(i, 132, 4) for i in config.ids], dtype=np.int64)

        start = present()
        waist = config.joints[0]
        goal = int(start[0]) + 300  # ~0.46 rad
        assert packets.write1ByteTxRx(port, waist.servo_id, 64, 1)[0] == COMM_SUCCESS  # torque on
        assert packets.write4ByteTxRx(port, waist.servo_id, 116, goal)[0] == COMM_SUCCESS
        deadline = time.monotonic() + 10.0
        settled = 0  # consecutive reads near the goal: arrived, not passing through
        while settled < 5:
            assert time.monotonic() < deadline, f"waist stuck at {present()[0]}, goal {goal}"
            settled = settled + 1 if abs(present()[0] - goal) <= 10 else 0
            time.sleep(0.05)
        others = np.delete(present() - start, 0)
        assert np.all(np.abs(others[:-1]) <= 10), f"other arm joints moved: {others}"
    finally:
        port.closePort()
