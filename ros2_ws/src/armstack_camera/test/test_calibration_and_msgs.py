"""Camera files of both formats, and Image / CameraInfo <-> numpy conversions."""

from __future__ import annotations

import array

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from armstack_camera.calibration import CameraModel, load_camera_file, write_ros_camera_yaml
from armstack_camera.msg_conv import (
    camera_info_from_model,
    camera_model_from_info,
    image_to_depth_mm,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
)
from armstack_common import paths

RNG = np.random.default_rng(7)


def test_reads_the_repository_calibration_file():
    model, extrinsics = load_camera_file(paths.config_file("camera/calibration.yaml"))
    assert (model.width, model.height) == (640, 480)
    assert model.frame_id == "camera_color_optical_frame"
    assert model.K[0, 0] > 0 and model.K[1, 1] > 0 and model.K[2, 2] == 1.0
    assert extrinsics is not None and extrinsics.parent_frame == "base_link"
    assert extrinsics.child_frame == model.frame_id
    np.testing.assert_allclose(np.linalg.norm(extrinsics.rotation_xyzw), 1.0)


def test_ros_format_round_trip(tmp_path):
    model = CameraModel.pinhole(
        1280, 720, 910.0, 905.5, 641.2, 362.8, D=(0.1, -0.2, 0.001, 0.002, 0.05)
    )
    path = tmp_path / "cam.yaml"
    write_ros_camera_yaml(path, model)
    loaded, extrinsics = load_camera_file(path, frame_id="my_optical")
    assert extrinsics is None
    assert loaded.frame_id == "my_optical"
    assert (loaded.width, loaded.height, loaded.D) == (1280, 720, model.D)
    np.testing.assert_allclose(loaded.K, model.K)
    np.testing.assert_allclose(loaded.projection(), model.projection())


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "image_width: 10\nimage_height: 10\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2]}\n",
            "camera_matrix.data must have 9",
        ),
        (
            "image_height: 10\ncamera_matrix: {rows: 3, cols: 3, data: [1,0,0,0,1,0,0,0,1]}\n",
            "missing key image_width",
        ),
        ("width: 10\nheight: 10\nfx: 0\nfy: 1\ncx: 1\ncy: 1\n", "fx must be > 0"),
        ("width: 10\nheight: 10\nfx: 1\nfy: 1\ncx: 1\n", "missing key cy"),
        (
            "width: 10\nheight: 10\nfx: 1\nfy: 1\ncx: 1\ncy: 1\n"
            "extrinsics: {translation: [0, 0]}\n",
            "missing key extrinsics.rotation_xyzw",
        ),
        ("something: else\n", "neither a ROS camera_calibration file"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_camera_files_name_the_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_camera_file(path)


@pytest.mark.parametrize(
    "encoding, shape, dtype",
    [
        ("rgb8", (5, 7, 3), np.uint8),
        ("bgr8", (4, 3, 3), np.uint8),
        ("rgba8", (2, 6, 4), np.uint8),
        ("mono8", (3, 9), np.uint8),
        ("16UC1", (6, 5), np.uint16),
        ("32FC1", (4, 4), np.float32),
    ],
)
def test_image_round_trip(encoding, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        arr = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    else:
        arr = RNG.normal(size=shape).astype(dtype)
    msg = numpy_to_image(arr, encoding)
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert isinstance(msg.data, array.array)
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_padded_rows_and_big_endian_depth_are_read_correctly():
    depth = np.array([[1, 2, 300], [40000, 5, 65535]], dtype=np.uint16)
    msg = Image(height=2, width=3, encoding="16UC1", is_bigendian=1, step=8)  # 2 bytes padding
    rows = [depth[r].astype(">u2").tobytes() + b"\xff\xff" for r in range(2)]
    msg.data = array.array("B", b"".join(rows))
    np.testing.assert_array_equal(image_to_depth_mm(msg), depth)


def test_colour_encodings_convert_to_rgb():
    rgb = RNG.integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb[:, :, ::-1].copy(), "bgr8")), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((3, 4, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(bgra, "bgra8")), rgb)


def test_float_depth_in_metres_becomes_millimetres_with_invalid_as_zero():
    metres = np.array([[0.5, np.nan, -1.0], [1.2344, np.inf, 70.0]], dtype=np.float32)
    mm = image_to_depth_mm(numpy_to_image(metres, "32FC1"))
    np.testing.assert_array_equal(mm, [[500, 0, 0], [1234, 0, 65535]])


@pytest.mark.parametrize(
    "arr, encoding, match",
    [
        (np.zeros((2, 2, 3), np.uint8), "16UC1", "needs uint16 with 1 channel"),
        (np.zeros((2, 2), np.uint16), "rgb8", "needs uint8 with 3 channel"),
        (np.zeros((2, 2), np.uint8), "yuv422", "unsupported image encoding"),
    ],
)
def test_wrong_array_for_encoding_is_refused(arr, encoding, match):
    with pytest.raises(ValueError, match=match):
        numpy_to_image(arr, encoding)


def test_truncated_image_data_is_refused():
    msg = Image(height=4, width=4, encoding="rgb8", step=12)
    msg.data = array.array("B", bytes(40))
    with pytest.raises(ValueError, match="image data too short"):
        image_to_numpy(msg)


def test_camera_info_round_trip():
    model = CameraModel.pinhole(
        640, 480, 615.3, 615.6, 322.5, 238.0, D=(0.01, -0.02, 0, 0, 0.003), frame_id="cam_optical"
    )
    msg = camera_info_from_model(model)
    assert isinstance(msg, CameraInfo)
    assert msg.distortion_model == "plumb_bob" and len(msg.d) == 5
    np.testing.assert_allclose(np.reshape(msg.p, (3, 4))[:, :3], model.K)
    msg.header.frame_id = "cam_optical"
    back = camera_model_from_info(msg)
    np.testing.assert_allclose(back.K, model.K)
    assert back.D == model.D and back.frame_id == "cam_optical"
    assert (
        camera_model_from_info(camera_info_from_model(CameraModel.uncalibrated(8, 6))).calibrated
        is False
    )
