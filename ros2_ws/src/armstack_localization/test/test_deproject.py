import cv2
import numpy as np
import pytest

from armstack_localization.deproject import (
    LocalizationConfig,
    deproject_pixel,
    localize,
    robust_box_depth,
    transform_points,
)

K = np.array([[615.0, 0.0, 322.5], [0.0, 612.0, 241.0], [0.0, 0.0, 1.0]])
NO_DIST = np.zeros(5)
MILD = np.array([0.05, -0.12, 0.001, -0.0008, 0.03])  # RealSense-like colour lens
STRONG = np.array([-0.3, 0.12, 0.002, 0.001, -0.02])  # wide-angle barrel


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _pose(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _project(points_cam, dist):
    uv, _ = cv2.projectPoints(points_cam.reshape(-1, 3), np.zeros(3), np.zeros(3), K, dist)
    return uv.reshape(-1, 2)


@pytest.mark.parametrize(
    "dist", [None, NO_DIST, MILD, STRONG], ids=["none", "zeros", "mild", "strong"]
)
@pytest.mark.parametrize(
    "point",
    [
        [0.0, 0.0, 0.5],
        [0.12, -0.08, 0.45],
        [-0.25, 0.18, 0.6],
        [0.3, 0.22, 0.55],
        [-0.05, 0.3, 1.2],
    ],
)
def test_project_deproject_round_trip(point, dist):
    p = np.array(point)
    u, v = _project(p, NO_DIST if dist is None else dist)[0]
    np.testing.assert_allclose(deproject_pixel(u, v, p[2], K, dist), p, atol=1e-7)


def test_deproject_vectorized_matches_scalar():
    pts = np.array([[0.1, 0.05, 0.5], [-0.2, 0.1, 0.7], [0.0, -0.15, 0.9]])
    uv = _project(pts, MILD)
    out = deproject_pixel(uv[:, 0], uv[:, 1], pts[:, 2], K, MILD)
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out, pts, atol=1e-7)


def test_ignoring_distortion_would_be_wrong():
    """Guards the undistortion path: without it a corner point is off by millimetres."""
    p = np.array([0.3, 0.22, 0.55])
    u, v = _project(p, STRONG)[0]
    assert np.linalg.norm(deproject_pixel(u, v, p[2], K, None) - p) > 0.005


@pytest.mark.parametrize(
    ("R", "t"),
    [
        (np.eye(3), [0.1, -0.2, 0.3]),
        (_rot("z", np.pi / 2), [0.0, 0.0, 0.0]),
        (_rot("x", np.pi) @ _rot("z", 0.3), [0.35, 0.0, 0.6]),  # camera looking down
    ],
)
def test_transform_points(R, t):
    pts = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    out = transform_points(_pose(R, t), pts)
    np.testing.assert_allclose(out, (R @ pts.T).T + t, atol=1e-12)
    # The inverse pose maps the points back.
    np.testing.assert_allclose(transform_points(np.linalg.inv(_pose(R, t)), out), pts, atol=1e-12)


def test_transform_rotation_about_z_explicit():
    np.testing.assert_allclose(
        transform_points(_pose(_rot("z", np.pi / 2), [1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])),
        [1.0, 1.0, 0.0],
        atol=1e-12,
    )


def _depth(value=0.5, shape=(100, 100)):
    return np.full(shape, value, np.float32)


def test_box_depth_ignores_holes_and_invalid_values():
    d = _depth(0.42)
    d[40:60:2, 40:60] = 0.0  # holes
    d[45, 45], d[46, 46], d[47, 47] = np.nan, np.inf, -1.0
    assert robust_box_depth(d, (30, 30, 70, 70)) == pytest.approx(0.42)


def test_box_depth_rejects_outliers():
    rng = np.random.default_rng(0)
    d = (0.6 + rng.normal(0.0, 0.005, (100, 100))).astype(np.float32)
    region = d[40:60, 40:60]
    mask = rng.random(region.shape) < 0.4  # 40% flying pixels / background through gaps
    region[mask] = 1.5
    # A plain median would sit ~1 sigma (5 mm) high, pulled by the outliers.
    assert robust_box_depth(d, (30, 30, 70, 70)) == pytest.approx(0.6, abs=0.0015)


def test_box_depth_uses_central_region_only():
    d = _depth(1.0)  # table / background
    d[35:65, 35:65] = 0.5  # the object fills only the middle of its loose box
    assert robust_box_depth(d, (20, 20, 80, 80), central_fraction=0.5) == pytest.approx(0.5)
    # The whole box is mostly background: the median lands there.
    assert robust_box_depth(d, (20, 20, 80, 80), central_fraction=1.0) == pytest.approx(1.0)


