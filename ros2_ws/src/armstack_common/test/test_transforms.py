import numpy as np
import pytest

from armstack_common.transforms import invert, matrix_to_quat_xyzw, pose_matrix, quat_xyzw_to_matrix


def _random_quats(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("q", list(_random_quats(20)) + [np.array([1.0, 0, 0, 0]), np.array([0, 0, 0, 1.0]),
                                                         np.array([0, 1.0, 0, 0]), np.array([0, 0, 1.0, 0])])
def test_quaternion_matrix_round_trip(q):
    r = quat_xyzw_to_matrix(q)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    back = matrix_to_quat_xyzw(r)
    assert np.allclose(back, q if q[3] >= 0 else -q, atol=1e-9)


def test_quarter_turn_about_z_maps_x_to_y():
    r = quat_xyzw_to_matrix([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0])


def test_invert_composes_to_identity():
    pose = pose_matrix([0.1, -0.2, 0.3], _random_quats(1, 3)[0])
    assert np.allclose(invert(pose) @ pose, np.eye(4))
