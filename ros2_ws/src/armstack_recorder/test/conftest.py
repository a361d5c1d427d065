"""Fixtures: a synthetic demonstration source whose camera frames carry their own numbers;
and, for the node tests, the recorder as a subprocess in a private ROS domain with a probe
node in the test process that plays the robot and the operator.

Each frame's top half shows the frame index in binary (8 stripes, bright = 1), the bottom half
the episode index and camera id, in stripes 16 px wide, so a decoded frame tells which frame
it is despite lossy compression. state/action values are functions of (episode, frame) too.

The probe publishes joint_states, joint_command (50 Hz), camera images and objects (30 Hz,
objects one frame late, as perception delivers them). Each message is stamped with its ideal
capture time (start + n / rate), as a driver stamps a sensor's capture, and sent once that time
has passed: a busy test machine delays delivery, never the stamps. Every message carries its
sequence number in its values (state[0], -action[0], red_cube_x, the image's stripes), so a
dataset frame tells exactly which messages it was sampled from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from armstack_common.testing import NodeProcess, Probe, ros_domain_env, unique_domain_id
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.video import VideoConfig

HEIGHT, WIDTH = 96, 128
STRIPE = 16
FPS = 30
CAMERAS = ("top", "wrist")


@dataclass
class Synthetic:
    """Generates and checks the frames of the synthetic demonstrations."""

    fps: int = FPS

    @staticmethod
    def image(frame: int, episode: int, cam_id: int) -> np.ndarray:
        """(HEIGHT, WIDTH, 3) uint8 with the frame/episode/camera numbers as stripes."""
        img = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
        low_bits = episode | (cam_id << 4)
        for bit in range(8):
            cols = slice(bit * STRIPE, (bit + 1) * STRIPE)
            if (frame >> bit) & 1:
                img[: HEIGHT // 2, cols] = 235
            if (low_bits >> bit) & 1:
                img[HEIGHT // 2:, cols] = 235
        img[..., 2] = 128  # constant blue plane: a channel with zero variance
        return img

    @staticmethod
    def read(img: np.ndarray) -> tuple[int, int, int]:
        """(frame, episode, cam_id) back from a (decoded) image."""
        def bits(rows: slice) -> int:
            value = 0
            for bit in range(8):
                patch = img[rows, bit * STRIPE + 3:(bit + 1) * STRIPE - 3, 0]
                value |= int(patch.mean() > 128) << bit
            return value

        low = bits(slice(HEIGHT // 2 + 3, HEIGHT - 3))
        return bits(slice(3, HEIGHT // 2 - 3)), low & 0xF, low >> 4

    @staticmethod
    def state(episode: int, frame: int) -> np.ndarray:
        return np.array([np.sin(0.1 * frame + episode), 0.01 * frame, episode, -1.0 + frame / 7],
                        np.float32)

    @staticmethod
    def action(episode: int, frame: int) -> np.ndarray:
        return np.array([frame * 0.5, episode * 2.0 - frame, 0.25], np.float32)

    @staticmethod
    def env_state(episode: int, frame: int) -> np.ndarray:
        return np.array([0.3 + 0.01 * episode, 0.1 * np.cos(frame)], np.float32)

    def config(self, root: Path, codec: str = "libx264", cameras: tuple[str, ...] = CAMERAS,
               **kwargs) -> WriterConfig:
        spec = FeatureSpec(
            state_names=["waist", "shoulder", "elbow", "left_finger"],
            action_names=["x", "y", "gripper"],
            env_state_names=["obj_x", "obj_y"],
            cameras=[CameraSpec(name, HEIGHT, WIDTH) for name in cameras])
        return WriterConfig(root=root, fps=self.fps, robot_type="armstack_wx250s", features=spec,
                            video=VideoConfig(codec=codec), **kwargs)

    def record(self, writer: LeRobotDatasetWriter, episode: int, frames: int,
               task: str = "put the cube in the bin") -> None:
        """Add one episode's frames (not saved). `episode` labels the synthetic content."""
        writer.start_episode(task)
        names = [c.name for c in writer.config.features.cameras]
        for k in range(frames):
            images = {n: self.image(k, episode, i) for i, n in enumerate(names)}
            writer.add_frame(self.state(episode, k), self.action(episode, k),
                             self.env_state(episode, k), images, timestamp=50.0 + k / self.fps)

    def write(self, root: Path, episodes: int = 3, frames: int = 40, **kwargs) -> WriterConfig:
        cfg = self.config(root, **kwargs)
        with LeRobotDatasetWriter(cfg) as writer:
            for e in range(episodes):
                self.record(writer, e, frames)
                writer.save_episode()
        return cfg


@pytest.fixture
def synthetic() -> Synthetic:
    return Synthetic()


@pytest.fixture(scope="module")
def written_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes x 40 frames, 2 cameras, H.264; shared read-only by a module's tests."""
    root = tmp_path_factory.mktemp("ds") / "demo"
    Synthetic().write(root)
    return root


# ---------------------------------------------------------------------- node tests

JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
          "left_finger"]
