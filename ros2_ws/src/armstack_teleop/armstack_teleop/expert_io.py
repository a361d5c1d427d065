"""ROS side of the expert source: the simulator's topics and reset service around `ExpertSession`.

Subscribes `sim/ground_truth` (vision_msgs/Detection3DArray) and, with expert_ee_source
"sim", `sim/ee_pose`; calls `sim/reset` (std_srvs/Trigger) when the session asks. With command
noise (expert_noise_std) the executed command goes out on `ee_command` and the clean one on
`expert/clean_ee_command` (armstack_interfaces/EndEffectorCommand, same stamp). Part of the
teleop node's wiring (it uses the node's publishers and episode controller).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from armstack_interfaces.msg import EndEffectorCommand
from geometry_msgs.msg import PoseStamped
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray

from armstack_common.diagnostics import DiagnosticReport, Level
from armstack_teleop import ros_conv
from armstack_teleop.expert_session import ExpertSession, Observation, Phase
from armstack_teleop.node_config import TeleopConfig

if TYPE_CHECKING:
    from armstack_teleop.teleop_node import TeleopNode

_QOS_DEPTH = 10
_RESET_TIMEOUT = 10.0  # s to wait for sim/reset's answer before trying again


class ExpertSource:
    def __init__(self, node: TeleopNode, cfg: TeleopConfig) -> None:
        assert cfg.expert is not None
        self.node = node
        self.session = ExpertSession(cfg.expert)
        self._use_sim_pose = cfg.expert_ee_source == "sim"
        self._objects: dict = {}
        self._objects_stamp = float("-inf")
        self._objects_stamp_msg = None  # the same stamp as a Time message, carried forward exactly
        self._sim_pose: tuple[np.ndarray, float] | None = None  # (4, 4), stamp
        self._reset_future = None
        self._reset_deadline = 0.0
        self._last_reset_failure: str | None = None
        node.create_subscription(Detection3DArray, "sim/ground_truth", self._on_ground_truth, _QOS_DEPTH)
        if self._use_sim_pose:
            node.create_subscription(PoseStamped, "sim/ee_pose", self._on_ee_pose, _QOS_DEPTH)
        self._reset_client = node.create_client(Trigger, "sim/reset")
        self._clean_pub = (node.create_publisher(EndEffectorCommand, "expert/clean_ee_command",
                                                 _QOS_DEPTH)
                           if cfg.expert.noise.enabled else None)

    def _on_ground_truth(self, msg: Detection3DArray) -> None:
        self._objects = ros_conv.objects_from_detections(msg)
        self._objects_stamp = ros_conv.stamp_seconds(msg.header)
        self._objects_stamp_msg = msg.header.stamp

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        self._sim_pose = ros_conv.pose_from_msg(msg.pose), ros_conv.stamp_seconds(msg.header)

    def observation(self) -> Observation | None:
        measured = self.node.measured_ee()
        if measured is None or not self._objects:
            return None
        pose, gripper, state_stamp = measured
        if self._use_sim_pose:
            if self._sim_pose is None:
                return None
            pose, sim_stamp = self._sim_pose
            state_stamp = min(state_stamp, sim_stamp)  # the gripper still comes from joint_states
        return Observation(pose, gripper, self._objects, self._objects_stamp, state_stamp)

    def tick(self, now: float) -> None:
        self._check_reset_timeout(now)
        obs = self.observation()
        step = self.session.tick(now, self.node.episode_status, obs)
        if step.note:
            self.node.get_logger().info(step.note)
        if step.request_reset:
            self._call_reset(now)
        if step.event is not None:
            self.node.apply_event(step.event, "expert")
        if step.action is not None:
            # The command is stamped with the ground-truth frame it was computed from.
            executed = step.executed or step.action
            self.node.publish_ee(executed.ee_pose, executed.gripper, self._objects_stamp_msg)
            if self._clean_pub is not None:
                self._clean_pub.publish(ros_conv.ee_command_msg(
                    step.action.ee_pose, step.action.gripper, self._objects_stamp_msg,
                    self.node.cfg.base_frame))

    def _reset_answered(self, now: float, ok: bool, message: str) -> None:
        note = self.session.reset_done(now, ok, message)
        if ok:
            self._last_reset_failure = None
            self.node.get_logger().info(note)
        elif message != self._last_reset_failure:  # a failure that repeats is said once
            self._last_reset_failure = message
            self.node.get_logger().warning(note)

    def _call_reset(self, now: float) -> None:
        if not self._reset_client.service_is_ready():
            self._reset_answered(now, False, "sim/reset is not available")
            return
        self._reset_deadline = now + _RESET_TIMEOUT
        self._reset_future = self._reset_client.call_async(Trigger.Request())
        self._reset_future.add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future) -> None:
        if future is not self._reset_future:
            return  # answer of a call already given up on
        self._reset_future = None
        try:
            response = future.result()
            ok, message = bool(response.success), response.message
        except Exception as exc:  # any failed call is reported and retried
            ok, message = False, f"call failed: {exc}"
        self._reset_answered(self.node.now(), ok, message)

    def _check_reset_timeout(self, now: float) -> None:
        if self._reset_future is not None and now > self._reset_deadline:
            self._reset_future.cancel()
            self._reset_future = None
            self._reset_answered(now, False, "no answer from sim/reset")

    def report(self, report: DiagnosticReport) -> None:
        report.add("expert_phase", self.session.phase.value)
        age = self.node.now() - self._objects_stamp
        if self.session.phase in (Phase.MISSING, Phase.RUNNING) and \
                age > self.session.config.max_observation_age:
            report.raise_to(Level.WARN, "sim/ground_truth is stale")
