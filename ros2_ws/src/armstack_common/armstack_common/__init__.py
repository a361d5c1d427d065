"""Plain (ROS-free) modules shared by the armstack nodes."""