RATES = {"state": 50, "action": 50, "camera": 30}  # Hz; objects follow the camera
OBJECTS_LATENCY_FRAMES = 1  # objects of a frame go out with the next frame (~33 ms later)


# Topics under a namespace of this test run: a test of another package that lands on the same
# domain id cannot feed its joint_states into ours.
TEST_NAMESPACE = f"/recorder_test_{os.getpid()}"


def recorder_args(root: Path, **params: Any) -> list[str]:
    """ROS arguments for a recorder writing `root` with the test's small camera."""
    # action_clock stamp: the probe stamps every message with its send time, so the checks can
    # be exact (test_action_clock.py covers the receive clock). best_effort images: the probe
    # and the recorder share a loaded CI machine, where a reliable reader's retransmissions
    # starved both (the 50-episode recording used the reliable default on a quiet machine).
    base = {"dataset_root": str(root), "video_codec": "libx264", "image_size": [HEIGHT, WIDTH],
            "task": "stack the cubes", "diagnostics_period": 0.5, "action_clock": "stamp"}
    args = ["-r", f"__ns:={TEST_NAMESPACE}"]
    for key, value in {**base, **params}.items():
        # values are parsed as YAML: an empty string must be spelled ''
        text = "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, list) \
            else value if value != "" else "''"
        args += ["-p", f"{key}:={text}"]
    return args


@dataclass
class Published:
    """Stamps (ns) of every message sent, by sequence number."""

    state: list[int] = field(default_factory=list)
    action: list[int] = field(default_factory=list)
    camera: list[int] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)  # camera sequence numbers sent as objects
    # when each command actually went out: later than its ideal time when the probe is starved
    action_sent: list[int] = field(default_factory=list)


class RecorderProbe(Probe):
    """The shared probe in the test's namespace, publishing the robot's streams."""

    def __init__(self, name: str) -> None:
        from armstack_interfaces.msg import EpisodeStatus
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from vision_msgs.msg import Detection3DArray

        super().__init__(name, namespace=TEST_NAMESPACE)
        n = self.node
        self.sent = Published()
        self.paused: set[str] = set()
        # Commands stamped this long before they are sent (armstack's carry the stamp of the
        # observation they answer); sent.action keeps the send times.
        self.action_stamp_lag_ns = 0
        self.reports: list[str] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self._syn = Synthetic()
        self._pubs = {"state": n.create_publisher(JointState, "joint_states", 10),
                      "action": n.create_publisher(JointState, "joint_command", 10),
                      "camera": n.create_publisher(Image, "camera/color/image_raw", 10),
                      "objects": n.create_publisher(Detection3DArray, "objects", 10)}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.episode_pub = n.create_publisher(EpisodeStatus, "teleop/episode", latched)
        report_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(String, "recorder/episode_report",
                              lambda m: self.reports.append(m.data), report_qos)
        n.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, 10)
        start = self.now_ns()
        self._next = {stream: start for stream in RATES}  # next capture time, ns
        n.create_timer(0.005, self._pump)

    # ------------------------------------------------------------------ publishing

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _stamp(self, ns: int) -> Any:
        from builtin_interfaces.msg import Time
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _pump(self) -> None:
        """Send every message whose capture time has come, stamped with that time."""
        now = self.now_ns()
        for stream, rate in RATES.items():
            while self._next[stream] <= now:
                stamp = self._next[stream]
                self._next[stream] = stamp + 1_000_000_000 // rate
                if stream in self.paused:
                    continue
                if stream == "camera":
                    self._publish_camera(stamp)
                else:
                    self._publish_joints(stream, stamp)

    def _publish_joints(self, stream: str, stamp: int) -> None:
        from sensor_msgs.msg import JointState
        record = getattr(self.sent, stream)
        msg = JointState(name=[*JOINTS, "right_finger"] if stream == "state" else JOINTS)
        lag = self.action_stamp_lag_ns if stream == "action" else 0
        msg.header.stamp = self._stamp(stamp - lag)
        seq = float(len(record))
        msg.position = [seq if stream == "state" else -seq, 0.1, 0.2, 0.3, 0.4, 0.5, 0.01] + \
            ([0.01] if stream == "state" else [])
        record.append(stamp)
        if stream == "action":  # read before publishing: nobody can receive it earlier
            self.sent.action_sent.append(self.now_ns())
        self._pubs[stream].publish(msg)

    def _publish_camera(self, stamp: int) -> None:
        from sensor_msgs.msg import Image
        seq = len(self.sent.camera)
        img = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
        img.header.stamp, img.header.frame_id = self._stamp(stamp), "camera_color_optical_frame"
        img.data = self._syn.image(seq % 256, 0, 0).tobytes()
        self.sent.camera.append(stamp)
        self._pubs["camera"].publish(img)
        if "objects" not in self.paused and seq >= OBJECTS_LATENCY_FRAMES:
            self._publish_objects(seq - OBJECTS_LATENCY_FRAMES)

    def _publish_objects(self, frame: int) -> None:
        """Objects of camera frame `frame`: red always (x = frame number), green on even
        frames only, blue never."""
        from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
        array = Detection3DArray()
        array.header.stamp, array.header.frame_id = self._stamp(self.sent.camera[frame]), \
            "base_link"
        for label, x in (("red_cube", float(frame)), ("green_cube", 0.25)):
            if label == "green_cube" and frame % 2:
                continue
            det = Detection3D()
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = label, 0.9
            det.results.append(hyp)
            det.bbox.center.position.x, det.bbox.center.position.z = x, 0.02
            array.detections.append(det)
        self.sent.objects.append(frame)
        self._pubs["objects"].publish(array)

    # ------------------------------------------------------------------ operator side

    def teleop(self, state: str, take: int, take_start: int, take_end: int = 0,
               outcome: str = "", task: str = "teleop task") -> None:
        from armstack_interfaces.msg import EpisodeStatus
        msg = EpisodeStatus(state=state, task=task, source="keyboard", take=take,
                            outcome=outcome, take_start=self._stamp(take_start),
                            take_end=self._stamp(take_end), summary=f"take {take} {state}")
        msg.header.stamp = self._stamp(take_end or take_start)
        self.episode_pub.publish(msg)

    def call(self, service: str, node: NodeProcess, timeout: float = 30.0) -> Any:
        from std_srvs.srv import Trigger
        client = self.node.create_client(Trigger, service)
        try:
            self.spin_until(client.service_is_ready, 20.0, f"service {service}", node)
            future = client.call_async(Trigger.Request())
            self.spin_until(future.done, timeout, f"the answer of {service}", node)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def trigger(self, service: str, node: NodeProcess) -> str:
        """Call `service`, assert it succeeded (else show the answer and the recorder's log
        tail); its message."""
        answer = self.call(service, node)
        if not answer.success:
            # more than one recorder here would answer the same services
            nodes = [n for n in self.node.get_node_names_and_namespaces()
                     if n[1] == TEST_NAMESPACE]
            raise AssertionError(f"{service}: {answer.message}; nodes in {TEST_NAMESPACE}: "
                                 f"{nodes}\n{node.log()[-4000:]}")
        return answer.message

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.diagnostics[status.name] = {"level": int.from_bytes(status.level, "little"),
                                             "message": status.message, **values}

    # ------------------------------------------------------------------ spinning

    def wait_ready(self, node: NodeProcess,
                   streams: tuple[str, ...] = ("state", "action", "camera", "objects")) -> None:
        """Until the recorder has opened its dataset and subscribes to the probe's `streams`."""
        # the log first: a killed recorder's subscriptions outlive it until its lease expires
        self.spin_until(lambda: "episodes so far" in node.log(), 30.0, "the recorder to start",
                        node)
        self.spin_until(lambda: all(self._pubs[s].get_subscription_count() > 0 for s in streams),
                        30.0, "the recorder's subscriptions", node)
        # and its diagnostics: only this recorder sends them, so discovery has reached it (a
        # request to a service whose server is not matched yet is lost)
        self.diagnostics.clear()
        self.spin_until(lambda: "recorder: episode" in self.diagnostics, 30.0,
                        "the recorder's diagnostics", node)
        self.spin_for(0.5)  # a few messages of each stream reach it


