"""policy_node: runs an exported chunked policy (ACT, Diffusion or a VLA, ONNX) on the arm.

Wiring only; the logic is in runtime.py (control ticks, inference worker, diagnostics),
observation.py, onnx_policy.py, vla_decode.py, actions.py and chunk_buffer.py.

    subscribes  joint_states (sensor_msgs/JointState), objects (vision_msgs/Detection3DArray,
                if the policy takes objects), the image topic per camera (image policies),
                policy/instruction (std_msgs/String, VLA policies: a new instruction drops the
                chunks planned for the previous one; until the first, the arm holds)
    publishes   joint_command (sensor_msgs/JointState) or ee_command (EndEffectorCommand), as
                the model card's action kind says, at the card's rate (50 Hz); each command's
                header.stamp is the camera stamp of the observation its chunk came from;
                policy/chunk (ActionChunk), policy/path (nav_msgs/Path of ee_link, for rviz),
                diagnostics
    services    policy/start, policy/stop, policy/reset (std_srvs/Trigger)
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from armstack_camera.msg_conv import image_to_numpy
from armstack_camera.qos import RESULTS_QOS, image_qos
from armstack_common import paths
from armstack_common.node_main import run_node
from armstack_common.diagnostics import to_msg
from armstack_common.kinematics import ArmKinematics, IKConfig
from armstack_common.params import NodeParameters
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec
from armstack_interfaces.msg import ActionChunk, EndEffectorCommand
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray

from armstack_policy.actions import ActionLayout, ChunkPath
from armstack_policy.chunk_buffer import ChunkBuffer
from armstack_policy.node_config import POLICY_PARAMS, PolicyNodeConfig
from armstack_policy.observation import DetectedObject, ObservationAssembler
from armstack_policy.onnx_policy import MAKERS, DiffusionRunner, PolicyCard, load_policy
from armstack_policy.runtime import Inference, PolicyRuntime

# Reliable, keep-last 10 for joint_states and commands: rclpy's defaults, as the ik node uses.
_QOS_DEPTH = 10
# The worker wakes at least this often (s) to notice stop, shutdown and parameter changes.
_WORKER_POLL = 0.1


def _stamp(t: float) -> Time:
    sec, nanosec = sec_to_stamp_fields(t)
    return Time(sec=sec, nanosec=nanosec)


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        self._card: PolicyCard | None = None
        self._params = NodeParameters(self, POLICY_PARAMS, self._validate, self._on_update)
        cfg: PolicyNodeConfig = self._params.config
        model_path = paths.resolve_model(cfg.model_path, made_by=MAKERS)
        policy = load_policy(model_path, cfg.runner)
        self._card = card = policy.card
        self._layout = ActionLayout(card.action_kind, card.action_names)
        kinematics = None
        if card.action_kind == "joint":
            # FK only: no IK start table to build.
            kinematics = ArmKinematics(cfg.urdf_path or paths.urdf_path(),
                                       IKConfig(start_table_size=0))
        self._path = ChunkPath(self._layout, kinematics)
        # A VLA runner takes an instruction (armstack_policy.vla_decode.VLARunner).
        self._instructed = hasattr(policy, "set_instruction")
        if cfg.instruction and self._instructed:
            try:
                self._set_instruction(policy, cfg.instruction)
            except ValueError as exc:
                raise ValueError(f"parameter instruction {cfg.instruction!r}: {exc}") from exc
        elif cfg.instruction:
            self.get_logger().warning(f"instruction ignored: a {card.kind} policy takes none")
        self._assembler = ObservationAssembler(cfg.observation_config(card))
        self._runtime = PolicyRuntime(policy, self._assembler, ChunkBuffer(cfg.buffer_config(card)),
                                      running=cfg.start_running, limits=cfg.report_limits())
        self._create_interfaces(cfg)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
        self._worker.start()
        state = "running" if self._runtime.running else "stopped (call policy/start)"
        sampling = (f", {policy.samples} sample(s) of {policy.num_steps} DDIM steps"
                    if isinstance(policy, DiffusionRunner) else "")
        self.get_logger().info(
            f"{card.kind} policy {model_path} on {policy.providers[0]}: {card.action_kind} "
            f"actions {list(card.action_names)}, chunk {card.chunk_size} at {card.fps:g} Hz"
            f"{sampling}, {cfg.chunk_mode}; {state}")

    def _create_interfaces(self, cfg: PolicyNodeConfig) -> None:
        card = self._card
        if card.action_kind == "joint":
            self._command_pub = self.create_publisher(JointState, "joint_command", _QOS_DEPTH)
        else:
            self._command_pub = self.create_publisher(EndEffectorCommand, "ee_command", _QOS_DEPTH)
        self._chunk_pub = self.create_publisher(ActionChunk, "policy/chunk", _QOS_DEPTH)
        self._path_pub = self.create_publisher(PathMsg, "policy/path", _QOS_DEPTH)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", _QOS_DEPTH)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, _QOS_DEPTH)
        if card.object_classes:
            self.create_subscription(Detection3DArray, "objects", self._on_objects, RESULTS_QOS)
        for camera, topic in cfg.image_topics(card).items():
            self.create_subscription(Image, topic, lambda msg, c=camera: self._on_image(c, msg),
                                     image_qos(cfg.image_qos))
        if self._instructed:
            self.create_subscription(String, "policy/instruction", self._on_instruction,
                                     _QOS_DEPTH)
        self.create_service(Trigger, "policy/start", self._on_start)
        self.create_service(Trigger, "policy/stop", self._on_stop)
        self.create_service(Trigger, "policy/reset", self._on_reset)
        self.create_timer(card.dt, self._on_control)
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _validate(self, values: dict) -> PolicyNodeConfig:
        cfg = PolicyNodeConfig.from_params(values)
        if self._card is not None:  # live update: the new limits must make a valid layout
            cfg.observation_config(self._card)
        return cfg

    def _on_update(self, values: dict) -> None:
        cfg: PolicyNodeConfig = self._params.config
        self._assembler.config = cfg.observation_config(self._card)
        self._runtime.limits = cfg.report_limits()

    # ------------------------------------------------------------------ inputs

    def _on_joint_states(self, msg: JointState) -> None:
        if not self._assembler.add_joint_state(stamp_to_sec(msg.header.stamp), msg.name,
                                               msg.position):
            self.get_logger().warning(
                f"joint_states without all of {list(self._card.state_names)} (or not finite) "
                "ignored", throttle_duration_sec=5.0)

    def _on_objects(self, msg: Detection3DArray) -> None:
        objects = []
        for det in msg.detections:
            if not det.results:
                continue
            best = max(det.results, key=lambda r: r.hypothesis.score)
            p = best.pose.pose.position
            objects.append(DetectedObject(best.hypothesis.class_id, best.hypothesis.score,
                                          (p.x, p.y, p.z)))
        self._assembler.add_objects(stamp_to_sec(msg.header.stamp), objects)

    def _on_image(self, camera: str, msg: Image) -> None:
        if msg.encoding != "rgb8":
            self.get_logger().warning(f"image {msg.encoding} ignored: the policy takes rgb8",
                                      throttle_duration_sec=5.0)
            return
        self._assembler.add_image(camera, stamp_to_sec(msg.header.stamp), image_to_numpy(msg))

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        policy = self._runtime.policy
        if not text:
            self.get_logger().warning("empty instruction ignored")
            return
        if text == policy.instruction:
            return
        try:
            self._set_instruction(policy, text)
        except ValueError as exc:
            self.get_logger().error(f"instruction {text!r} refused: {exc}")
            return
        self._runtime.reset()  # the chunks were planned for the previous instruction

    def _set_instruction(self, policy, text: str) -> None:  # noqa: ANN001 - a VLARunner
        unknown = policy.set_instruction(text)
        note = f"; words not in the training tasks (read as unknown): {unknown}" if unknown else ""
        self.get_logger().info(f"instruction: {text!r}{note}")

    # ------------------------------------------------------------------ control loop

    def _on_control(self) -> None:
        step = self._runtime.tick(self._now(), time.monotonic())
        if step.action is None:
            return
        stamp = _stamp(step.t_obs)
        if self._layout.kind == "joint":
            msg = JointState(name=list(self._card.action_names), position=step.action.tolist())
        else:
            try:
                pose = self._layout.ee_pose(step.action)
            except ValueError as exc:
                self.get_logger().error(f"action not published: {exc}", throttle_duration_sec=1.0)
                return
            msg = EndEffectorCommand(gripper=pose.gripper)
            msg.header.frame_id = self._params.config.base_frame
            p, o = msg.pose.position, msg.pose.orientation
            p.x, p.y, p.z = pose.position.tolist()
            o.x, o.y, o.z, o.w = pose.quaternion.tolist()
        msg.header.stamp = stamp
        self._command_pub.publish(msg)

    # ------------------------------------------------------------------ inference worker

    def _work(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                result = self._runtime.work(self._now, _WORKER_POLL)
                if result is not None:
                    self._publish_result(result)
            except Exception as exc:  # a failing inference must not end the worker
                message = f"{type(exc).__name__}: {exc}"
                self._runtime.record_error(message)
                self.get_logger().error(f"inference failed: {message}", throttle_duration_sec=5.0)
                self._stopping.wait(_WORKER_POLL)
                continue
            rest = self._params.config.min_inference_period - (time.monotonic() - started)
            if result is not None and rest > 0:
                self._stopping.wait(rest)

    def _publish_result(self, result: Inference) -> None:
        if not result.assembly.ready or result.problem:
            self.get_logger().warning(f"holding: {result.problem or result.assembly.reason}",
                                      throttle_duration_sec=2.0)
            return
        if result.chunk is None or not result.verdict.accepted:
            return
        stamp = _stamp(result.assembly.stamp)
        frame = self._params.config.base_frame
        chunk = ActionChunk(period=self._card.dt, horizon=self._card.chunk_size,
                            dim=self._card.action_dim, names=list(self._card.action_names),
                            data=np.asarray(result.chunk, dtype=np.float64).ravel().tolist())
        chunk.header.stamp = stamp
        chunk.header.frame_id = frame if self._layout.kind == "ee" else ""
        self._chunk_pub.publish(chunk)
        if self._path_pub.get_subscription_count() > 0:
            self._path_pub.publish(self._path_msg(result.chunk, result.assembly.stamp, frame))

    def _path_msg(self, chunk: np.ndarray, t_obs: float, frame: str) -> PathMsg:
        positions, quaternions = self._path.poses(chunk)  # (k, 3), (k, 4)
        path = PathMsg()
        path.header.stamp = _stamp(t_obs)
        path.header.frame_id = frame
        for i, (p, q) in enumerate(zip(positions.tolist(), quaternions.tolist(), strict=True)):
            pose = PoseStamped()
            pose.header.stamp = _stamp(t_obs + i * self._card.dt)  # row i is for t_obs + i*dt
            pose.header.frame_id = frame
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = p
            o = pose.pose.orientation
            o.x, o.y, o.z, o.w = q
            path.poses.append(pose)
        return path

    # ------------------------------------------------------------------ services, diagnostics

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        started = self._runtime.start()
        response.success = True
        response.message = "started" if started else "already running"
        self.get_logger().info(f"policy/start: {response.message}")
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        stopped = self._runtime.stop()
        response.success = True
        response.message = "stopped: chunks dropped" if stopped else "already stopped"
        self.get_logger().info(f"policy/stop: {response.message}")
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._runtime.reset()
        response.success = True
        response.message = "reset: chunks, policy state and observation history cleared"
        self.get_logger().info(f"policy/reset: {response.message}")
        return response

    def _publish_diagnostics(self) -> None:
        report = self._runtime.report(f"{self.get_name()}: policy", self._now())
        report.hardware_id = self._runtime.policy.providers[0]
        report.add("model", self._params.config.model_path)
        report.add("kind", f"{self._card.kind} ({self._card.action_kind})")
        if self._instructed:
            report.add("instruction", self._runtime.policy.instruction or "-")
        self._diag_pub.publish(to_msg([report], self.get_clock().now().to_msg()))

    def stop_worker(self) -> None:
        self._stopping.set()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node("policy", PolicyNode, args=args, release=PolicyNode.stop_worker)


if __name__ == "__main__":
    sys.exit(main())
