"""Tests of armstack_common.kinematics on the project URDF (and a 5-DOF variant)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics, IKConfig
from armstack_common.paths import urdf_path
from armstack_common.robot_names import ARM_JOINTS


@pytest.fixture(scope="module")
def kin() -> ArmKinematics:
    return ArmKinematics(urdf_path())


def _rot_about(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _pose_errors(kin: ArmKinematics, q: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    reached = kin.fk(q)
    pos = float(np.linalg.norm(reached[:3, 3] - target[:3, 3]))
    cos = (np.trace(reached[:3, :3].T @ target[:3, :3]) - 1.0) / 2.0
    return pos, float(np.arccos(np.clip(cos, -1.0, 1.0)))


def test_chain_is_the_six_arm_joints_with_urdf_limits(kin: ArmKinematics) -> None:
    assert kin.joint_names == ARM_JOINTS
    root = ET.parse(urdf_path()).getroot()
    for i, name in enumerate(ARM_JOINTS):
        limit = root.find(f"joint[@name='{name}']/limit")
        assert kin.lower[i] == pytest.approx(float(limit.get("lower")))
        assert kin.upper[i] == pytest.approx(float(limit.get("upper")))
    assert kin.joint_limits("left_finger") == pytest.approx((0.0, 0.037))


def test_fk_at_zero_is_the_sum_of_urdf_joint_origins(kin: ArmKinematics) -> None:
    # Independent of pinocchio: at q = 0 with no rpy in the chain, ee_link sits at
    # the sum of the joint origins from base_link to ee_link.
    root = ET.parse(urdf_path()).getroot()
    parent_of = {j.find("child").get("link"): j for j in root.findall("joint")}
    link, total = "ee_link", np.zeros(3)
    while link in parent_of:
        joint = parent_of[link]
        origin = joint.find("origin")
        assert origin.get("rpy", "0 0 0").split() == ["0", "0", "0"]
        total += np.array([float(v) for v in origin.get("xyz").split()])
        link = joint.find("parent").get("link")
    assert link == "base_link"
    pose = kin.fk(np.zeros(6))
    np.testing.assert_allclose(pose[:3, 3], total, atol=1e-12)
    np.testing.assert_allclose(pose[:3, :3], np.eye(3), atol=1e-12)


@pytest.mark.parametrize("local", [False, True])
def test_jacobian_matches_finite_differences(kin: ArmKinematics, local: bool) -> None:
    rng = np.random.default_rng(3)
    q = kin.random_configuration(rng)
    jac = kin.jacobian(q, local=local)
    pose = kin.fk(q).copy()
    eps = 1e-6
    for i in range(6):
        dq = np.zeros(6)
        dq[i] = eps
        moved = kin.fk(q + dq)
        v = (moved[:3, 3] - pose[:3, 3]) / eps
        skew = (moved[:3, :3] @ pose[:3, :3].T - np.eye(3)) / eps  # world-frame [w]x
        w = np.array([skew[2, 1], skew[0, 2], skew[1, 0]])
        if local:
            v, w = pose[:3, :3].T @ v, pose[:3, :3].T @ w
        np.testing.assert_allclose(jac[:3, i], v, atol=1e-5)
        np.testing.assert_allclose(jac[3:, i], w, atol=1e-5)


@pytest.mark.parametrize("case", range(12))
def test_ik_round_trip_from_random_seed(kin: ArmKinematics, case: int) -> None:
    rng = np.random.default_rng(100 + case)
    target = kin.fk(kin.random_configuration(rng)).copy()
    result = kin.ik(target, kin.random_configuration(rng))
    assert result.success
    pos, rot = _pose_errors(kin, result.q, target)
    assert pos <= kin.config.position_tolerance + 1e-9
    assert rot <= kin.config.orientation_tolerance + 1e-9
    assert result.position_error == pytest.approx(pos, abs=1e-9)


def test_ik_respects_joint_limits(kin: ArmKinematics) -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        target = kin.fk(kin.random_configuration(rng)).copy()
        # Seeds outside the limits are brought inside, never passed through.
        seed = kin.random_configuration(rng) * 1.5
        q = kin.ik(target, seed).q
        assert np.all(q >= kin.lower - 1e-12) and np.all(q <= kin.upper + 1e-12)


@pytest.mark.parametrize(
    "position",
    [(1.5, 0.0, 0.2), (0.0, 0.0, 1.0), (0.3, -0.6, -0.4)],
)
def test_unreachable_target_is_not_success(kin: ArmKinematics, position: tuple) -> None:
    target = np.eye(4)
    target[:3, 3] = position
    result = kin.ik(target, np.zeros(6))
    assert not result.success
    assert result.position_error > 0.1
    assert np.all(result.q >= kin.lower) and np.all(result.q <= kin.upper)


@pytest.mark.parametrize("case", range(6))
def test_tracking_stays_on_the_seed_branch(kin: ArmKinematics, case: int) -> None:
    # A small move from the current state solves from the seed, without restarts,
    # and lands next to it (no jump to another IK branch).
    rng = np.random.default_rng(200 + case)
    seed = kin.random_configuration(rng) * 0.6
    moved = seed + rng.uniform(-0.05, 0.05, size=6)
    result = kin.ik(kin.fk(moved).copy(), seed)
    assert result.success and result.restarts == 0
    np.testing.assert_allclose(result.q, moved, atol=0.01)


def test_posture_term_keeps_free_joints_near_seed() -> None:
    # Position only: three joints' worth of freedom is left to the posture term.
    kin = ArmKinematics(urdf_path(), IKConfig(orientation_weights=(0.0, 0.0, 0.0)))
    free = ArmKinematics(
        urdf_path(), IKConfig(orientation_weights=(0.0, 0.0, 0.0), posture_gain=0.0)
    )
    seed = np.array([0.2, -0.3, 0.4, 0.5, 0.8, -0.6])
    target = kin.fk(seed).copy()
    target[:3, 3] += (0.03, -0.02, 0.02)
    with_posture = kin.ik(target, seed)
    without = free.ik(target, seed)
    assert with_posture.success and without.success
    assert np.linalg.norm(with_posture.q - seed) < 0.25
    assert np.linalg.norm(with_posture.q - seed) <= np.linalg.norm(without.q - seed) + 1e-6
    # Wrist joints do not take part in a small position move when posture holds them.
    np.testing.assert_allclose(with_posture.q[[3, 5]], seed[[3, 5]], atol=0.05)


@pytest.fixture(scope="module")
def five_dof_urdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The WidowX 250 5DOF has no forearm roll: fix that joint.
    text = urdf_path().read_text()
    text = text.replace(
        '<joint name="forearm_roll" type="revolute">', '<joint name="forearm_roll" type="fixed">'
    )
    path = tmp_path_factory.mktemp("urdf") / "arm5.urdf"
    path.write_text(text)
    return path


def test_five_dof_arm_with_partial_orientation(five_dof_urdf: Path) -> None:
    kin = ArmKinematics(five_dof_urdf, IKConfig(orientation_weights=(1.0, 1.0, 1.0)))
    assert kin.n_joints == 5 and "forearm_roll" not in kin.joint_names
    # Top-down grasps with any roll are within a 5-DOF arm's reach: full pose solves.
    down = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # ee x = -z
    target = np.eye(4)
    target[:3, :3] = (
        _rot_about(np.array([0.0, 0.0, 1.0]), 0.4)
        @ down
        @ _rot_about(np.array([1.0, 0.0, 0.0]), 0.7)
    )
    target[:3, 3] = (0.3, 0.1, 0.05)
    full = kin.ik(target, np.zeros(5))
    assert full.success
    # An approach tilted sideways out of the arm's plane is not: the full pose fails,
    # the same pose with only the approach axis (ee x) weighted succeeds.
    tilted = target.copy()
    tilted[:3, :3] = _rot_about(np.array([1.0, 0.0, 0.0]), 0.5) @ down
    assert not kin.ik(tilted, np.zeros(5)).success
    approach_only = ArmKinematics(five_dof_urdf, IKConfig(orientation_weights=(0.0, 0.0, 0.0)))
    result = approach_only.ik(tilted, np.zeros(5))
    assert result.success
    assert np.linalg.norm(approach_only.fk(result.q)[:3, 3] - tilted[:3, 3]) < 1e-4


def test_bad_inputs_are_rejected_with_the_field_named(kin: ArmKinematics) -> None:
    with pytest.raises(ValueError, match="max_step"):
        IKConfig(max_step=0.0)
    with pytest.raises(ValueError, match="orientation_weights"):
        IKConfig(orientation_weights=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        kin.ik(np.eye(4), np.zeros(7))
    with pytest.raises(ValueError, match="4x4"):
        kin.ik(np.eye(3), np.zeros(6))
    with pytest.raises(ValueError, match="no frame"):
        ArmKinematics(urdf_path(), ee_frame="tool0")