@pytest.fixture(scope="module")
def ros_domain(request: pytest.FixtureRequest) -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's own, for the launched recorder and the probe."""
    pytest.importorskip("rclpy")
    pytest.importorskip("armstack_interfaces.msg")
    with ros_domain_env(unique_domain_id(request.module.__name__)) as domain:
        yield domain


class RecorderLauncher:
    """launch(root, **params) -> NodeProcess: a recorder in the probe's namespace; stop_all()
    stops (SIGINT) the ones still running."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self.started: list[NodeProcess] = []

    def __call__(self, root: Path, **params: Any) -> NodeProcess:
        log = self._logs / f"recorder-{len(self.started)}.log"
        node = NodeProcess.ros_node("armstack_recorder", "recorder_node",
                                    recorder_args(root, **params), log, name="recorder",
                                    log_mode="a", stop_timeout=20.0)
        self.started.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.started:
            node.stop()


@pytest.fixture(scope="module")
def launch_module_recorder(ros_domain: int, tmp_path_factory: pytest.TempPathFactory
                           ) -> Iterator[RecorderLauncher]:
    """For a recorder shared by a module's tests; stopped at the module's end."""
    launcher = RecorderLauncher(tmp_path_factory.mktemp("log"))
    yield launcher
    launcher.stop_all()


@pytest.fixture
def launch_recorder(ros_domain: int, tmp_path: Path) -> Iterator[RecorderLauncher]:
    """For a test's own recorders; stopped when the test ends, passed or failed, so a rerun
    never meets a recorder of its first try (both would answer the same services)."""
    logs = tmp_path / "log"
    logs.mkdir()
    launcher = RecorderLauncher(logs)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def probe(ros_domain: int) -> Iterator[RecorderProbe]:
    probe = RecorderProbe("recorder_test_probe")
    yield probe
    probe.close()
