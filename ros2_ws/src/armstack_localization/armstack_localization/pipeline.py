"""One paired frame to placed objects: checks, localize(), and the optional tracker."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from armstack_camera.calibration import CameraModel
from armstack_localization.deproject import localize
from armstack_localization.node_config import LocalizationNodeConfig
from armstack_localization.ros_conv import PlacedObject, object_size
from armstack_localization.tracker import Tracker

# Camera models whose coefficients are OpenCV's, which localize() undistorts with.
SUPPORTED_DISTORTION = ("plumb_bob", "rational_polynomial")


class FrameRejected(ValueError):
    """A frame that cannot be localized; the message says why (for diagnostics)."""


def check_camera(camera: CameraModel, depth_shape: tuple[int, int]) -> None:
    if not camera.calibrated:
        raise FrameRejected("camera_info is uncalibrated (K = 0)")
    if camera.distortion_model not in SUPPORTED_DISTORTION:
        raise FrameRejected(
            f"distortion model {camera.distortion_model} is not supported "
            f"(use one of {list(SUPPORTED_DISTORTION)})"
        )
    if depth_shape != (camera.height, camera.width):
        raise FrameRejected(
            f"depth image {depth_shape[1]}x{depth_shape[0]} is not aligned to the colour "
            f"camera {camera.width}x{camera.height}"
        )


class ObjectLocalizer:
    def __init__(self, config: LocalizationNodeConfig) -> None:
        self.config = config
        self.tracker = Tracker(config.tracker()) if config.tracking else None

    def reconfigure(self, config: LocalizationNodeConfig) -> None:
        """New parameters; the tracker restarts only if its own settings changed."""
        if config.tracking and (self.tracker is None or config.tracker() != self.tracker.config):
            self.tracker = Tracker(config.tracker())
        elif not config.tracking:
            self.tracker = None
        self.config = config

    def process(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: Sequence[str],
        depth_mm: np.ndarray,
        camera: CameraModel,
        T_base_cam: np.ndarray,
    ) -> tuple[list[PlacedObject], int]:
        """Objects in the base frame and the number of detections without valid depth.

        boxes (N, 4) xyxy colour pixels, scores (N,), depth_mm (H, W) uint16 aligned to the
        colour camera, T_base_cam (4, 4) pose of the camera frame in the base frame.
        """
        check_camera(camera, depth_mm.shape)
        result = localize(
            boxes,
            scores,
            list(labels),
            depth_mm,
            np.asarray(camera.K),
            np.asarray(camera.D),
            T_base_cam,
            self.config.localization(),
        )
        placed = [
            PlacedObject(str(o.class_id), o.score, o.position, object_size(o.size))
            for o in result.objects
        ]
        if self.tracker is not None:
            placed = self._track(placed)
        return placed, result.dropped_no_depth

    def _track(self, placed: list[PlacedObject]) -> list[PlacedObject]:
        """Confirmed tracks seen in this frame, at their smoothed positions, with their ids."""
        positions = np.array([p.position for p in placed]).reshape(-1, 3)
        ids = self.tracker.update(positions, [p.label for p in placed], [p.score for p in placed])
        confirmed = {t.track_id: t for t in self.tracker.confirmed_tracks()}
        return [
            PlacedObject(p.label, p.score, confirmed[i].position.copy(), p.size, i)
            for p, i in zip(placed, ids, strict=True)
            if i in confirmed
        ]
