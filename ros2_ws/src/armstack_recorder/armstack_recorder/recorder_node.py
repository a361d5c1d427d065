"""recorder node: observations + commands in, a LeRobot v3.0 dataset out (ROS wiring only).

Subscribes joint_states, the action (joint_command, or ee_command), objects and camera images;
samples them on the dataset clock by their header stamps (sampler.py), turns complete samples
into frames (session.py) and writes them on a background thread (writer_worker.py).
Episodes follow teleop's `teleop/episode` (teleop_follow.py) or the recorder's own services
recorder/start, recorder/save, recorder/discard (std_srvs/Trigger; the task of a service-started
episode is the `task` parameter). recorder/save answers once the episode is durable.
Publishes each episode's report as JSON on recorder/episode_report (std_msgs/String, latched,
last 10) and status on diagnostics.

Threads: subscriptions on one callback group, the sampling tick and diagnostics on another,
services on a third (a save call waits without stalling the tick). Ctrl-C/SIGTERM: an episode
whose save was asked for is finished and saved (and reported) before the node exits; one still
recording is discarded. A second Ctrl-C aborts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import rclpy
from armstack_common.diagnostics import to_msg
from armstack_common.executors import SubmitOnceExecutor
from armstack_common.node_main import STARTUP_ERRORS, run_node
from armstack_common.params import NodeParameters
from armstack_interfaces.msg import EndEffectorCommand, EpisodeStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray

from armstack_recorder import observation as obs
from armstack_recorder.health import RecorderHealth
from armstack_recorder.lerobot_dataset import LeRobotDatasetWriter
from armstack_recorder.node_config import RECORDER_PARAMS, RecorderConfig, recorder_config
from armstack_recorder.sampler import Sampler
from armstack_recorder.session import (
    ACTION_STREAM,
    OBJECTS_STREAM,
    STATE_STREAM,
    EpisodeReport,
    RecorderSession,
    image_stream,
)
from armstack_recorder.teleop_follow import TeleopFollower, TeleopStatus
from armstack_recorder.writer_worker import WriterWorker

# Reliable keep-last 10: the default of rclpy publishers (driver, ik, teleop), so they match.
_QOS_DEPTH = 10
# Input queues hold about a second of messages (50 Hz joints, 30 Hz images): a recorder starved
# of CPU for a moment must not lose messages in its reader history, where nothing counts them.
_INPUT_DEPTH = 50
_IMAGE_DEPTH = 30
# Latched like teleop/episode, so a tool that subscribes late still gets the recent reports.
_LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _stamp_ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self._params = NodeParameters(self, RECORDER_PARAMS, validate=recorder_config)
        cfg: RecorderConfig = self._params.config
        self._cfg = cfg
        writer = LeRobotDatasetWriter(cfg.writer)  # creates or resumes; raises on a mismatch
        self._worker = WriterWorker(writer, cfg.writer_queue_frames, cfg.niceness)
        try:
            self._wire(writer.num_episodes)
        except BaseException:
            self._worker.close()  # its thread would otherwise keep the process alive
            raise

    def _wire(self, episodes: int) -> None:
        cfg = self._cfg
        self._sampler = Sampler(cfg.sampler)
        self._session = RecorderSession(cfg.session, self._sampler, self._worker, self._on_report)
        self._follower = TeleopFollower()
        self._health = RecorderHealth(self.get_name(), cfg.session, cfg.writer_queue_frames)
        self._report_pub = self.create_publisher(String, "recorder/episode_report", _LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", _QOS_DEPTH)
        self._subscribe()
        clock_group = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / cfg.sampler.fps, self._on_tick, callback_group=clock_group)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=clock_group)
        services = ReentrantCallbackGroup()
        for name, handler in (("start", self._srv_start), ("save", self._srv_save),
                              ("discard", self._srv_discard)):
            self.create_service(Trigger, f"recorder/{name}", handler, callback_group=services)
        self.get_logger().info(
            f"recording {cfg.writer.root} at {cfg.sampler.fps} Hz ({episodes} "
            f"episodes so far): action {cfg.action_source}, cameras "
            f"{list(cfg.camera_topics) or 'none'}, objects {cfg.objects_topic or 'none'}; "
            f"episodes from {cfg.episode_topic if cfg.follow_teleop else 'services only'}")

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    @property
    def streams(self) -> list[str]:
        return list(self._sampler.counters)

    # ------------------------------------------------------------------ inputs

    def _subscribe(self) -> None:
        """One callback group per input: a slow image conversion does not hold back joint
        states, and each stream's callbacks still run in arrival order."""
        cfg = self._cfg
        names = cfg.joint_names
        self._input(JointState, "joint_states", STATE_STREAM,
                    lambda m: obs.joint_vector(m.name, m.position, names))
        by_receipt = cfg.action_clock == "receive"
        if cfg.action_source == "joint_command":
            self._input(JointState, "joint_command", ACTION_STREAM,
                        lambda m: obs.joint_vector(m.name, m.position, names), by_receipt=by_receipt)
        else:
            self._input(EndEffectorCommand, "ee_command", ACTION_STREAM, self._ee_vector,
                        by_receipt=by_receipt)
        if cfg.object_slots is not None:
            slots = cfg.object_slots
            self._input(Detection3DArray, cfg.objects_topic, OBJECTS_STREAM,
                        lambda m: slots.vector(obs.detections_of(m), m.header.frame_id,
                                               cfg.base_frame))
        reliability = ReliabilityPolicy.BEST_EFFORT if cfg.image_reliability == "best_effort" \
            else ReliabilityPolicy.RELIABLE
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=_IMAGE_DEPTH,
                               reliability=reliability)
        for cam in cfg.writer.features.cameras:
            # no copy: rclpy hands each callback a fresh message, and the writer copies the
            # frame when it queues it for encoding
            self._input(Image, cfg.camera_topics[cam.name], image_stream(cam.name),
                        lambda m, size=(cam.height, cam.width): obs.image_rgb(
                            m.encoding, m.height, m.width, m.step, m.data, size, copy=False),
                        image_qos)
        if cfg.follow_teleop:
            episode_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                     reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(EpisodeStatus, cfg.episode_topic, self._on_episode,
                                     episode_qos,
                                     callback_group=MutuallyExclusiveCallbackGroup())

    def _ee_vector(self, m: EndEffectorCommand) -> Any:
        p, o = m.pose.position, m.pose.orientation
        return obs.ee_action((p.x, p.y, p.z), (o.x, o.y, o.z, o.w), m.gripper,
                             m.header.frame_id, self._cfg.base_frame)

    def _input(self, msg_type: type, topic: str, stream: str, convert: Callable[[Any], Any],
               qos: QoSProfile | int = _INPUT_DEPTH, by_receipt: bool = False) -> None:
        """Subscribe `stream`; by_receipt: its messages count at their arrival time, not at
        their header stamp (action_clock receive)."""
        def callback(msg: Any) -> None:
            received = self._now()
            stamp = received if by_receipt else _stamp_ns(msg.header.stamp)
            try:
                if stamp == 0:
                    raise obs.ObservationError("no header stamp")
                value = convert(msg)
            except obs.ObservationError as exc:
                self._sampler.reject(stream)
                self.get_logger().warning(f"{stream} message not used: {exc}",
                                          throttle_duration_sec=2.0)
                return
            self._sampler.add(stream, stamp, value, self._now())

        self.create_subscription(msg_type, topic, callback, qos,
                                 callback_group=MutuallyExclusiveCallbackGroup())

    # ------------------------------------------------------------------ episodes

    def _on_episode(self, msg: EpisodeStatus) -> None:
        status = TeleopStatus(state=msg.state, task=msg.task, take=msg.take, outcome=msg.outcome,
                              take_start_ns=_stamp_ns(msg.take_start),
                              take_end_ns=_stamp_ns(msg.take_end))
        for cmd in self._follower.update(status):
            if cmd.kind == "start":
                ok, text = self._session.start(cmd.time_ns, cmd.task, self._now(), cmd.owner)
            elif cmd.kind == "save":
                ok, text, _ = self._session.save(cmd.time_ns, cmd.owner)
            else:
                ok, text = self._session.discard(cmd.reason, cmd.owner)
            # Two call sites: rclpy refuses a second severity from one call site (ValueError).
            if ok:
                self.get_logger().info(f"teleop {cmd.kind} ({cmd.owner}): {text}")
            else:
                self.get_logger().warning(f"teleop {cmd.kind} ({cmd.owner}): {text}")
        if msg.state == "finished":
            self.get_logger().info(f"teleop session finished: {msg.summary}")

    def _srv_start(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        now = self._now()
        response.success, response.message = self._session.start(
            now, self._params.values["task"], now, "service")
        return response

    def _srv_save(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        ok, text, future = self._session.save(self._now())
        if not ok:
            response.success, response.message = False, text
            return response
        try:
            report: EpisodeReport = future.result(timeout=self._cfg.save_timeout_s)
        except FutureTimeout:
            response.success = False
            response.message = f"still saving after {self._cfg.save_timeout_s} s"
            return response
        response.success, response.message = report.outcome == "saved", report.summary()
        return response

    def _srv_discard(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        response.success, response.message = self._session.discard("recorder/discard called")
        return response

    def _on_tick(self) -> None:
        self._session.tick(self._now())

    def _on_report(self, report: EpisodeReport) -> None:
        text = report.summary()
        if report.outcome == "saved" and not report.degraded:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        if rclpy.ok():
            self._report_pub.publish(String(data=json.dumps(report.to_dict())))

    def _publish_diagnostics(self) -> None:
        status = self._session.status()
        reports = [self._health.episode_report(status, self._worker.pending_frames,
                                               self._worker.num_episodes),
                   self._health.inputs_report(self._sampler.counters, self._sampler.buffered(),
                                                 status.state != "idle")]
        self._diag_pub.publish(to_msg(reports, self.get_clock().now().to_msg()))

    # ------------------------------------------------------------------ exit

    def close(self) -> None:
        """Finish what must not be lost: pending saves complete before this returns."""
        self._session.shutdown(self._now())
        self._worker.close()


def _executor(node: RecorderNode) -> SubmitOnceExecutor:
    # a thread per input stream, the tick, the services, and one spare
    return SubmitOnceExecutor(num_threads=len(node.streams) + 3)


def main(args: list[str] | None = None) -> int:
    # The context stays up after a signal, so the last save still logs and publishes its report.
    # RuntimeError: a dataset another recorder has open.
    return run_node("recorder", RecorderNode, args=args,
                    startup_errors=(*STARTUP_ERRORS, RuntimeError), release=RecorderNode.close,
                    make_executor=_executor, abort_on_repeat=True)


if __name__ == "__main__":
    sys.exit(main())
