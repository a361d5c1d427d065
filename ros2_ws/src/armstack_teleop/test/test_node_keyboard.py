"""teleop_node launched for real with the keyboard source: episode services with no terminal, and
keys typed into a pseudo-terminal that is the node's stdin (raw mode, as a person's terminal)."""

from __future__ import annotations

import os
import termios

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("armstack_interfaces.msg")
from armstack_interfaces.msg import EndEffectorCommand, EpisodeStatus
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import config_file, urdf_path

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
Q = np.array([0.2, -0.5, 0.4, 0.0, 1.0, 0.1])
GRIPPER = 0.021
LATCHED = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class Arm:
    """Probe side: an arm holding still at Q, and recorders of what the node publishes."""

    def __init__(self, probe, ns: str = "") -> None:
        self.probe = probe
        self.commands: list[EndEffectorCommand] = []
        self.statuses: list[EpisodeStatus] = []
        self.diagnostics: list = []
        n = probe.node
        self.state_pub = n.create_publisher(JointState, f"{ns}joint_states", 10)
        n.create_subscription(EndEffectorCommand, f"{ns}ee_command", self.commands.append, 10)
        n.create_subscription(EpisodeStatus, f"{ns}teleop/episode", self.statuses.append, LATCHED)
        n.create_subscription(DiagnosticArray, f"{ns}diagnostics", self._on_diagnostics, 10)
        self.timer = n.create_timer(0.02, self._publish)
        self.services = {name: n.create_client(Trigger, f"{ns}teleop/{name}")
                         for name in ("start_episode", "save_episode", "discard_episode", "end_session")}

    def _publish(self) -> None:
        msg = JointState(name=[*ARM, "left_finger"], position=[*Q.tolist(), GRIPPER])
        msg.header.stamp = self.probe.now_msg()
        self.state_pub.publish(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.diagnostics += [s for s in msg.status if s.name.endswith(": teleop")]

    def position(self, k: int = -1) -> np.ndarray:
        p = self.commands[k].pose.position
        return np.array([p.x, p.y, p.z])

    def close(self) -> None:
        self.probe.node.destroy_timer(self.timer)


def state(status: EpisodeStatus) -> tuple:
    return status.state, status.take, status.saved, status.discarded, status.episode_index


def test_services_control_the_episodes(launch_node, probe) -> None:
    arm = Arm(probe)
    node = launch_node("--params-file", str(config_file("teleop.yaml")), "-p", "num_episodes:=5")
    probe.spin_until(lambda: len(arm.commands) >= 10, 30.0, "ee_command", node)
    expected = ArmKinematics(urdf_path()).fk(Q)
    np.testing.assert_allclose(arm.position(), expected[:3, 3], atol=1e-6)  # holds the arm where it is
    assert arm.commands[-1].gripper == pytest.approx(GRIPPER)
    assert arm.commands[-1].header.frame_id == "base_link"
    count = len(arm.commands)
    probe.spin_for(1.0)
    assert 30 <= len(arm.commands) - count <= 60  # 50 Hz, with room for a loaded CI machine

    def call(name: str, success: bool, state_after: tuple) -> None:
        answer = probe.call(arm.services[name], Trigger.Request(), node)
        assert answer.success is success, answer.message
        probe.spin_until(lambda: state(arm.statuses[-1]) == state_after, 5.0, f"state {state_after}", node)

    call("save_episode", False, ("idle", 0, 0, 0, 0))
    call("start_episode", True, ("recording", 1, 0, 0, 0))
    call("start_episode", False, ("recording", 1, 0, 0, 0))
    call("discard_episode", True, ("idle", 1, 0, 1, 0))
    call("start_episode", True, ("recording", 2, 0, 1, 0))
    call("save_episode", True, ("idle", 2, 1, 1, 1))
    assert arm.statuses[-1].summary == "episode 2/5 idle; take 2 saved (1 saved, 1 discarded)"
    assert arm.statuses[-1].target_episodes == 5

    # A subscriber that joins now gets the current state only (latched, depth 1).
    late: list[EpisodeStatus] = []
    probe.node.create_subscription(EpisodeStatus, "teleop/episode", late.append, LATCHED)
    probe.spin_until(lambda: late, 5.0, "the latched state", node)
    probe.spin_for(0.3)
    assert [state(s) for s in late] == [("idle", 2, 1, 1, 1)]

    probe.spin_until(lambda: arm.diagnostics, 5.0, "diagnostics", node)
    assert "stdin is not a terminal" in arm.diagnostics[-1].message

    # A live task change is published at once and carried by the next take.
    set_params = probe.node.create_client(SetParameters, "teleop/set_parameters")
    request = SetParameters.Request(parameters=[
        Parameter("task", value="put the red cube in the bin").to_parameter_msg()])
    assert probe.call(set_params, request, node).results[0].successful
    probe.spin_until(lambda: arm.statuses[-1].task == "put the red cube in the bin", 5.0, "the new task", node)
    call("start_episode", True, ("recording", 3, 1, 1, 1))
    assert arm.statuses[-1].task == "put the red cube in the bin"

    call("end_session", True, ("finished", 3, 1, 2, 1))  # the open take ends discarded
    assert node.wait(5.0) == 0, node.log()
    arm.close()


def test_recorder_verdicts_count_takes(launch_node, probe) -> None:
    """recorder_confirms: a take the recorder reports not kept is redone; the session ends
    (and the node exits) once the target is saved and confirmed."""
    import json

    from std_msgs.msg import String

    arm = Arm(probe, "/rc/")
    reports = probe.node.create_publisher(String, "/rc/recorder/episode_report", LATCHED)
    node = launch_node("--params-file", str(config_file("teleop.yaml")), "-r", "__ns:=/rc",
                       "-p", "num_episodes:=1", "-p", "recorder_confirms:=true")
    probe.spin_until(lambda: arm.statuses, 30.0, "the episode state", node)

    def call(name: str, state_after: tuple) -> None:
        assert probe.call(arm.services[name], Trigger.Request(), node).success
        probe.spin_until(lambda: state(arm.statuses[-1]) == state_after, 5.0, f"state {state_after}", node)

    def report(take: int, outcome: str) -> None:
        reports.publish(String(data=json.dumps({"outcome": outcome, "owner": f"teleop take {take}"})))

    call("start_episode", ("recording", 1, 0, 0, 0))
    call("save_episode", ("idle", 1, 1, 0, 1))  # the target, but not confirmed: no exit
    assert arm.statuses[-1].summary.endswith("(1 saved, 0 discarded, 1 awaiting the recorder)")
    assert not probe.call(arm.services["start_episode"], Trigger.Request(), node).success
    report(1, "discarded")
    probe.spin_until(lambda: state(arm.statuses[-1]) == ("idle", 1, 0, 1, 0), 5.0, "the redo", node)
    call("start_episode", ("recording", 2, 0, 1, 0))
    call("save_episode", ("idle", 2, 1, 1, 1))
    report(2, "saved")
    probe.spin_until(lambda: arm.statuses[-1].state == "finished", 5.0, "the end", node)
    assert node.wait(5.0) == 0, node.log()
    assert "the recorder did not keep take 1" in node.log()
    arm.close()


def test_keys_typed_in_the_terminal(launch_node, probe) -> None:
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    arm = Arm(probe, "/kb/")
    try:
        node = launch_node("--params-file", str(config_file("teleop.yaml")), "-r", "__ns:=/kb", stdin=slave)
        probe.spin_until(lambda: len(arm.commands) >= 5, 30.0, "ee_command", node)
        start = arm.position()
        os.write(master, b"\r")
        probe.spin_until(lambda: arm.statuses and arm.statuses[-1].state == "recording", 5.0, "recording", node)
        os.write(master, b"www\x1b[D")  # three steps forward, one to the left (arrow key)
        probe.spin_until(lambda: arm.position()[0] > start[0] + 0.014, 5.0, "the jog", node)
        probe.spin_for(0.1)
        np.testing.assert_allclose(arm.position() - start, [0.015, 0.005, 0.0], atol=1e-9)
        os.write(master, b" ")  # gripper toggle: 0.021 is more open than half -> closed
        probe.spin_until(lambda: arm.commands[-1].gripper == 0.0, 5.0, "the gripper closing", node)
        os.write(master, b"\x7f")
        probe.spin_until(lambda: arm.statuses[-1].outcome == "discarded", 5.0, "the discard", node)
        os.write(master, b"\x03")  # ctrl-c: ends the session, not a signal
        probe.spin_until(lambda: arm.statuses[-1].state == "finished", 5.0, "the end", node)
        assert node.wait(5.0) == 0, node.log()
        assert termios.tcgetattr(slave) == before  # the node gave the terminal back as it found it
        assert [s.state for s in arm.statuses] == ["idle", "recording", "idle", "finished"]
    finally:
        arm.close()
        os.close(master)
        os.close(slave)
