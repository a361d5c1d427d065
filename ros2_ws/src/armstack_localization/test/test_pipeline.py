"""ObjectLocalizer on synthetic frames: positions against ground truth, checks, tracking."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from armstack_camera.calibration import CameraModel, load_camera_file
from armstack_common import paths
from armstack_common.params import file_section_problems
from armstack_common.tf_buffer import Transform
from armstack_localization.node_config import PARAMS, LocalizationNodeConfig
from armstack_localization.pipeline import FrameRejected, ObjectLocalizer

CAMERA, EXTRINSICS = load_camera_file(paths.config_file("camera/calibration.yaml"))
T_BASE_CAM = Transform.make(EXTRINSICS.translation, EXTRINSICS.rotation_xyzw).matrix()


def synthetic_frame(points_base: np.ndarray, half_px: int = 12):
    """Depth (H, W) mm with a patch at each point's depth around its projection, and boxes.

    points_base (N, 3): visible surface points in base_link. Returns depth, boxes (N, 4).
    """
    depth = np.zeros((CAMERA.height, CAMERA.width), np.uint16)
    cam = (points_base - T_BASE_CAM[:3, 3]) @ T_BASE_CAM[:3, :3]  # (N, 3) optical frame
    K = CAMERA.K
    boxes = []
    for x, y, z in cam:
        u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
        r, c = int(v), int(u)  # the pixel containing (u, v)
        depth[r - half_px : r + half_px + 1, c - half_px : c + half_px + 1] = round(z * 1000)
        boxes.append((u - half_px, v - half_px, u + half_px, v + half_px))
    return depth, np.array(boxes)


@pytest.mark.parametrize(
    "points",
    [
        [[0.30, 0.00, 0.03]],
        [[0.25, -0.12, 0.03], [0.35, 0.10, 0.03], [0.20, 0.05, 0.0]],
    ],
)
def test_positions_match_ground_truth_in_the_base_frame(points):
    points = np.array(points, float)
    depth, boxes = synthetic_frame(points)
    localizer = ObjectLocalizer(LocalizationNodeConfig())
    labels = [f"cube{i}" for i in range(len(points))]
    placed, no_depth = localizer.process(
        boxes, np.full(len(points), 0.9), labels, depth, CAMERA, T_BASE_CAM
    )
    assert no_depth == 0 and [p.label for p in placed] == labels
    for obj, truth in zip(placed, points, strict=True):
        # Depth is quantized to 1 mm; along the ray that moves the point by about as much.
        np.testing.assert_allclose(obj.position, truth, atol=2e-3)
        assert obj.track_id == 0 and obj.size.shape == (3,) and np.all(obj.size > 0)


def test_a_detection_without_depth_is_counted_not_placed():
    depth, boxes = synthetic_frame(np.array([[0.3, 0.0, 0.03], [0.25, 0.1, 0.03]]))
    depth[:, :] = 0  # the sensor saw nothing
    placed, no_depth = ObjectLocalizer(LocalizationNodeConfig()).process(
        boxes, np.ones(2), ["a", "b"], depth, CAMERA, T_BASE_CAM
    )
    assert placed == [] and no_depth == 2


@pytest.mark.parametrize(
    "camera, depth_shape, match",
    [
        (CameraModel.uncalibrated(640, 480), (480, 640), "uncalibrated"),
        (CAMERA, (240, 320), "not aligned"),
        (
            CameraModel(640, 480, CAMERA.K, (0.1, 0.0, 0.0, 0.0), "equidistant"),
            (480, 640),
            "equidistant is not supported",
        ),
    ],
)
def test_frames_that_cannot_be_localized_are_rejected_with_the_reason(camera, depth_shape, match):
    with pytest.raises(FrameRejected, match=match):
        ObjectLocalizer(LocalizationNodeConfig()).process(
            np.zeros((1, 4)),
            np.ones(1),
            ["a"],
            np.zeros(depth_shape, np.uint16),
            camera,
            T_BASE_CAM,
        )


def test_tracking_publishes_confirmed_tracks_with_stable_ids():
    cfg = LocalizationNodeConfig(tracking=True, tracker_min_hits=2, tracker_smoothing=1.0)
    localizer = ObjectLocalizer(cfg)
    points = np.array([[0.3, 0.0, 0.03], [0.25, 0.1, 0.03]])
    frames = []
    for k in range(3):
        depth, boxes = synthetic_frame(points + [0.002 * k, 0, 0])
        frames.append(
            localizer.process(
                boxes, np.ones(2), ["red_cube", "blue_cube"], depth, CAMERA, T_BASE_CAM
            )[0]
        )
    assert frames[0] == []  # tentative until min_hits
    assert [o.track_id for o in frames[1]] == [o.track_id for o in frames[2]] == [1, 2]
    np.testing.assert_allclose(frames[2][0].position, points[0] + [0.004, 0, 0], atol=2e-3)
    # Changing a tracker setting live restarts tracking; switching it off drops the ids.
    localizer.reconfigure(LocalizationNodeConfig(tracking=True, tracker_min_hits=1))
    depth, boxes = synthetic_frame(points)
    again = localizer.process(
        boxes, np.ones(2), ["red_cube", "blue_cube"], depth, CAMERA, T_BASE_CAM
    )[0]
    assert [o.track_id for o in again] == [1, 2]
    localizer.reconfigure(LocalizationNodeConfig(tracking=False))
    plain = localizer.process(
        boxes, np.ones(2), ["red_cube", "blue_cube"], depth, CAMERA, T_BASE_CAM
    )[0]
    assert [o.track_id for o in plain] == [0, 0]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"central_fraction": 0.0}, "central_fraction"),
        ({"tracker_gate_m": -1.0}, "gate_m"),
        ({"sync_tolerance_s": -0.1}, "tolerance_s"),
        ({"min_depth_m": 6.0}, "min_depth_m"),
        ({"base_frame": ""}, "base_frame"),
    ],
)
def test_node_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        LocalizationNodeConfig(**changes)


def test_node_config_reads_dotted_parameter_names():
    cfg = LocalizationNodeConfig.from_params({"tracker.min_hits": 7, "tracking": True})
    assert cfg.tracker().min_hits == 7 and cfg.tracking


def test_perception_yaml_section_configures_the_node():
    """config/perception.yaml: declared names only, the declared types, valid values."""
    raw = yaml.safe_load(paths.config_file("perception.yaml").read_text())
    section = raw["/**/localization"]["ros__parameters"]
    assert file_section_problems(PARAMS, section) == []
    LocalizationNodeConfig.from_params({spec.name: spec.default for spec in PARAMS} | section)
