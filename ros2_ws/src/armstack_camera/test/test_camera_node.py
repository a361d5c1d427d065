"""camera_node launched for real: folder replay and a RealSense recording on the wire."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from armstack_camera.calibration import CameraModel, load_camera_file, write_ros_camera_yaml
from armstack_camera.msg_conv import image_to_numpy
from armstack_camera.node_testing import Listener, NodeProcess, isolated_domain_id
from armstack_camera.qos import TF_STATIC_LISTENER_QOS, image_qos
from armstack_common import paths
from armstack_common.node_main import EXIT_CANNOT_START
from armstack_common.timeutil import stamp_to_sec

MODULE = "armstack_camera.camera_node"
H, W = 48, 64
DOMAIN = isolated_domain_id()
TOPICS = {
    "color": "camera/color/image_raw",
    "info": "camera/color/camera_info",
    "depth": "camera/aligned_depth_to_color/image_raw",
}


@pytest.fixture
def listener():
    with Listener(DOMAIN, "camera_test") as lis:
        yield lis


def subscribe_camera(listener: Listener) -> dict[str, list]:
    qos = image_qos("reliable")
    return {
        "color": listener.collect(Image, TOPICS["color"], qos),
        "info": listener.collect(CameraInfo, TOPICS["info"], qos),
        "depth": listener.collect(Image, TOPICS["depth"], qos),
    }


def make_folder(root, n: int) -> None:
    (root / "color").mkdir()
    (root / "depth").mkdir()
    for i in range(n):
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[:, :, 2] = 10 * i + 5  # red channel encodes the image index
        cv2.imwrite(str(root / "color" / f"{i:02d}.png"), bgr)
        cv2.imwrite(str(root / "depth" / f"{i:02d}.png"), np.full((H, W), 700 + i, np.uint16))
    write_ros_camera_yaml(
        root / "camera_info.yaml", CameraModel.pinhole(W, H, 50.0, 51.0, 31.5, 23.5)
    )


def test_folder_source_publishes_three_topics_with_matching_stamps(tmp_path, listener):
    make_folder(tmp_path, 4)
    got = subscribe_camera(listener)
    tf_static = listener.collect(TFMessage, "tf_static", TF_STATIC_LISTENER_QOS)
    diagnostics = listener.collect(DiagnosticArray, "diagnostics", 10)
    params = {
        "source": "folder",
        "folder.path": str(tmp_path),
        "fps": 20.0,
        "diagnostics_period_s": 0.5,
    }
    with NodeProcess(MODULE, params, DOMAIN) as node:
        ok = listener.spin_until(
            lambda: all(len(got[k]) >= 6 for k in got) and tf_static and len(diagnostics) >= 2,
            timeout_s=25.0,
            process=node,
        )
        assert ok, node.output()
        assert node.stop() == 0, node.output()

    for _, msg in got["color"]:
        assert (msg.encoding, msg.width, msg.height) == ("rgb8", W, H)
        assert msg.header.frame_id == "camera_color_optical_frame"
        index = (int(image_to_numpy(msg)[0, 0, 0]) - 5) // 10
        assert 0 <= index < 4 and np.all(image_to_numpy(msg)[:, :, 0] == 10 * index + 5)
    for _, msg in got["depth"]:
        assert (msg.encoding, msg.width, msg.height) == ("16UC1", W, H)
        assert 700 <= image_to_numpy(msg)[0, 0] <= 703
    info = got["info"][-1][1]
    assert (info.width, info.height) == (W, H)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3))[0], [50.0, 0.0, 31.5])

    # Every frame's three messages carry the same capture stamp, taken before publishing.
    stamps = {k: {stamp_to_sec(m.header.stamp) for _, m in got[k]} for k in got}
    common = stamps["color"] & stamps["depth"] & stamps["info"]
    assert len(common) >= 4
    for received, msg in got["color"]:
        assert 0.0 <= received - stamp_to_sec(msg.header.stamp) < 1.0
    color_stamps = sorted(stamps["color"])
    assert np.median(np.diff(color_stamps)) == pytest.approx(0.05, abs=0.01)  # 20 fps

    # The calibrated mounting goes out on tf_static.
    transform = tf_static[-1][1].transforms[0]
    _, extrinsics = load_camera_file(paths.config_file("camera/calibration.yaml"))
    assert transform.header.frame_id == "base_link"
    assert transform.child_frame_id == "camera_color_optical_frame"
    assert transform.transform.translation.x == pytest.approx(extrinsics.translation[0])

    status = diagnostics[-1][1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == "camera: capture" and values["state"] == "streaming"
    assert int(values["frames"]) >= 6 and status.level == b"\x00", status.message


def _transition(listener: Listener, transition_id: int) -> bool:
    client = listener.node.create_client(ChangeState, "camera/change_state")
    assert listener.spin_until(client.service_is_ready, 10.0)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    assert listener.spin_until(future.done, 10.0)
    return future.result().success


def _state(listener: Listener) -> str:
    client = listener.node.create_client(GetState, "camera/get_state")
    assert listener.spin_until(client.service_is_ready, 10.0)
    future = client.call_async(GetState.Request())
    assert listener.spin_until(future.done, 10.0)
    return future.result().current_state.label


def test_lifecycle_publishes_only_while_active_and_cleanup_releases(tmp_path, listener):
    make_folder(tmp_path, 2)
    got = subscribe_camera(listener)
    diagnostics = listener.collect(DiagnosticArray, "diagnostics", 10)
    params = {
        "source": "folder",
        "folder.path": str(tmp_path),
        "fps": 20.0,
        "autostart": False,
        "diagnostics_period_s": 0.2,
        "extrinsics_file": "",
    }

    def capture_state() -> str:
        values = {kv.key: kv.value for kv in diagnostics[-1][1].status[0].values}
        return values.get("state", "unconfigured")

    with NodeProcess(MODULE, params, DOMAIN) as node:
        assert _state(listener) == "unconfigured"
        assert _transition(listener, Transition.TRANSITION_CONFIGURE)
        # Configured: the device is acquired and streaming, but nothing is published.
        assert listener.spin_until(lambda: diagnostics and capture_state() == "streaming", 10.0)
        listener.spin_until(lambda: False, 0.5)
        assert got["color"] == []
        assert _transition(listener, Transition.TRANSITION_ACTIVATE)
        assert listener.spin_until(lambda: len(got["color"]) >= 3, 10.0), node.output()
        assert _transition(listener, Transition.TRANSITION_DEACTIVATE)
        listener.spin_until(lambda: False, 0.3)  # let frames already in flight arrive
        count = len(got["color"])
        listener.spin_until(lambda: False, 0.5)
        assert len(got["color"]) == count
        assert _transition(listener, Transition.TRANSITION_CLEANUP)
        # Released: the capture thread is gone, diagnostics say so.
        n = len(diagnostics)
        assert listener.spin_until(lambda: len(diagnostics) > n + 1, 5.0)
        assert diagnostics[-1][1].status[0].message == "not configured"
        assert _state(listener) == "unconfigured"
        assert node.stop() == 0, node.output()


def test_folder_that_does_not_exist_is_reported_and_retried(tmp_path, listener):
    diagnostics = listener.collect(DiagnosticArray, "diagnostics", 10)
    params = {
        "source": "folder",
        "folder.path": str(tmp_path / "missing"),
        "diagnostics_period_s": 0.2,
        "reconnect_backoff_s": 0.05,
        "reconnect_backoff_max_s": 0.1,
        "extrinsics_file": "",
    }

    def reconnecting() -> bool:
        if not diagnostics:
            return False
        status = diagnostics[-1][1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        return int(values.get("reconnects", 0)) >= 2

    with NodeProcess(MODULE, params, DOMAIN) as node:
        assert listener.spin_until(reconnecting, timeout_s=20.0, process=node), node.output()
        status = diagnostics[-1][1].status[0]
        assert status.level == b"\x02" and "image folder not found" in status.message
        assert node.stop() == 0  # the node kept running; it exits cleanly on SIGINT


@pytest.mark.parametrize(
    "params, message",
    [
        ({"source": "folder"}, "folder.path must be set"),
        ({"fps": 30}, "fps"),  # an integer for a float parameter
        ({"source": "kinect"}, "source='kinect' is not one of"),
    ],
)
def test_invalid_parameters_stop_the_node_with_the_field_named(params, message):
    with NodeProcess(MODULE, params, DOMAIN) as node:
        code = node.wait(20.0)
        out = node.output()
    assert code == EXIT_CANNOT_START and message in out and "Traceback" not in out, out


def test_realsense_recording_plays_through_the_node(tmp_path, listener, synthetic_rs):
    path = synthetic_rs.record(tmp_path, 12)
    got = subscribe_camera(listener)
    params = {"source": "realsense", "realsense.playback_file": str(path), "fps": 30.0}
    with NodeProcess(MODULE, params, DOMAIN) as node:
        ok = listener.spin_until(
            lambda: all(len(got[k]) >= 3 for k in got), timeout_s=25.0, process=node
        )
        assert ok, node.output()
        assert node.stop() == 0, node.output()
    depth = image_to_numpy(got["depth"][-1][1])
    assert depth.shape == (48, 64) and depth[24, 32] == synthetic_rs.BOX_DEPTH_MM
    info = got["info"][-1][1]
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), synthetic_rs.COLOR.K)  # the device's
    # Stamped with the wall clock when played, not the recording's own time: compared with the
    # time the frame arrived, not with now (stopping the node can take seconds on a slow machine)
    received, color = got["color"][-1]
    assert abs(stamp_to_sec(color.header.stamp) - received) < 2.0
