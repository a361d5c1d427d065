"""Folder replay and OpenCV (V4L2 / video file) sources on generated files."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from armstack_camera.calibration import CameraModel, write_ros_camera_yaml
from armstack_camera.folder_source import FolderSource
from armstack_camera.source import EndOfStream, SourceError
from armstack_camera.v4l2_source import V4l2Source

H, W = 24, 32


def make_folder(root: Path, n: int, depth: bool = True, info: bool = True) -> list[np.ndarray]:
    """n colour images (distinct solid colours) in root/color, depth in root/depth (mm)."""
    (root / "color").mkdir(parents=True)
    colours = []
    for i in range(n):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 40 * i, 255 - 40 * i, 7
        cv2.imwrite(
            str(root / "color" / f"frame_{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        )
        colours.append(rgb)
        if depth:
            (root / "depth").mkdir(exist_ok=True)
            cv2.imwrite(
                str(root / "depth" / f"frame_{i:03d}.png"), np.full((H, W), 500 + i, np.uint16)
            )
    if info:
        write_ros_camera_yaml(root / "camera_info.yaml", CameraModel.pinhole(W, H, 30, 30, 16, 12))
    return colours


def test_folder_replays_in_order_with_depth_model_and_loop(tmp_path):
    colours = make_folder(tmp_path, 3)
    source = FolderSource(tmp_path, fps=100.0, loop=True, frame_id="cam")
    info = source.open()
    assert (info.width, info.height, info.has_depth) == (W, H, True)
    assert info.model is not None and info.model.frame_id == "cam" and info.model.K[0, 0] == 30
    frames = [source.read(1.0) for _ in range(5)]
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.color, colours[k % 3])
        assert frame.depth_mm.dtype == np.uint16 and frame.depth_mm[0, 0] == 500 + k % 3
    assert [f.frame_number for f in frames] == [1, 2, 3, 4, 5]
    stamps = np.array([f.stamp_s for f in frames])
    assert abs(stamps[-1] - time.time()) < 1.0  # wall-clock capture times
    source.close()


def test_folder_is_paced_at_its_rate(tmp_path):
    make_folder(tmp_path, 2, depth=False, info=False)
    source = FolderSource(tmp_path, fps=50.0)
    info = source.open()
    assert not info.has_depth and info.model is None
    stamps = [source.read(1.0).stamp_s for _ in range(11)]
    assert np.median(np.diff(stamps)) == pytest.approx(0.02, abs=0.004)


def test_folder_without_loop_ends(tmp_path):
    make_folder(tmp_path, 2)
    source = FolderSource(tmp_path, fps=200.0, loop=False)
    source.open()
    source.read(1.0), source.read(1.0)
    with pytest.raises(EndOfStream):
        source.read(1.0)


def test_folder_read_returns_none_within_a_short_timeout(tmp_path):
    make_folder(tmp_path, 1, depth=False)
    source = FolderSource(tmp_path, fps=0.5)
    source.open()
    assert source.read(1.0) is not None
    t0 = time.monotonic()
    assert source.read(0.05) is None  # next frame due in 2 s
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize(
    "break_it, match",
    [
        (lambda root: (root / "depth" / "frame_001.png").unlink(), "have no depth image"),
        (
            lambda root: cv2.imwrite(
                str(root / "depth" / "frame_000.png"), np.zeros((H, W), np.uint8)
            ),
            "must be 16-bit single channel",
        ),
        (
            lambda root: cv2.imwrite(
                str(root / "depth" / "frame_000.png"), np.zeros((H + 1, W), np.uint16)
            ),
            "is \\(25, 32\\)",
        ),
    ],
)
def test_folder_depth_problems_name_the_file(tmp_path, break_it, match):
    make_folder(tmp_path, 2)
    break_it(tmp_path)
    source = FolderSource(tmp_path, fps=100.0)
    with pytest.raises(SourceError, match=match):
        source.open()
        source.read(1.0)


def test_missing_or_empty_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="image folder not found"):
        FolderSource(tmp_path / "nope", fps=10).open()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path, fps=10).open()


def test_opencv_source_reads_a_video_file_and_fails_cleanly_at_its_end(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (W * 2, H * 2))
    assert writer.isOpened()
    for i in range(4):
        bgr = np.zeros((H * 2, W * 2, 3), np.uint8)
        bgr[..., 2] = 200  # red in BGR
        bgr[..., 1] = 50 * i
        writer.write(bgr)
    writer.release()
    source = V4l2Source(str(path))
    info = source.open()
    assert (info.width, info.height, info.has_depth) == (W * 2, H * 2, False)
    for i in range(4):
        frame = source.read(1.0)
        assert frame.depth_mm is None and frame.color.shape == (H * 2, W * 2, 3)
        r, g, _ = frame.color[H, W].astype(int)
        assert abs(r - 200) < 12 and abs(g - 50 * i) < 12  # RGB order, through MJPG
    with pytest.raises(SourceError, match="returned no frame"):
        source.read(1.0)
    source.close()


def test_opencv_source_reports_a_missing_device():
    with pytest.raises(SourceError, match="cannot open video device"):
        V4l2Source("/nonexistent/clip.avi").open()
