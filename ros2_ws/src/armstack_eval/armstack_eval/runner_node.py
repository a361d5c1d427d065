"""episode_runner: the ROS side of an evaluation (wiring only; logic in episodes.py,
episode.py, metrics.py, video.py).

Subscribes to the stamped stages of the pipeline (detections, objects, ee_command,
joint_command, driver/latency), joint_states, diagnostics, sim/task_status, teleop/episode,
policy/path and, while an episode is filmed, the camera image. Calls sim/reset, policy/*,
teleop/* and driver/enable (std_srvs/Trigger); publishes the start pose on joint_command and a
VLA's instruction on policy/instruction. Spins in threads of its own so the episode
sequence can wait in the caller's thread.

Two nodes, two executors. The callbacks that take the message info (publication times, for
the latencies) need rclpy's SingleThreadedExecutor, which rebuilds its wait set in Python on
every wake-up; Jazzy's EventsExecutor cannot pass the info (armstack_common.executors). The
streams that need no info, above all joint_states at the driver's 200 Hz, go to a second node
spun by the nodes' own executor (`node_executor`), whose wait and dispatch run in C++: on a
2-core machine the runner otherwise takes CPU the graph under evaluation needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from armstack_camera.msg_conv import image_to_numpy
from armstack_camera.qos import RESULTS_QOS, image_qos
from armstack_common.executors import node_executor
from armstack_common.shutdown import spin as spin_until
from armstack_interfaces.msg import EndEffectorCommand, EpisodeStatus, TaskStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Path as PathMsg
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2DArray, Detection3DArray

from armstack_eval.episode import EpisodeLog
from armstack_eval.episodes import TaskSnapshot, TeleopSnapshot
from armstack_eval.metrics import COMMAND, DETECTIONS, JOINT_COMMAND, OBJECTS
from armstack_eval.video import AnnotatedVideo, Box

SERVICES = ("sim/reset", "policy/start", "policy/stop", "policy/reset", "teleop/discard_episode",
            "teleop/end_session", "driver/enable")
_DEPTH = 10
_STATE_DEPTH = 50  # joint_states come at the driver's 200 Hz


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _published(info: Any) -> float:
    """The DDS source timestamp of a message (s): when its publisher wrote it."""
    return info["source_timestamp"] * 1e-9


class EpisodeRunnerNode(Node):
    def __init__(self, context: Context, log: EpisodeLog, video: AnnotatedVideo | None = None,
                 video_episodes: int = 0, graph_alive: Callable[[], bool] | None = None) -> None:
        super().__init__("episode_runner", context=context)
        self.log, self.video, self.video_episodes = log, video, video_episodes
        self._graph_alive = graph_alive  # e.g. the launcher process is still running
        self._lock = threading.Lock()
        self._task: TaskSnapshot | None = None
        self._teleop: TeleopSnapshot | None = None
        self._driver_mode = ""
        self._joint_states = 0
        self._joints: dict[str, float] = {}  # the latest joint_states, by name
        self._image_sub = None
        sub = self.create_subscription
        sub(Detection2DArray, DETECTIONS, self._on_detections, RESULTS_QOS)
        sub(Detection3DArray, OBJECTS, lambda m, i: log.stamped(OBJECTS, _stamp_ns(m.header), _published(i)),
            RESULTS_QOS)
        sub(EndEffectorCommand, "ee_command", self._on_ee_command, _DEPTH)
        sub(JointState, "joint_command", self._on_joint_command, _DEPTH)
        sub(Float64, "driver/latency", lambda m, i: log.driver_latency(_published(i), m.data), _DEPTH)
        sub(PathMsg, "policy/path", self._on_path, _DEPTH)  # beside the other video callbacks
        self._triggers = {name: self.create_client(Trigger, name) for name in SERVICES}
        self._start_pose_pub = self.create_publisher(JointState, "joint_command", _DEPTH)
        self._instruction_pub = self.create_publisher(String, "policy/instruction", _DEPTH)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self)
        self._spinner = threading.Thread(target=self._spin, name="episode-runner-spin", daemon=True)

        self._state_node = Node("episode_runner_state", context=context)
        state_sub = self._state_node.create_subscription
        state_sub(JointState, "joint_states", self._on_joint_states, _STATE_DEPTH)
        state_sub(DiagnosticArray, "diagnostics", self._on_diagnostics, _DEPTH)
        state_sub(TaskStatus, "sim/task_status", self._on_task_status, _DEPTH)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        state_sub(EpisodeStatus, "teleop/episode", self._on_teleop, latched)
        self._state_stop = threading.Event()
        self._state_executor = node_executor(context)
        self._state_executor.add_node(self._state_node)
        self._state_spinner = threading.Thread(
            target=spin_until, args=(self._state_executor, self._state_stop),
            name="episode-runner-state-spin", daemon=True)
        self._spinner.start()
        self._state_spinner.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        self._state_stop.set()
        self._state_spinner.join(timeout=5.0)
        self._state_executor.shutdown(timeout_sec=2.0)
        self._executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=5.0)
        self._state_node.destroy_node()
        self.destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _on_detections(self, msg: Detection2DArray, info: Any) -> None:
        stamp = _stamp_ns(msg.header)
        self.log.stamped(DETECTIONS, stamp, _published(info))
        if self.video is not None and self._image_sub is not None:
            boxes = []
            for det in msg.detections:
                best = max(det.results, key=lambda r: r.hypothesis.score, default=None)
                label, score = (best.hypothesis.class_id, best.hypothesis.score) if best else ("?", 0.0)
                c = det.bbox.center.position
                boxes.append(Box(label, score, c.x, c.y, det.bbox.size_x, det.bbox.size_y))
            self.video.detections(stamp, boxes)

    def _on_ee_command(self, msg: EndEffectorCommand, info: Any) -> None:
        published, p = _published(info), msg.pose.position
        self.log.stamped(COMMAND, _stamp_ns(msg.header), published)
        self.log.ee_target(published, (p.x, p.y, p.z))
        if self.video is not None and self._image_sub is not None:
            self.video.target(_stamp_ns(msg.header), np.array([p.x, p.y, p.z]))

    def _on_joint_command(self, msg: JointState, info: Any) -> None:
        published = _published(info)
        self.log.stamped(JOINT_COMMAND, _stamp_ns(msg.header), published)
        self.log.joint_command(published, list(msg.name), list(msg.position))

    def _on_joint_states(self, msg: JointState) -> None:
        self._joint_states += 1
        with self._lock:
            self._joints = dict(zip(msg.name, msg.position, strict=False))
        self.log.joint_state(_stamp_ns(msg.header) * 1e-9, list(msg.name), list(msg.position))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            error = status.level == DiagnosticStatus.ERROR
            self.log.diagnostic(status.name, _stamp_ns(msg.header) * 1e-9, error, status.message,
                                values)
            if status.name.startswith("driver") and "mode" in values:
                self._driver_mode = values["mode"]

    def _on_task_status(self, msg: TaskStatus) -> None:
        snapshot = TaskSnapshot(
            scene=int(msg.episode), seed=int(msg.seed),
            in_bin=dict(zip(msg.object_names, (bool(b) for b in msg.in_bin), strict=False)),
            success=bool(msg.success), sim_time=float(msg.sim_time), stamp=_stamp_ns(msg.header) * 1e-9)
        with self._lock:
            self._task = snapshot

    def _on_teleop(self, msg: EpisodeStatus) -> None:
        start = msg.take_start.sec + msg.take_start.nanosec * 1e-9
        with self._lock:
            self._teleop = TeleopSnapshot(state=msg.state, take=int(msg.take), take_start=start)

    def _on_path(self, msg: PathMsg) -> None:
        if self.video is not None and self._image_sub is not None and msg.poses:
            points = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])
            self.video.predicted_path(_stamp_ns(msg.header), points)  # (K, 3)

    def _on_image(self, msg: Image, info: Any) -> None:
        if self.video is not None and msg.encoding == "rgb8":
            self.video.frame(_stamp_ns(msg.header), image_to_numpy(msg), time.time())

    # ------------------------------------------------------------------ GraphView
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def alive(self) -> bool:
        return self.context.ok() and (self._graph_alive is None or self._graph_alive())

    def service_ready(self, service: str) -> bool:
        return self._triggers[service].service_is_ready()

    def joint_states_seen(self) -> int:
        return self._joint_states

    def call(self, service: str, timeout: float) -> tuple[bool, str]:
        client = self._triggers[service]
        if not client.wait_for_service(timeout_sec=timeout):
            return False, f"{service} is not available"
        done = threading.Event()
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            future.cancel()
            return False, f"no answer from {service} within {timeout:g} s"
        response = future.result()
        return bool(response.success), response.message

    def task_status(self) -> TaskSnapshot | None:
        with self._lock:
            return self._task

    def teleop_status(self) -> TeleopSnapshot | None:
        with self._lock:
            return self._teleop

    def driver_faulted(self) -> bool:
        return self._driver_mode == "fault"

    def joint_positions(self, names: tuple[str, ...]) -> tuple[float, ...] | None:
        with self._lock:
            joints = self._joints
        if not all(n in joints for n in names):
            return None
        return tuple(float(joints[n]) for n in names)

    def command_joints(self, names: tuple[str, ...], positions: tuple[float, ...]) -> None:
        msg = JointState(name=list(names), position=[float(p) for p in positions])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._start_pose_pub.publish(msg)

    def instruct(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def episode_started(self, index: int, seed: int | None) -> None:
        if self.video is None or index >= self.video_episodes:
            return
        self.video.caption(f"episode {index + 1}  seed {seed}")
        # Frames are only taken while filming: each camera subscriber costs the publisher a
        # copy of every 640x480 frame.
        self._image_sub = self.create_subscription(Image, "camera/color/image_raw", self._on_image,
                                                   image_qos("reliable"))

    def episode_ended(self) -> None:
        if self._image_sub is not None:
            sub, self._image_sub = self._image_sub, None
            self.destroy_subscription(sub)
