"""armstack_bringup: armstack's launch files and configuration, and `armstack launch`.

The launcher runs ROS 2 YAML launch files (the subset in LAUNCHER.md) as separate processes
where `ros2 launch` is not installed: frontend (parse) -> planner (evaluate into process specs)
-> runner (supervise processes); cli wires them together.
"""
