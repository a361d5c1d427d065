"""teleop_node launched for real with the expert source, against a fake simulator in the probe.

The probe plays sim, IK and driver at once: it answers sim/reset, publishes sim/ground_truth
(one cube) at 30 Hz and joint_states at 50 Hz, and servos perfectly: each ee_command goes
through IK into the joint state, so the node's FK of joint_states is where it commanded. A
closed gripper at the cube carries it; an opened one drops it. The session is two saved
takes, with the first take discarded by a service call halfway.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("armstack_interfaces.msg")
pytest.importorskip("vision_msgs.msg")
from armstack_interfaces.msg import EndEffectorCommand, EpisodeStatus
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import config_file, urdf_path
from armstack_common.timeutil import stamp_to_sec
from armstack_common.transforms import pose_matrix

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
CUBE = 0.03
BIN_CENTER, BIN_INNER, BIN_FLOOR = np.array([0.16, -0.27]), 0.13, 0.006
CUBE_SPOTS = [(0.25, 0.10), (0.30, -0.05), (0.22, 0.15), (0.28, 0.05)]


class FakeSim:
    def __init__(self, probe) -> None:
        self.probe = probe
        self.kin = ArmKinematics(urdf_path())
        self.q = np.array([0.0, -0.9, 0.6, 0.0, 1.4, 0.0])  # the simulator's home
        self.gripper = 0.035
        self.resets = 0
        self.cube = np.array([*CUBE_SPOTS[0], CUBE / 2])
        self.held: np.ndarray | None = None
        self.commands: list[tuple[float, EndEffectorCommand]] = []  # (received, msg)
        self.truth_stamps: set[tuple[int, int]] = set()
        self.statuses: list[EpisodeStatus] = []
        n = probe.node
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.state_pub = n.create_publisher(JointState, "joint_states", 10)
        self.truth_pub = n.create_publisher(Detection3DArray, "sim/ground_truth", 10)
        self._subscriptions = [
            n.create_subscription(EndEffectorCommand, "ee_command", self._on_command, 10),
            n.create_subscription(EpisodeStatus, "teleop/episode", self.statuses.append, latched)]
        self._service = n.create_service(Trigger, "sim/reset", self._on_reset)
        self.discard = n.create_client(Trigger, "teleop/discard_episode")
        self._timers = [n.create_timer(0.02, self._publish_state),
                        n.create_timer(1.0 / 30.0, self._publish_truth)]

    def close(self) -> None:
        """Leave the probe as it was: the next test's fake simulator is the only one."""
        n = self.probe.node
        for timer in self._timers:
            n.destroy_timer(timer)
        for sub in self._subscriptions:
            n.destroy_subscription(sub)
        n.destroy_service(self._service)
        n.destroy_client(self.discard)
        n.destroy_publisher(self.state_pub)
        n.destroy_publisher(self.truth_pub)

    def ee(self) -> np.ndarray:
        return self.kin.fk(self.q)

    def _on_command(self, msg: EndEffectorCommand) -> None:
        self.commands.append((self.probe.now(), msg))
        p, o = msg.pose.position, msg.pose.orientation
        target = pose_matrix(np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]))
        self.q = self.kin.ik(target, self.q).q
        self.gripper = msg.gripper
        ee = self.ee()[:3, 3]
        if self.held is None and self.gripper <= 0.005 and np.linalg.norm(self.cube - ee) < 0.02:
            self.held = self.cube - ee
        if self.held is not None and self.gripper > 0.01:
            self.held = None
            inside = np.all(np.abs(self.cube[:2] - BIN_CENTER) < BIN_INNER / 2)
            self.cube[2] = (BIN_FLOOR if inside else 0.0) + CUBE / 2
        if self.held is not None:
            self.cube = ee + self.held

    def _on_reset(self, _request, response):
        self.resets += 1
        self.cube = np.array([*CUBE_SPOTS[self.resets % len(CUBE_SPOTS)], CUBE / 2])
        self.held = None
        response.success, response.message = True, f"episode reset with seed {self.resets}"
        return response

    def _publish_state(self) -> None:
        msg = JointState(name=[*ARM, "left_finger", "right_finger"],
                         position=[*self.q.tolist(), self.gripper, self.gripper])
        msg.header.stamp = self.probe.now_msg()
        self.state_pub.publish(msg)

    def _publish_truth(self) -> None:
        array = Detection3DArray()
        array.header.stamp, array.header.frame_id = self.probe.now_msg(), "base_link"
        det = Detection3D(id="red_cube")
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = "red_cube", 1.0
        hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z = map(float, self.cube)
        hyp.pose.pose.orientation.w = 1.0
        det.results.append(hyp)
        det.bbox.size.x = det.bbox.size.y = det.bbox.size.z = CUBE
        array.detections.append(det)
        self.truth_stamps.add((array.header.stamp.sec, array.header.stamp.nanosec))
        self.truth_pub.publish(array)


def summary(status: EpisodeStatus) -> tuple:
    return status.state, status.take, status.saved, status.discarded, status.outcome


