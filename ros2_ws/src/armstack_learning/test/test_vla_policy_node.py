"""A VLA in the policy node: a tiny VLA exported to ONNX (prefill + step graphs with the KV
cache) runs in policy_node, launched for real, with camera frames, joint_states and the
instruction arriving over DDS from a probe.

Without an instruction the arm holds and diagnostics say why; after one arrives on
policy/instruction (std_msgs/String) every chunk the node publishes is the chunk the runtime's
own loader decodes for that frame and instruction; a new instruction replaces the plan; the
instruction parameter serves before any message; a malformed one stops the node, named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")
pytest.importorskip("rclpy")
pytest.importorskip("armstack_interfaces.msg")

from armstack_camera.msg_conv import numpy_to_image  # noqa: E402
from armstack_common.testing import NodeProcess, Probe, ros_domain_env, unique_domain_id  # noqa: E402
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec  # noqa: E402
from armstack_interfaces.msg import ActionChunk, EndEffectorCommand  # noqa: E402
from armstack_learning.features import JOINT_NAMES  # noqa: E402
from armstack_learning.vla_export import build_vla_card, export_vla_onnx  # noqa: E402
from armstack_policy.observation import image_feature  # noqa: E402
from armstack_policy.onnx_policy import CARD_FILE, RunnerConfig  # noqa: E402
from armstack_policy.vla_decode import load_vla_policy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

NS = f"/vla_node_test_{os.getpid()}/"
RED, BLUE = "put the red cube in the bin", "put the blue cube in the bin"
STATE = np.array([0.1, -0.2, 0.3, 0.0, 0.4, 0.0, 0.02], np.float32)
CKPT = {"dataset": {"fps": 10, "path": "synthetic", "sha256": "0" * 64, "episodes": 4,
                    "frames": 48},
        "step": 0, "train_config": {"normalization": {}}}


def _time(t: float) -> Time:
    sec, nanosec = sec_to_stamp_fields(t)
    return Time(sec=sec, nanosec=nanosec)


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    """(prefill graph path, a camera frame) of an untrained tiny VLA exported with its card."""
    policy, _ = make_vla(tiny_vla_config(n_layers=1, chunk_size=3), vla_dataset_root,
                         vla_layout, seed=2)
    # Untrained, it decodes one bin whatever the instruction: large random output and FiLM
    # weights make the chunk depend on the instruction, so the test can tell them apart.
    with torch.no_grad():
        policy.net.head.weight.normal_(0.0, 1.0)
        for film in policy.net.patches.films:
            film.weight.normal_(0.0, 2.0)
    out = tmp_path_factory.mktemp("vla_node_model")
    prefill, _ = export_vla_onnx(policy, out)
    (out / CARD_FILE).write_text(json.dumps(build_vla_card(policy, CKPT, "raw")))
    h, w = policy.input_image_size
    frame = np.full((h, w, 3), 128, np.uint8)
    frame[4:10, 6:12] = (220, 30, 30)
    frame[20:26, 14:20] = (30, 30, 220)
    return prefill, frame


def expected_chunk(model_path, frame: np.ndarray, instruction: str) -> np.ndarray:
    """What the runtime's loader decodes for the probe's frame and state under `instruction`."""
    runner = load_vla_policy(model_path, RunnerConfig())
    runner.set_instruction(instruction)
    size = runner.card.cameras[0][1:]
    return runner.predict_chunk({"observation.state": STATE[None],
                                 "observation.images.color": image_feature(frame, size)[None]})


class Rig:
    """The probe's camera (10 Hz) and driver (100 Hz) and what it hears from the node."""

    def __init__(self, probe: Probe, frame: np.ndarray) -> None:
        self.probe, self.frame = probe, frame
        self.commands: list[EndEffectorCommand] = []
        self.chunks: list[ActionChunk] = []
        self.status: dict[str, str] = {}
        self.frame_stamps: set[float] = set()
        n = probe.node
        self.state_pub = n.create_publisher(JointState, NS + "joint_states", 10)
        self.image_pub = n.create_publisher(Image, NS + "camera/color/image_raw", 10)
        self.instruction_pub = n.create_publisher(String, NS + "policy/instruction", 10)
        n.create_subscription(EndEffectorCommand, NS + "ee_command", self.commands.append, 10)
        n.create_subscription(ActionChunk, NS + "policy/chunk", self.chunks.append, 10)
        n.create_subscription(DiagnosticArray, NS + "diagnostics", self._on_diagnostics, 10)
        n.create_timer(0.01, self._publish_state)
        n.create_timer(0.1, self._publish_frame)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": policy"):
                self.status = {kv.key: kv.value for kv in status.values}

    def _publish_state(self) -> None:
        msg = JointState(name=list(JOINT_NAMES), position=STATE.astype(float).tolist())
        msg.header.stamp = _time(self.probe.now())
        self.state_pub.publish(msg)

    def _publish_frame(self) -> None:
        stamp = round(self.probe.now() - 0.02, 9)
        msg = numpy_to_image(self.frame, "rgb8", None)
        msg.header.stamp = _time(stamp)
        self.frame_stamps.add(stamp_to_sec(msg.header.stamp))
        self.image_pub.publish(msg)


