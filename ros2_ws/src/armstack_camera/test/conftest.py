"""A synthetic RealSense scene shared by the source and node tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from armstack_camera.calibration import CameraModel


class SyntheticRealSense:
    """A red box 0.4 m in front of a wall at 1 m, seen by colour and (lower-res) depth.

    The box covers normalized image coordinates x, y in [-0.1, 0.1] in both streams, which
    share the same optical centre, so after alignment it lands at the colour box.
    """

    COLOR = CameraModel.pinhole(64, 48, 60.0, 60.0, 32.0, 24.0)
    # Half the colour resolution and another focal length: alignment must resample.
    DEPTH = CameraModel.pinhole(32, 24, 25.0, 25.0, 16.0, 12.0)
    BOX_DEPTH_MM, BACKGROUND_MM = 400, 1000
    # librealsense's syncer (2.59) never pairs software-device depth frames whose timestamps
    # start at small non-zero values (e.g. 1000 ms); device-clock values of a camera that has
    # run for a while (1e9 ms and up) or host times pair as a real device's frames do.
    DEVICE_T0_MS = 3.0e9

    def __init__(self, rs) -> None:
        self.rs = rs

    @staticmethod
    def scene(k: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour (48, 64, 3) with the box's blue channel = 10 + k; depth (24, 32) mm."""
        color = np.full((48, 64, 3), 90, np.uint8)
        color[18:30, 26:38] = (200, 10, 10 + k)  # x in [-0.1, 0.1] * 60 + 32 px
        depth = np.full((24, 32), SyntheticRealSense.BACKGROUND_MM, np.uint16)
        depth[9:15, 13:19] = SyntheticRealSense.BOX_DEPTH_MM  # x in [-0.1, 0.1] * 25 + 16 px
        return color, depth

    def backend(self, serial: str = "software"):
        from armstack_camera.realsense_source import SoftwareDeviceBackend

        return SoftwareDeviceBackend(self.COLOR, self.DEPTH, fps=30, serial=serial)

    def recording_path(self, folder: Path) -> Path:
        # librealsense >= 2.57 records rosbag2 (.db3); older versions write ROS 1 .bag files.
        major, minor = (int(v) for v in self.rs.__version__.split(".")[:2])
        return folder / ("synthetic.db3" if (major, minor) >= (2, 57) else "synthetic.bag")

    def record(self, folder: Path, n: int) -> Path:
        """Record n frame pairs from a software device with the SDK's recorder."""
        path = self.recording_path(folder)
        backend = self.backend(serial="rec42")
        recorder = self.rs.recorder(str(path), backend.device)
        backend.start()
        for k in range(n):
            color, depth = self.scene(k)
            backend.push(color, depth, self.DEVICE_T0_MS + k * 1000.0 / 30.0)
            backend.wait_for_frames(200)
        backend.stop()
        del recorder  # closes the file
        return path


@pytest.fixture
def synthetic_rs() -> SyntheticRealSense:
    return SyntheticRealSense(pytest.importorskip("pyrealsense2"))
