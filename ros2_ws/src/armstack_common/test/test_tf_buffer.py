"""TransformBuffer: interpolation, composition through the tree, and its lookup errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from armstack_common.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    Transform,
    TransformBuffer,
    TransformLookupError,
    slerp,
)


def _quat(axis, angle: float) -> np.ndarray:
    """(x, y, z, w) rotation by `angle` about `axis`."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    return np.concatenate([a * math.sin(angle / 2.0), [math.cos(angle / 2.0)]])


def _rot(axis, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` about `axis` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@pytest.mark.parametrize(
    "axis, angle",
    [([0, 0, 1], 0.3), ([1, 0, 0], -1.2), ([1, 2, 3], 2.5), ([0, 1, 0], math.pi - 1e-3)],
)
def test_quaternion_matrix_matches_rodrigues(axis, angle):
    np.testing.assert_allclose(
        Transform.make([0, 0, 0], _quat(axis, angle)).matrix()[:3, :3],
        _rot(axis, angle),
        atol=1e-12,
    )


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize(
    "axis, a0, a1",
    [([0, 0, 1], 0.0, 1.0), ([1, 1, 0], -0.5, 2.0), ([0, 1, 0], 0.2, 0.2 + 1e-5)],
)
def test_slerp_follows_the_rotation_angle_linearly(axis, a0, a1, s):
    q = slerp(_quat(axis, a0), _quat(axis, a1), s)
    np.testing.assert_allclose(
        Transform.make([0, 0, 0], q).matrix()[:3, :3], _rot(axis, a0 + s * (a1 - a0)), atol=1e-9
    )


def test_slerp_takes_the_short_arc_when_quaternion_signs_differ():
    q0 = _quat([0, 0, 1], 0.1)
    q1 = -_quat([0, 0, 1], 0.5)  # the same rotation as +q, on the other hemisphere
    q = slerp(q0, q1, 0.5)
    np.testing.assert_allclose(
        Transform.make([0, 0, 0], q).matrix()[:3, :3], _rot([0, 0, 1], 0.3), atol=1e-12
    )


@pytest.mark.parametrize(
    "t, expect_angle, expect_x",
    [
        (10.0, 0.0, 0.0),
        (10.5, 0.4, 1.0),
        (11.0, 0.8, 2.0),
        (11.25, 1.0, 2.5),
        (12.0, 1.6, 4.0),
    ],
)
def test_dynamic_edge_interpolates_between_samples(t, expect_angle, expect_x):
    buf = TransformBuffer()
    buf.set_transform("world", "arm", 10.0, [0, 0, 0], _quat([0, 0, 1], 0.0))
    buf.set_transform("world", "arm", 11.0, [2, 0, 0], _quat([0, 0, 1], 0.8))
    buf.set_transform("world", "arm", 12.0, [4, 0, 0], _quat([0, 0, 1], 1.6))
    T = buf.lookup_matrix("world", "arm", t)
    np.testing.assert_allclose(T, _pose(_rot([0, 0, 1], expect_angle), [expect_x, 0, 0]), atol=1e-9)


def test_samples_arriving_out_of_order_are_sorted():
    buf = TransformBuffer()
    for stamp in (3.0, 1.0, 2.0):
        buf.set_transform("a", "b", stamp, [stamp, 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("a", "b", 1.5).translation, [1.5, 0, 0])
    np.testing.assert_allclose(buf.lookup("a", "b", 2.75).translation, [2.75, 0, 0])


def _tree() -> tuple[TransformBuffer, dict[str, np.ndarray]]:
    """base_link -> shoulder -> ee_link (dynamic at t = 1, 2) and base_link -> camera (static),
    world -> base_link (static); returns the buffer and each frame's pose in world at t = 1.5."""
    buf = TransformBuffer()
    poses = {"world": np.eye(4)}
    w_base = _pose(_rot([0, 0, 1], 0.7), [1.0, -2.0, 0.1])
    base_cam = _pose(_rot([1, 0.2, -0.4], 2.2), [0.68, 0.0, 0.5])
    buf.set_transform("world", "base_link", 0.0, w_base[:3, 3], _quat([0, 0, 1], 0.7), static=True)
    buf.set_transform(
        "base_link", "camera", 0.0, base_cam[:3, 3], _quat([1, 0.2, -0.4], 2.2), static=True
    )
    for t, angle in ((1.0, 0.2), (2.0, 0.6)):
        buf.set_transform("base_link", "shoulder", t, [0, 0, 0.1 * t], _quat([0, 1, 0], angle))
        buf.set_transform("shoulder", "ee_link", t, [0.3, 0, 0], _quat([1, 0, 0], -angle))
    poses["base_link"] = w_base
    poses["camera"] = w_base @ base_cam
    poses["shoulder"] = w_base @ _pose(_rot([0, 1, 0], 0.4), [0, 0, 0.15])
    poses["ee_link"] = poses["shoulder"] @ _pose(_rot([1, 0, 0], -0.4), [0.3, 0, 0])
    return buf, poses


@pytest.mark.parametrize(
    "target, source",
    [
        ("world", "camera"),
        ("camera", "world"),
        ("base_link", "ee_link"),
        ("ee_link", "base_link"),
        ("camera", "ee_link"),  # up through base_link and down the arm
        ("ee_link", "camera"),
        ("shoulder", "camera"),
    ],
)
def test_lookup_composes_through_the_common_ancestor(target, source):
    buf, poses = _tree()
    expected = np.linalg.inv(poses[target]) @ poses[source]
    np.testing.assert_allclose(buf.lookup_matrix(target, source, 1.5), expected, atol=1e-9)


def test_lookup_maps_points_from_source_to_target():
    buf, poses = _tree()
    p_cam = np.array([0.1, -0.2, 0.5, 1.0])
    p_world = buf.lookup_matrix("world", "camera", 1.5) @ p_cam
    np.testing.assert_allclose(p_world, poses["camera"] @ p_cam, atol=1e-12)


def test_static_only_chain_holds_at_any_time_and_leading_slash_is_ignored():
    buf, poses = _tree()
    for t in (0.0, 1e-9, 5.0, 1e9):
        np.testing.assert_allclose(
            buf.lookup_matrix("/world", "camera", t), poses["camera"], atol=1e-12
        )


def test_time_zero_means_the_latest_common_time():
    buf, _ = _tree()
    buf.set_transform("base_link", "shoulder", 3.0, [0, 0, 9.0], [0, 0, 0, 1])
    # shoulder goes to t = 3 but ee_link only to t = 2: the chain's latest common time is 2,
    # where shoulder interpolates between its t = 2 and t = 3 samples.
    np.testing.assert_allclose(
        buf.lookup("base_link", "ee_link", 0.0).matrix(),
        buf.lookup("base_link", "ee_link", 2.0).matrix(),
    )
    np.testing.assert_allclose(buf.lookup("base_link", "shoulder", 0.0).translation, [0, 0, 9.0])


@pytest.mark.parametrize("t", [0.5, 2.5, 1e6])
def test_extrapolation_outside_a_dynamic_edge_is_an_error_naming_the_edge(t):
    buf, _ = _tree()
    with pytest.raises(ExtrapolationError, match=r"base_link -> shoulder|shoulder -> ee_link"):
        buf.lookup("camera", "ee_link", t)
    # A static-only lookup at the same time still works.
    assert buf.can_transform("world", "camera", t)


@pytest.mark.parametrize(
    "target, source, match",
    [
        ("world", "nowhere", "frame 'nowhere' is unknown"),
        ("nowhere", "world", "frame 'nowhere' is unknown"),
        ("world", "island_child", "not connected"),
    ],
)
def test_unknown_or_disconnected_frames_raise_connectivity_errors(target, source, match):
    buf, _ = _tree()
    buf.set_transform("island", "island_child", 0.0, [0, 0, 0], [0, 0, 0, 1], static=True)
    with pytest.raises(ConnectivityError, match=match):
        buf.lookup(target, source, 1.5)
    assert not buf.can_transform(target, source, 1.5)
    assert issubclass(ConnectivityError, TransformLookupError)


def test_cache_keeps_only_cache_time_behind_the_newest_sample():
    buf = TransformBuffer(cache_time_s=2.0)
    for t in range(10):
        buf.set_transform("a", "b", float(t), [t, 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("a", "b", 7.5).translation, [7.5, 0, 0])
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("a", "b", 6.5)


def test_static_transform_is_replaced_by_a_newer_one():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 0.0, [1, 0, 0], [0, 0, 0, 1], static=True)
    buf.set_transform("a", "b", 5.0, [2, 0, 0], [0, 0, 0, 1], static=True)
    np.testing.assert_allclose(buf.lookup("a", "b", 1.0).translation, [2, 0, 0])


@pytest.mark.parametrize(
    "parent, child, translation, rotation, match",
    [
        ("a", "a", [0, 0, 0], [0, 0, 0, 1], "distinct frame ids"),
        ("", "b", [0, 0, 0], [0, 0, 0, 1], "distinct frame ids"),
        ("a", "b", [0, 0, 0], [0, 0, 0, 0], "non-zero"),
        ("a", "b", [np.nan, 0, 0], [0, 0, 0, 1], "finite"),
        ("c", "a", [0, 0, 0], [0, 0, 0, 1], "loop"),
    ],
)
def test_bad_transforms_are_rejected(parent, child, translation, rotation, match):
    buf = TransformBuffer()
    buf.set_transform("a", "b", 0.0, [0, 0, 0], [0, 0, 0, 1])
    buf.set_transform("b", "c", 0.0, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError, match=match):
        buf.set_transform(parent, child, 0.0, translation, rotation)


def test_inverse_and_unnormalized_quaternions():
    T = Transform.make([0.3, -1.0, 2.0], 3.0 * _quat([1, -2, 0.5], 1.1))  # normalized on entry
    np.testing.assert_allclose((T * T.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T.inverse().matrix(), np.linalg.inv(T.matrix()), atol=1e-12)
