"""ik node: `ee_command` + `joint_states` in, `joint_command` out (ROS wiring of IKController).

Each joint_command carries the header stamp of the ee_command it answers (the camera frame's
stamp, carried forward for the driver's camera-to-command latency) and names all commanded
joints: the arm chain and the gripper joint (left_finger; right_finger mimics it).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from armstack_common.node_main import run_node
from armstack_common.diagnostics import to_msg
from armstack_common.params import NodeParameters
from armstack_common.paths import urdf_path
from armstack_common.timeutil import stamp_to_sec
from armstack_interfaces.msg import EndEffectorCommand
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState

from .controller import EECommand, IKController, Outcome
from .ik_stats import IKStats
from .node_config import IK_NODE_PARAMS, IKNodeConfig, ik_node_config

# Reliable, keep-last 10 on every topic: the QoS of rclpy's defaults and `ros2 topic pub`,
# so any publisher of ee_command / joint_states and any joint_command subscriber match.
_QOS_DEPTH = 10


class IKNode(Node):
    def __init__(self) -> None:
        super().__init__("ik")
        self._controller: IKController | None = None
        self._params = NodeParameters(
            self, IK_NODE_PARAMS, validate=self._validate, on_update=self._on_update
        )
        cfg: IKNodeConfig = self._params.config
        self._controller = IKController(cfg.urdf_path or urdf_path(), cfg.ik, cfg.controller)
        self._stats = IKStats(cfg.solve_limits)
        self._per_command = cfg.publish_mode == "per_command"
        self._last_stamp: Time | None = None  # of the last command that was not rejected
        self._command_pub = self.create_publisher(JointState, "joint_command", _QOS_DEPTH)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "diagnostics", _QOS_DEPTH)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, _QOS_DEPTH)
        self.create_subscription(EndEffectorCommand, "ee_command", self._on_command, _QOS_DEPTH)
        if not self._per_command:
            self.create_timer(1.0 / cfg.timer_rate, self._on_timer)
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"ik ready: joints {', '.join(self._controller.joint_names)}, mode {cfg.publish_mode}, "
            f"velocity scale {cfg.controller.velocity_scale}"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _validate(self, values: dict) -> IKNodeConfig:
        cfg = ik_node_config(values)
        if self._controller is not None:  # at start the controller's constructor checks
            self._controller.check_config(cfg.controller, cfg.ik)
        return cfg

    def _on_update(self, values: dict) -> None:
        cfg: IKNodeConfig = self._params.config
        self._controller.reconfigure(cfg.ik, cfg.controller)
        self._stats.limits = cfg.solve_limits  # the next diagnostics report uses them

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            self._controller.set_measured(msg.name, msg.position, self._now())
        except ValueError as exc:
            self.get_logger().warning(f"joint_states ignored: {exc}", throttle_duration_sec=1.0)

    def _on_command(self, msg: EndEffectorCommand) -> None:
        t0 = time.perf_counter()
        now = self._now()
        p, o = msg.pose.position, msg.pose.orientation
        command = EECommand(
            position=np.array([p.x, p.y, p.z]),
            orientation=np.array([o.x, o.y, o.z, o.w]),
            gripper=msg.gripper,
            stamp=stamp_to_sec(msg.header.stamp),
            frame_id=msg.header.frame_id,
        )
        submission = self._controller.submit(command, now)
        if submission.synced:
            start = self._controller.command
            self.get_logger().info(f"starting from the measured joint state {start.round(4).tolist()}")
        if submission.outcome is not Outcome.TRACKING:
            self.get_logger().warning(
                f"ee_command {submission.outcome.value}: {submission.reason}", throttle_duration_sec=1.0
            )
        if submission.outcome is not Outcome.REJECTED:
            self._last_stamp = msg.header.stamp
            if self._per_command:
                self._publish(self._controller.step(now), msg.header.stamp)
            self._stats.record_latency(time.perf_counter() - t0)
        self._stats.record(submission, now, command.stamp)

    def _on_timer(self) -> None:
        if self._last_stamp is not None and self._controller.moving:
            self._publish(self._controller.step(self._now()), self._last_stamp)

    def _publish(self, positions: np.ndarray | None, stamp: Time) -> None:
        if positions is None:
            return
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(self._controller.joint_names)
        msg.position = positions.tolist()
        self._command_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        report = self._stats.report(self._controller, self._now(), f"{self.get_name()}: ik")
        self._diagnostics_pub.publish(to_msg([report], self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    return run_node("ik", IKNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
