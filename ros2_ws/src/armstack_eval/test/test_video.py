"""Projection of a path into the camera image, the overlay, and the MP4 writer."""

from __future__ import annotations

import av
import numpy as np
import pytest

from armstack_common import paths
from armstack_eval.video import AnnotatedVideo, Box, Projector, StampHistory, VideoWriter, draw_overlay

K = np.array([[600.0, 0.0, 320.0], [0.0, 610.0, 240.0], [0.0, 0.0, 1.0]])


def _looking_down(height: float = 1.0) -> Projector:
    """A camera `height` m above base_link's origin looking straight down (optical z = -z),
    optical x along base x, so optical y = -base y."""
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[2, 3] = height
    return Projector(K, np.zeros(5), pose, 640, 480)


@pytest.mark.parametrize("point, pixel", [
    ((0.0, 0.0, 0.0), (320.0, 240.0)),  # on the optical axis: the principal point
    ((0.1, 0.0, 0.0), (380.0, 240.0)),  # u = fx * x / z + cx
    ((0.0, 0.1, 0.0), (320.0, 179.0)),  # base +y is optical -y
    ((0.1, -0.2, 0.5), (440.0, 484.0)),  # half the depth: twice the offset
])
def test_projection_follows_the_pinhole_model(point, pixel):
    uv, front = _looking_down().project(np.array([point]))
    np.testing.assert_allclose(uv[0], pixel, atol=1e-6)
    assert front[0]


def test_points_behind_the_camera_are_flagged():
    _, front = _looking_down().project(np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 1.5]]))
    assert front.tolist() == [True, False]


def test_a_path_over_the_table_lands_in_the_image_of_the_calibrated_camera():
    projector = Projector.from_calibration(paths.config_file("camera/calibration.yaml"))
    # Deproject pixels at known depths with the calibration, then project them back.
    pixels = np.array([[100.0, 50.0], [320.0, 240.0], [600.0, 400.0]])
    depth = np.array([0.5, 0.8, 1.1])
    rays = np.linalg.solve(projector.K, np.vstack([pixels.T, np.ones(3)])).T * depth[:, None]  # (3, 3) optical
    in_base = rays @ projector.camera_pose[:3, :3].T + projector.camera_pose[:3, 3]
    uv, front = projector.project(in_base)
    np.testing.assert_allclose(uv, pixels, atol=1e-6)
    assert front.all()
    # The robot base (base_link origin) is in front of the camera and inside the image.
    uv, front = projector.project(np.zeros((1, 3)))
    assert front[0] and 0 <= uv[0, 0] < 640 and 0 <= uv[0, 1] < 480


def test_overlay_draws_where_the_path_and_boxes_are():
    image = np.zeros((480, 640, 3), np.uint8)
    path = np.array([[100.0, 100.0], [300.0, 100.0]])
    out = draw_overlay(image, [Box("red", 0.9, 500.0, 300.0, 40.0, 40.0)], path, np.array([50.0, 400.0]),
                       ("episode 1",))
    assert image.max() == 0  # the input is not drawn on
    assert out[100, 200].any()  # on the path's segment
    assert out[280, 500].any()  # the box's top edge
    assert out[400, 50].any()  # the target marker
    assert not out[300, 300].any()


def test_stamp_history_gives_the_newest_at_or_before():
    history = StampHistory(3)
    for stamp in (10, 30, 20, 40):
        history.add(stamp, f"v{stamp}")
    assert history.at(5) is None  # 10 was dropped (size 3) - nothing at or before 5 anyway
    assert history.at(25) == "v20" and history.at(30) == "v30" and history.at(99) == "v40"


def test_video_writer_and_annotated_video_write_a_decodable_mp4(tmp_path):
    writer = VideoWriter(tmp_path / "a.mp4", 64, 48, 10)
    for k in range(12):
        writer.add(np.full((48, 64, 3), 20 * k, np.uint8))
    writer.close()
    with av.open(str(tmp_path / "a.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 12 and frames[0].width == 64

    video = AnnotatedVideo(tmp_path / "b.mp4", _looking_down(), fps=10.0, delay=0.0)
    for k in range(30):  # 30 frames at 30 Hz: every third is kept at 10 fps
        video.frame(1_000_000_000 + k * 33_333_333, np.zeros((48, 64, 3), np.uint8), 0.0)
    assert video.close() == 10
