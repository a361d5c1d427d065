"""armstack_driver: the Dynamixel bus driver node with its safety layer."""
