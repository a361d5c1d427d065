"""The names every package uses for the arm's joints and actions, defined once.

The joints are config/robot/arm.urdf's (test/test_robot_names.py checks them against it); the
order is the one of the recorded joint state, joint actions and the simulator's actuators. An
end-effector action is the ee_link pose in base_link (position in m, quaternion x y z w) and
the gripper opening, in `EE_ACTION_NAMES` order: the recorder writes these columns, the
policies are trained on them and the runtime reads them.
"""

ARM_JOINTS: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                               "wrist_rotate")
GRIPPER_JOINT = "left_finger"  # the right finger mimics it
JOINT_NAMES: tuple[str, ...] = (*ARM_JOINTS, GRIPPER_JOINT)
EE_ACTION_NAMES: tuple[str, ...] = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
