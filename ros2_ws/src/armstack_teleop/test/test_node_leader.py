"""teleop_node launched for real with the leader source, reading a second emulated Dynamixel bus
(armstack_sim's emulator on a pty, the real dynamixel_sdk in the node) whose positions the test sets."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState

from armstack_common.paths import config_file, urdf_path
from armstack_common.servo_config import load_servo_config
from armstack_sim.dynamixel_bus import DynamixelBusEmulator

JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]
POSE_A = np.array([0.3, -0.6, 0.5, 0.0, 1.0, -0.2, 0.03])
POSE_B = np.array([-0.2, -0.3, 0.2, 0.4, 0.8, 0.5, 0.01])
MAX_SPEED = 2.0  # rad/s


def test_leader_arm_drives_joint_command(launch_node, probe) -> None:
    leader = load_servo_config(config_file("robot/leader_dynamixel.yaml"), urdf_path())
    commands: list[JointState] = []
    errors: list[str] = []
    probe.node.create_subscription(JointState, "joint_command", commands.append, 10)
    probe.node.create_subscription(
        DiagnosticArray, "diagnostics",
        lambda msg: errors.extend(s.message for s in msg.status if s.level == b"\x02"), 10)
    with DynamixelBusEmulator(leader) as bus:
        bus.set_present_array(leader.joint_to_ticks(POSE_A), 0.0, 0.0)
        node = launch_node("--params-file", str(config_file("teleop.yaml")), "-p", "source:=leader",
                           "-p", f"leader_port:={bus.port_path}", "-p", f"leader_max_speed:={MAX_SPEED}",
                           "-p", "diagnostics_period:=0.2", "-p", "device_retry_period:=0.5")
        probe.spin_until(lambda: len(commands) >= 5, 30.0, "joint_command", node)
        assert list(commands[-1].name) == JOINTS
        np.testing.assert_allclose(commands[-1].position, POSE_A, atol=1e-3)

        # The operator moves the leader: the follower command follows at most MAX_SPEED.
        count = len(commands)
        bus.set_present_array(leader.joint_to_ticks(POSE_B), 0.0, 0.0)
        probe.spin_until(lambda: np.allclose(commands[-1].position, POSE_B, atol=1e-3), 5.0, "pose B", node)
        moving = np.array([c.position for c in commands[count - 1:]])  # (N, 7)
        stamps = np.array([c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in commands[count - 1:]])
        rate = np.abs(np.diff(moving[:, :6], axis=0)) / np.diff(stamps)[:, None]
        assert MAX_SPEED * 0.7 <= rate.max() <= MAX_SPEED * 1.3  # at the limit, give or take timer jitter
        # The largest move (wrist_rotate, 0.7 rad) takes 0.35 s at the limit: ~17 commands at 50 Hz.
        travel = np.abs(POSE_B - POSE_A)[:6].max() / MAX_SPEED
        assert len(moving) >= 0.9 * travel / 0.02

        # The leader's bus goes silent: commands stop and diagnostics say why; then it comes back.
        for servo_id in leader.ids:
            bus.set_connected(servo_id, False)
        probe.spin_until(lambda: any("no reply" in e for e in errors), 10.0, "the bus error", node)
        count = len(commands)
        probe.spin_for(0.3)
        assert len(commands) == count
        for servo_id in leader.ids:
            bus.set_connected(servo_id, True)
        bus.set_present_array(leader.joint_to_ticks(POSE_A), 0.0, 0.0)
        probe.spin_until(lambda: np.allclose(commands[-1].position, POSE_A, atol=1e-3), 10.0, "recovery", node)
        assert "leader arm on" in node.log()
        node.stop()
