"""The shared joint names are the URDF's."""

import xml.etree.ElementTree as ET

from armstack_common.paths import urdf_path
from armstack_common.robot_names import ARM_JOINTS, EE_ACTION_NAMES, GRIPPER_JOINT, JOINT_NAMES


def test_the_joint_names_are_the_urdfs_moving_joints_in_chain_order():
    joints = {j.get("name"): j for j in ET.parse(urdf_path()).getroot().iter("joint")}
    revolute = [name for name, j in joints.items() if j.get("type") == "revolute"]
    assert list(ARM_JOINTS) == revolute  # the URDF lists them base to wrist
    assert joints[GRIPPER_JOINT].get("type") == "prismatic"
    # The other finger mimics the gripper joint, which mimics nothing.
    mimicked = [j.find("mimic").get("joint") for j in joints.values() if j.find("mimic") is not None]
    assert mimicked == [GRIPPER_JOINT] and joints[GRIPPER_JOINT].find("mimic") is None
    assert JOINT_NAMES == (*ARM_JOINTS, GRIPPER_JOINT)
    assert len(set(EE_ACTION_NAMES)) == len(EE_ACTION_NAMES) == 8
