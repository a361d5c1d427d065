"""armstack's camera driver: RealSense, V4L2 and image-folder sources behind one node."""
