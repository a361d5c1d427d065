"""URDF joint records and LinkTree transforms (what the state publisher sends on tf)."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import urdf_path
from armstack_ik.controller import quaternion_matrix
from armstack_ik.robot_model import LinkTree, Mimic, parse_joints

ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")


@pytest.fixture(scope="module")
def urdf_text() -> str:
    return urdf_path().read_text()


@pytest.fixture(scope="module")
def tree(urdf_text: str) -> LinkTree:
    return LinkTree(urdf_text)


def compose(transforms, root: str, tip: str) -> np.ndarray:
    """Pose (4, 4) of `tip` in `root` from parent->child transforms, walking up from tip."""
    by_child = {t.child: t for t in transforms}
    pose = np.eye(4)
    link = tip
    while link != root:
        edge = by_child[link]
        pose = edge.matrix @ pose
        link = edge.parent
    return pose


def test_joint_records_follow_the_urdf(urdf_text: str):
    joints = {j.name: j for j in parse_joints(urdf_text)}
    assert set(joints) == {*ARM, "left_finger", "right_finger", "ee_joint"}
    assert joints["shoulder"].type == "revolute"
    assert (joints["shoulder"].lower, joints["shoulder"].upper) == (-1.8850, 1.9897)
    assert joints["waist"].velocity == 3.14 and joints["left_finger"].velocity == 0.15
    assert joints["right_finger"].mimic == Mimic("left_finger", 1.0, 0.0)
    assert joints["ee_joint"].type == "fixed" and joints["ee_joint"].velocity is None
    assert (joints["ee_joint"].parent, joints["ee_joint"].child) == ("gripper_link", "ee_link")


def test_actuated_joints_exclude_fixed_and_mimic(tree: LinkTree):
    assert tree.actuated == (*ARM, "left_finger")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_composed_link_transforms_equal_the_arm_forward_kinematics(tree: LinkTree, seed: int):
    kin = ArmKinematics(urdf_path())
    q = kin.random_configuration(np.random.default_rng(seed))
    moving = tree.transforms(dict(zip(ARM, q, strict=True)) | {"left_finger": 0.02})
    pose = compose(moving + tree.static_transforms(), "base_link", "ee_link")
    np.testing.assert_allclose(pose, kin.fk(q), atol=1e-12)


def test_quaternion_and_translation_give_back_the_matrix(tree: LinkTree):
    for edge in tree.transforms({"waist": 2.5, "shoulder": -1.0, "forearm_roll": -3.0, "wrist_rotate": 3.1}):
        q = edge.quaternion
        assert np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(quaternion_matrix(q), edge.matrix[:3, :3], atol=1e-12)
        np.testing.assert_array_equal(edge.translation, edge.matrix[:3, 3])


def test_static_transforms_are_the_fixed_joints(tree: LinkTree):
    (static,) = tree.static_transforms()
    assert (static.parent, static.child) == ("gripper_link", "ee_link")
    expected = np.eye(4)
    expected[0, 3] = 0.08
    np.testing.assert_allclose(static.matrix, expected, atol=1e-15)


def test_fingers_open_symmetrically_through_the_mimic(tree: LinkTree):
    edges = {t.child: t.matrix for t in tree.transforms({"left_finger": 0.015})}
    # left_finger moves along +y of gripper_link, right_finger (axis 0 -1 0) along -y.
    np.testing.assert_allclose(edges["left_finger_link"][:3, 3], [0.0, 0.015, 0.0], atol=1e-15)
    np.testing.assert_allclose(edges["right_finger_link"][:3, 3], [0.0, -0.015, 0.0], atol=1e-15)


def test_mimic_multiplier_and_offset_apply(urdf_text: str):
    text = urdf_text.replace('multiplier="1" offset="0"', 'multiplier="0.5" offset="0.002"')
    assert text != urdf_text
    edges = {t.child: t.matrix for t in LinkTree(text).transforms({"left_finger": 0.02})}
    np.testing.assert_allclose(edges["right_finger_link"][1, 3], -(0.5 * 0.02 + 0.002), atol=1e-15)


def test_unknown_joints_are_skipped(tree: LinkTree):
    children = {t.child for t in tree.transforms({"waist": 0.3, "shoulder": 0.1})}
    assert children == {"shoulder_link", "upper_arm_link"}
    # Without its master the mimic finger is unknown too.
    assert "right_finger_link" not in {t.child for t in tree.transforms({"waist": 0.0})}


def test_continuous_joints_are_set_by_angle():
    text = """<robot name="r"><link name="a"/><link name="b"/>
      <joint name="j" type="continuous"><parent link="a"/><child link="b"/>
        <origin xyz="1 0 0"/><axis xyz="0 0 1"/></joint></robot>"""
    (edge,) = LinkTree(text).transforms({"j": np.pi / 2})
    np.testing.assert_allclose(edge.matrix[:3, 0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(edge.matrix[:3, 3], [1.0, 0.0, 0.0], atol=1e-12)


def test_unsupported_joint_types_are_refused():
    text = """<robot name="r"><link name="a"/><link name="b"/>
      <joint name="free" type="floating"><parent link="a"/><child link="b"/></joint></robot>"""
    with pytest.raises(ValueError, match="free"):
        parse_joints(text)
