"""armstack demonstration recording: LeRobot v3.0 dataset writer, reader and validator (plain
modules, no rclpy) for the recorder node."""