@pytest.fixture(scope="module")
def domain():
    with ros_domain_env(unique_domain_id()) as domain_id:
        yield domain_id


@pytest.fixture(scope="module")
def probe(domain):
    probe = Probe("vla_node_test_probe")
    yield probe
    probe.close()


def _launch(tmp_path, *args: str) -> NodeProcess:
    return NodeProcess.ros_node("armstack_policy", "policy_node", args,
                                tmp_path / "policy_node.log")


def test_holds_without_an_instruction_then_runs_each_instruction_it_is_given(
        model, probe, tmp_path):
    model_path, frame = model
    rig = Rig(probe, frame)
    node = _launch(tmp_path, "-r", f"__ns:={NS.rstrip('/')}", "-p", f"model_path:={model_path}",
                   "-p", "start_running:=true", "-p", "diagnostics_period:=0.3")
    try:
        probe.spin_until(lambda: int(rig.status.get("policy_not_ready", 0)) >= 3, 30.0,
                         "observations held for want of an instruction", node)
        assert rig.commands == [] and rig.chunks == []
        assert rig.status["instruction"] == "-"
        assert "no instruction" in rig.status["last_problem"]

        wanted = {i: expected_chunk(model_path, frame, i) for i in (RED, BLUE)}
        assert np.abs(wanted[RED] - wanted[BLUE]).max() > 1e-3  # else the check below is blind
        for instruction, want in wanted.items():
            rig.instruction_pub.publish(String(data=instruction))
            probe.spin_until(lambda i=instruction: rig.status.get("instruction") == i, 10.0,
                             f"the instruction {instruction!r} in diagnostics", node)
            first = len(rig.chunks)
            probe.spin_until(lambda f=first: len(rig.chunks) >= f + 3, 10.0, "chunks", node)
            # Chunks in flight when the instruction changed were dropped; all later are its own.
            for chunk in rig.chunks[first + 1:]:
                got = np.array(chunk.data).reshape(chunk.horizon, chunk.dim)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert int(rig.status["errors"]) == 0
        # Commands flow from the chunks (a count, not a rate: a loaded machine is slower).
        probe.spin_until(lambda: len(rig.commands) > 5, 10.0, "ee_command", node)
        for msg in rig.commands[-5:]:
            assert stamp_to_sec(msg.header.stamp) in rig.frame_stamps
            assert msg.header.frame_id == "base_link"
    finally:
        assert node.stop() == 0, node.log()


def test_instruction_parameter_serves_until_a_message_and_a_bad_one_is_named(
        model, probe, tmp_path):
    model_path, frame = model
    rig = Rig(probe, frame)
    node = _launch(tmp_path, "-r", f"__ns:={NS.rstrip('/')}", "-r", "__node:=policy_param",
                   "-p", f"model_path:={model_path}", "-p", "start_running:=true",
                   "-p", f"instruction:={BLUE}")
    try:
        want = expected_chunk(model_path, frame, BLUE)
        probe.spin_until(lambda: len(rig.chunks) >= 2, 30.0, "chunks", node)
        got = np.array(rig.chunks[-1].data).reshape(rig.chunks[-1].horizon, rig.chunks[-1].dim)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    finally:
        assert node.stop() == 0, node.log()

    too_long = "put the red cube in the bin and then the blue cube in the bin"
    bad = _launch(tmp_path / "..", "-r", "__node:=policy_bad", "-p", f"model_path:={model_path}",
                  "-p", f"instruction:={too_long}")
    assert bad.wait(30.0) != 0
    assert "parameter instruction" in bad.log(), bad.log()
