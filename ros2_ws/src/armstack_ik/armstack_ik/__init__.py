"""End-effector commands to joint commands (IK with motion limits), and link TFs from joint states."""