def test_box_depth_too_few_valid_pixels():
    d = _depth(0.0)
    d[50, 50] = 0.5
    assert robust_box_depth(d, (40, 40, 60, 60)) is None
    assert robust_box_depth(d, (40, 40, 60, 60), min_valid_pixels=1) == pytest.approx(0.5)
    assert robust_box_depth(_depth(9.0), (40, 40, 60, 60), depth_range=(0.05, 5.0)) is None


@pytest.mark.parametrize("box", [(49.6, 49.6, 50.4, 50.4), (-30, -30, 2, 2), (95, 95, 140, 130)])
def test_box_depth_tiny_and_edge_boxes(box):
    assert robust_box_depth(_depth(0.7), box, min_valid_pixels=1) == pytest.approx(0.7)


def _scene(dist):
    """Camera above the table looking down and forward; two cubes and one box on a hole."""
    R = _rot("x", np.pi + 0.5)  # optical z points down and toward +y of the base
    T_base_cam = _pose(R, [0.3, -0.1, 0.7])
    T_cam_base = np.linalg.inv(T_base_cam)
    h, w = 480, 640
    # Background: ray depth of a far plane, so it differs from the objects.
    depth = np.full((h, w), 1500, np.uint16)
    objects_base = np.array([[0.35, 0.15, 0.02], [0.2, 0.3, 0.03]])
    half_size = 0.025
    boxes = []
    for p in objects_base:
        pc = transform_points(T_cam_base, p)
        corners = pc + np.array(
            [[dx, dy, 0.0] for dx in (-half_size, half_size) for dy in (-half_size, half_size)]
        )
        uv = _project(corners, dist)
        box = np.concatenate([uv.min(0), uv.max(0)])
        boxes.append(box)
        x1, y1, x2, y2 = np.round(box).astype(int)
        depth[y1:y2, x1:x2] = np.uint16(round(pc[2] * 1000))
        depth[y1:y2:3, x1:x2] = 0  # stripes of missing depth
    boxes.append(np.array([10.0, 10.0, 40.0, 40.0]))
    depth[5:45, 5:45] = 0  # no depth at all under the third detection
    return np.array(boxes), depth, T_base_cam, objects_base


@pytest.mark.parametrize("dist", [NO_DIST, MILD], ids=["no-dist", "mild"])
def test_localize_recovers_base_positions(dist):
    boxes, depth, T_base_cam, objects_base = _scene(dist)
    scores = np.array([0.9, 0.8, 0.7])
    class_ids = np.array([3, 5, 1])
    result = localize(boxes, scores, class_ids, depth, K, dist, T_base_cam)
    assert result.dropped_no_depth == 1
    assert [o.detection_index for o in result.objects] == [0, 1]
    assert [o.class_id for o in result.objects] == [3, 5]
    assert isinstance(result.objects[0].class_id, int)
    for obj, expected in zip(result.objects, objects_base, strict=True):
        # Millimetre depth quantization and the box-centre approximation bound the error.
        np.testing.assert_allclose(obj.position, expected, atol=0.003)
        np.testing.assert_allclose(obj.size, [0.05, 0.05], atol=0.006)


def test_localize_empty_and_all_dropped():
    depth = np.zeros((480, 640), np.uint16)
    result = localize(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), depth, K, None, np.eye(4))
    assert result.objects == [] and result.dropped_no_depth == 0
    result = localize(np.array([[0, 0, 50, 50]]), [0.9], ["cube"], depth, K, None, np.eye(4))
    assert result.objects == [] and result.dropped_no_depth == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("central_fraction", 0.0),
        ("min_valid_pixels", 0),
        ("outlier_sigmas", -1.0),
        ("max_depth_m", 0.0),
        ("depth_scale", 0.0),
    ],
)
def test_config_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        LocalizationConfig(**{field: value})


def test_surface_to_centre_moves_point_along_the_viewing_ray():
    K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    depth = np.full((480, 640), 800, dtype=np.uint16)  # 0.8 m everywhere
    box = np.array([[400.0, 300.0, 440.0, 340.0]])
    near = localize(box, np.ones(1), ["cube"], depth, K, None, np.eye(4)).objects[0].position
    far = localize(box, np.ones(1), ["cube"], depth, K, None, np.eye(4),
                   LocalizationConfig(surface_to_centre_m=0.015)).objects[0].position
    assert np.linalg.norm(far - near) == pytest.approx(0.015)
    assert np.allclose(np.cross(far, near), 0.0, atol=1e-9)  # same ray through the camera centre
    assert np.linalg.norm(far) > np.linalg.norm(near)