@pytest.fixture
def sim(probe):
    """A fake simulator for one test (the probe outlives it)."""
    fake = FakeSim(probe)
    yield fake
    fake.close()


def test_expert_session_end_to_end(launch_node, probe, sim) -> None:
    node = launch_node(
        "--params-file", str(config_file("teleop.yaml")),
        "-p", "source:=expert", "-p", "num_episodes:=2", "-p", "expert_linear_speed:=0.5",
        "-p", "expert_angular_speed:=3.0", "-p", "expert_settle_after_reset:=0.3",
        # The fake gripper moves at once: no need to wait for a servo.
        "-p", "expert_close_time:=0.3", "-p", "expert_open_time:=0.3",
    )
    probe.spin_until(lambda: any(s.state == "recording" for s in sim.statuses), 30.0, "the first take", node)
    probe.spin_for(0.5)
    answer = probe.call(sim.discard, Trigger.Request(), node)
    assert answer.success, answer.message
    probe.spin_until(lambda: sim.statuses[-1].state == "finished", 40.0, "the end of the session", node)
    assert node.wait(10.0) == 0, node.log()  # exit_on_end

    assert [summary(s) for s in sim.statuses] == [
        ("idle", 0, 0, 0, ""),
        ("recording", 1, 0, 0, ""),
        ("idle", 1, 0, 1, "discarded"),
        ("recording", 2, 0, 1, ""),
        ("idle", 2, 1, 1, "saved"),
        ("recording", 3, 1, 1, ""),
        ("finished", 3, 2, 1, "saved"),
    ]
    assert all(s.task == "put the cubes in the bin" and s.source == "expert" for s in sim.statuses)
    assert [s.episode_index for s in sim.statuses] == [0, 0, 0, 0, 1, 1, 2]
    assert sim.resets == 3  # one new scene before each take
    assert "episode reset with seed 3" in node.log()

    take2 = sim.statuses[3]
    start, end = stamp_to_sec(take2.take_start), stamp_to_sec(sim.statuses[4].take_end)
    during = [msg for t, msg in sim.commands if start <= t <= end]
    assert len(during) / (end - start) > 30.0  # the 50 Hz stream, with room for a loaded machine
    assert 2.0 < end - start < 20.0
    assert all(msg.header.frame_id == "base_link" for _, msg in sim.commands)
    # Each command carries the stamp of the ground-truth frame it was computed from.
    assert {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in sim.commands} <= sim.truth_stamps
    # Between the discard and the next take the expert is silent (reset, settle).
    discarded_at = stamp_to_sec(sim.statuses[2].take_end)
    gap = [t for t, _ in sim.commands if discarded_at + 0.05 < t < start - 0.05]
    assert gap == [] and start - discarded_at >= 0.3
    # The saved takes put the cube in the bin: it rests on the bin floor now.
    assert np.all(np.abs(sim.cube[:2] - BIN_CENTER) < BIN_INNER / 2) and sim.cube[2] < 0.05


def test_with_expert_noise_the_clean_command_goes_out_beside_the_executed_one(
        launch_node, probe, sim) -> None:
    """expert_noise_std: ee_command (executed) is the clean expert/clean_ee_command plus a
    millimetre offset, with the same stamp; both streams run through the take."""
    clean: list[EndEffectorCommand] = []
    sub = probe.node.create_subscription(EndEffectorCommand, "expert/clean_ee_command",
                                         clean.append, 10)
    try:
        node = launch_node(
            "--params-file", str(config_file("teleop.yaml")),
            "-p", "source:=expert", "-p", "num_episodes:=1", "-p", "expert_linear_speed:=0.5",
            "-p", "expert_angular_speed:=3.0", "-p", "expert_settle_after_reset:=0.3",
            "-p", "expert_close_time:=0.3", "-p", "expert_open_time:=0.3",
            "-p", "expert_noise_std:=0.003",
        )
        probe.spin_until(lambda: any(s.state == "finished" for s in sim.statuses), 40.0,
                         "the take", node)
        assert node.wait(10.0) == 0, node.log()
    finally:
        probe.node.destroy_subscription(sub)
    assert sim.statuses[-1].saved == 1  # the expert still finished its take from the noisy path

    def key(msg: EndEffectorCommand) -> tuple:
        return msg.header.stamp.sec, msg.header.stamp.nanosec, round(msg.gripper, 6)

    executed = {}
    for _, msg in sim.commands:
        executed.setdefault(key(msg), []).append(msg)

    def position(msg: EndEffectorCommand) -> np.ndarray:
        return np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])

    # Commands share a ground-truth stamp for a tick or two (50 Hz against 30 Hz): the executed
    # command of a clean one is the nearest of those with its stamp.
    offsets = [min((position(e) - position(msg) for e in executed[key(msg)]),
                   key=np.linalg.norm) for msg in clean if key(msg) in executed]
    assert len(clean) > 50 and len(offsets) > 0.9 * len(clean)
    offsets = np.abs(np.array(offsets))
    assert 0.0005 < offsets.max() < 0.02
