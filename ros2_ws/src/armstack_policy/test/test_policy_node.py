"""policy_node launched for real with a tiny generated ACT model and card, driven over DDS by a
probe that plays the driver (joint_states at 100 Hz) and localization (objects at 30 Hz, stamped
like camera frames 30 ms in the past)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("armstack_interfaces.msg")
pytest.importorskip("onnx")
from armstack_camera.msg_conv import numpy_to_image
from armstack_common.kinematics import ArmKinematics, IKConfig
from armstack_common.paths import urdf_path
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec
from armstack_interfaces.msg import ActionChunk, EndEffectorCommand
from armstack_policy.onnx_policy import CARD_FILE, EXPORT_TOOL, TRAIN_TOOL
from armstack_policy.proof_models import JOINT_NAMES, ProofSpec, write_proof_model
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

CHUNK = 20
STATE = np.array([0.1, -0.2, 0.3, 0.0, 0.4, 0.0, 0.012])
CAMERA_LATENCY = 0.03  # s between a frame's stamp and its objects message
# A namespace of this run's own: other suites on the machine may share the ROS domain.
NS = f"/policy_test_{os.getpid()}/"


def _time(t: float) -> Time:
    sec, nanosec = sec_to_stamp_fields(t)
    return Time(sec=sec, nanosec=nanosec)


class Rig:
    """Probe-side sources and recorders around one launched policy node."""

    def __init__(self, probe, node) -> None:
        self.probe, self.node = probe, node
        self.commands: list[tuple[float, JointState]] = []  # (receive time, message)
        self.chunks: list[ActionChunk] = []
        self.paths: list[Path] = []
        self.diagnostics: dict[str, str] = {}
        self.diagnostic_message = ""
        self.object_stamps: set[float] = set()
        self.camera_delay = CAMERA_LATENCY  # raise it to make the observations stale
        self.publishing_objects = True
        n = probe.node
        self.state_pub = n.create_publisher(JointState, NS + "joint_states", 10)
        self.objects_pub = n.create_publisher(Detection3DArray, NS + "objects", 10)
        self.image_pub = n.create_publisher(Image, NS + "camera/color/image_raw", 10)
        n.create_subscription(JointState, NS + "joint_command",
                              lambda m: self.commands.append((probe.now(), m)), 10)
        n.create_subscription(ActionChunk, NS + "policy/chunk", self.chunks.append, 10)
        n.create_subscription(Path, NS + "policy/path", self.paths.append, 10)
        n.create_subscription(DiagnosticArray, NS + "diagnostics", self._on_diagnostics, 10)
        n.create_timer(0.01, self._publish_state)
        n.create_timer(1 / 30, self._publish_objects)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "policy: policy":
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostic_message = status.message

    def _publish_state(self) -> None:
        msg = JointState(name=[*JOINT_NAMES, "right_finger"],
                         position=[*STATE.tolist(), float(STATE[-1])])
        msg.header.stamp = _time(self.probe.now())
        self.state_pub.publish(msg)

    def _publish_objects(self) -> None:
        if not self.publishing_objects:
            return
        stamp = round(self.probe.now() - self.camera_delay, 9)
        msg = Detection3DArray()
        msg.header.stamp = _time(stamp)
        msg.header.frame_id = "base_link"
        det = Detection3D()
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = "red_cube", 0.9
        hypothesis.pose.pose.position.x, hypothesis.pose.pose.position.y = 0.3, -0.05
        det.results.append(hypothesis)
        msg.detections.append(det)
        self.object_stamps.add(stamp_to_sec(msg.header.stamp))
        self.objects_pub.publish(msg)
        # The frame the objects came from (for image policies; resized by the node).
        self.image_pub.publish(numpy_to_image(np.full((24, 32, 3), 128, np.uint8), "rgb8",
                                              msg.header))

    def call(self, service: str) -> Trigger.Response:
        client = self.probe.node.create_client(Trigger, NS + service)
        try:
            self.probe.spin_until(client.service_is_ready, 10.0, service, self.node)
            future = client.call_async(Trigger.Request())
            self.probe.spin_until(future.done, 10.0, f"{service} response", self.node)
            return future.result()
        finally:
            self.probe.node.destroy_client(client)

    def commands_during(self, seconds: float) -> list[tuple[float, JointState]]:
        first = len(self.commands)
        self.probe.spin_for(seconds)
        return self.commands[first:]


@pytest.fixture(scope="module")
def rig(launch_node, probe, tmp_path_factory) -> Rig:
    model = write_proof_model(tmp_path_factory.mktemp("model"), ProofSpec(chunk_size=CHUNK))
    node = launch_node("-r", f"__ns:={NS.rstrip('/')}", "-p", f"model_path:={model.path}",
                       "-p", "diagnostics_period:=0.3",
                       "-p", "blend_steps:=0", "-p", "max_observation_age:=0.3")
    rig = Rig(probe, node)
    probe.spin_until(lambda: probe.node.count_publishers(NS + "joint_command") > 0
                     and rig.state_pub.get_subscription_count() > 0, 30.0,
                     "the policy node's topics", node)
    return rig


def test_starts_stopped_and_publishes_nothing(rig: Rig):
    assert rig.commands_during(0.6) == []
    rig.probe.spin_until(lambda: rig.diagnostics.get("running") == "False", 3.0,
                         "diagnostics of a stopped policy", rig.node)


def test_commands_at_50_hz_carry_their_chunks_camera_stamp(rig: Rig):
    response = rig.call("policy/start")
    assert response.success and response.message == "started"
    rig.probe.spin_until(lambda: len(rig.commands) > 5, 5.0, "the first joint_command", rig.node)
    received = rig.commands_during(2.0)
    rig.probe.spin_for(0.1)  # every chunk behind those commands has arrived too
    chunks = {stamp_to_sec(c.header.stamp): np.reshape(c.data, (c.horizon, c.dim))
              for c in rig.chunks}
    row_of_chunk: list[tuple[float, int]] = []  # (chunk stamp, row the command is)
    for _, msg in received:
        assert list(msg.name) == list(JOINT_NAMES)
        stamp = stamp_to_sec(msg.header.stamp)
        assert stamp in rig.object_stamps, "command stamp is not a camera frame's"
        # With blend_steps 0 each command is one row of the chunk it carries the stamp of.
        error = np.abs(chunks[stamp] - np.array(msg.position)).max(axis=1)
        assert error.min() < 1e-6
        row_of_chunk.append((stamp, int(error.argmin())))
    newest = [stamp for stamp, _ in row_of_chunk]
    assert newest == sorted(newest) and len(set(newest)) > 10  # fresh frames keep coming
    # The timer, not the frames, paces the stream: one 30 Hz frame's chunk serves several
    # commands, each the next 20 ms row. Counted in rows rather than in wall-clock rate, so a
    # loaded machine does not fail it: it misses periods (a row skipped), or runs a tick over
    # half a period late, which snaps to the next row, and the on-time tick after it repeats
    # that row (ChunkBuffer's control grid). Never backwards.
    steps = [b[1] - a[1] for a, b in zip(row_of_chunk, row_of_chunk[1:]) if a[0] == b[0]]
    assert len(steps) > len(set(newest)) / 2, (len(steps), len(set(newest)))
    assert min(steps) >= 0 and np.median(steps) == 1, steps


def test_chunk_and_path_outputs(rig: Rig):
    def pair():
        chunks = {(c.header.stamp.sec, c.header.stamp.nanosec): c for c in rig.chunks}
        return next(((p, chunks[(p.header.stamp.sec, p.header.stamp.nanosec)])
                     for p in reversed(rig.paths)
                     if (p.header.stamp.sec, p.header.stamp.nanosec) in chunks), None)

    rig.probe.spin_until(lambda: pair() is not None, 5.0, "policy/path and its chunk", rig.node)
    path, chunk = pair()
    assert (chunk.horizon, chunk.dim, chunk.period) == (CHUNK, 7, pytest.approx(0.02))
    assert list(chunk.names) == list(JOINT_NAMES)
    assert path.header.frame_id == "base_link" and len(path.poses) == CHUNK
    kinematics = ArmKinematics(urdf_path(), IKConfig(start_table_size=0))
    rows = np.reshape(chunk.data, (CHUNK, 7))
    for i in (0, CHUNK - 1):
        p = path.poses[i].pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], kinematics.fk(rows[i, :6])[:3, 3], atol=1e-9)
        assert stamp_to_sec(path.poses[i].header.stamp) == pytest.approx(
            stamp_to_sec(chunk.header.stamp) + 0.02 * i, abs=1e-6)  # float64 seconds near 1.8e9 s: 2.4e-7 s apart


def test_stale_observations_make_the_policy_hold(rig: Rig):
    rig.camera_delay = 1.0  # frames arrive, but a second old
    rig.probe.spin_for(0.7)  # the last good chunk (0.4 s of actions) runs out
    assert rig.commands_during(0.5) == []
    rig.probe.spin_until(lambda: int(rig.diagnostics.get("stale_observations", 0)) > 3, 3.0,
                         "stale observations in diagnostics", rig.node)
    assert "max_observation_age" in rig.diagnostic_message
    rig.camera_delay = CAMERA_LATENCY
    rig.probe.spin_until(lambda: len(rig.commands_during(0.1)) > 0, 3.0,
                         "commands after fresh frames return", rig.node)


def test_objects_stopping_also_holds(rig: Rig):
    rig.publishing_objects = False
    rig.probe.spin_for(0.7)
    assert rig.commands_during(0.5) == []
    rig.probe.spin_until(lambda: "holding" in rig.diagnostic_message, 3.0,
                         "a holding diagnostic", rig.node)
    rig.publishing_objects = True
    rig.probe.spin_until(lambda: len(rig.commands_during(0.1)) > 0, 3.0,
                         "commands after objects return", rig.node)


def test_stop_start_and_reset_services(rig: Rig):
    assert rig.call("policy/stop").message.startswith("stopped")
    rig.probe.spin_for(0.1)  # commands in flight
    assert rig.commands_during(0.5) == []
    assert rig.call("policy/stop").message == "already stopped"
    assert rig.call("policy/start").message == "started"
    assert rig.call("policy/start").message == "already running"
    rig.probe.spin_until(lambda: len(rig.commands_during(0.1)) > 0, 3.0,
                         "commands after a restart", rig.node)
    assert rig.call("policy/reset").success
    rig.probe.spin_until(lambda: len(rig.commands_during(0.1)) > 0, 3.0,
                         "commands after a reset", rig.node)


def test_diagnostics_report_timing(rig: Rig):
    rig.probe.spin_for(0.7)
    values = rig.diagnostics
    assert values["running"] == "True"
    # Values are the benchmark's business (tools/bench_policy_node.py); here: they are measured.
    for key in ("inference_ms_median", "inference_ms_p99", "control_jitter_ms_median",
                "control_jitter_ms_p99", "control_jitter_ms_max"):
        assert 0.0 <= float(values[key]) < 1e4, (key, values[key])
    assert int(values["missed_periods"]) >= 0 and int(values["buffer_depth"]) >= 1
    assert int(values["chunks_accepted"]) > 50


def test_a_diffusion_ee_policy_publishes_ee_command(rig: Rig, launch_node, tmp_path):
    """Second node: end-effector actions, DDIM in the loop, a camera image in the observation,
    running from the start, sampling as many chunks per observation as its card says. It reads
    the first rig's inputs (remapped into its namespace)."""
    spec = ProofSpec(kind="diffusion", action_kind="ee", chunk_size=16, n_obs_steps=2,
                     cameras=("front",), image_size=(12, 16))
    model = write_proof_model(tmp_path, spec)
    card_path = model.path.with_name(CARD_FILE)
    card = json.loads(card_path.read_text())
    card["diffusion"]["samples"] = 2
    card_path.write_text(json.dumps(card))
    ns = NS + "ee/"
    commands: list[EndEffectorCommand] = []
    rig.probe.node.create_subscription(EndEffectorCommand, ns + "ee_command", commands.append, 10)
    node = launch_node("-r", f"__ns:={ns.rstrip('/')}", "-r", "__node:=policy_ee",
                       "-r", f"joint_states:={NS}joint_states", "-r", f"objects:={NS}objects",
                       "-r", f"camera/color/image_raw:={NS}camera/color/image_raw",
                       "-p", f"model_path:={model.path}", "-p", "start_running:=true")
    rig.probe.spin_until(lambda: len(commands) > 20, 20.0, "ee_command", node)
    assert rig.probe.node.count_publishers(ns + "joint_command") == 0
    for msg in commands[-10:]:
        assert msg.header.frame_id == "base_link"
        assert stamp_to_sec(msg.header.stamp) in rig.object_stamps
        o = msg.pose.orientation
        assert np.linalg.norm([o.x, o.y, o.z, o.w]) == pytest.approx(1.0)
    assert f"2 sample(s) of {spec.num_inference_steps} DDIM steps" in node.log()


def test_missing_model_exits_non_zero_naming_the_path_and_tools(launch_node, probe, tmp_path):
    missing = tmp_path / "nope" / "policy.onnx"
    node = launch_node("-r", "__node:=policy_missing", "-p", f"model_path:={missing}")
    assert node.proc.wait(30.0) != 0
    log = node.log()
    assert str(missing) in log and TRAIN_TOOL in log and EXPORT_TOOL in log
