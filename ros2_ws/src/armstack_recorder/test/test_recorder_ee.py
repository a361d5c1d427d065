"""The recorder launched with action_source:=ee_command and neither objects nor images: the
action is the end-effector command (x y z qx qy qz qw gripper, qw >= 0) and the dataset has
only observation.state and action."""

from __future__ import annotations

import numpy as np
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
from armstack_recorder.validate import validate_dataset

FPS = 50


def test_ee_commands_are_the_action(launch_recorder, probe, tmp_path):
    from armstack_interfaces.msg import EndEffectorCommand

    root = tmp_path / "ds"
    node = launch_recorder(root, fps=FPS, action_source="ee_command", objects_topic="",
                           record_images=False, max_timing_error=0.5)
    sent: list[int] = []
    pub = probe.node.create_publisher(EndEffectorCommand, "ee_command", 10)

    def send() -> None:
        msg = EndEffectorCommand()
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        msg.header.frame_id = "base_link"
        msg.pose.position.x, msg.pose.position.z = float(len(sent)), 0.2
        # the same rotation as (0, 0, 0.6, 0.8), from the other hemisphere
        msg.pose.orientation.z, msg.pose.orientation.w = -0.6, -0.8
        msg.gripper = 0.015
        sent.append(len(sent))
        pub.publish(msg)

    probe.node.create_timer(1.0 / FPS, send)
    probe.wait_ready(node, streams=("state",))
    probe.trigger("recorder/start", node)
    probe.spin_for(1.0)
    probe.trigger("recorder/save", node)

    reader = LeRobotDatasetReader(root)
    assert reader.features["action"]["names"] == ["x", "y", "z", "qx", "qy", "qz", "qw",
                                                  "gripper"]
    assert "observation.environment_state" not in reader.features and not reader.video_keys
    action = reader.episode_data(0)["action"]  # (N, 8)
    assert len(action) >= 0.8 * FPS
    np.testing.assert_allclose(action[:, 1:], np.tile([0, 0.2, 0, 0, 0.6, 0.8, 0.015],
                                                      (len(action), 1)), atol=1e-6)
    assert np.all(np.diff(action[:, 0]) >= 0) and action[-1, 0] < len(sent)
    report = validate_dataset(root)
    assert report.ok, report.format()
    assert node.stop() == 0
