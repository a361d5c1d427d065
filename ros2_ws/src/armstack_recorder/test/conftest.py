"""Fixtures: a synthetic demonstration source whose camera frames carry their own numbers.

Each frame's top half shows the frame index in binary (8 stripes, bright = 1), the bottom half
the episode index and camera id, in stripes 16 px wide, so a decoded frame tells which frame
it is despite lossy compression. state/action values are functions of (episode, frame) too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from armstack_recorder.lerobot_dataset import (
    CameraSpec,
    FeatureSpec,
    LeRobotDatasetWriter,
    WriterConfig,
)
from armstack_recorder.video import VideoConfig

HEIGHT, WIDTH = 96, 128
STRIPE = 16
FPS = 30
CAMERAS = ("top", "wrist")


@dataclass
class Synthetic:
    """Generates and checks the frames of the synthetic demonstrations."""

    fps: int = FPS

    @staticmethod
    def image(frame: int, episode: int, cam_id: int) -> np.ndarray:
        """(HEIGHT, WIDTH, 3) uint8 with the frame/episode/camera numbers as stripes."""
        img = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
        low_bits = episode | (cam_id << 4)
        for bit in range(8):
            cols = slice(bit * STRIPE, (bit + 1) * STRIPE)
            if (frame >> bit) & 1:
                img[: HEIGHT // 2, cols] = 235
            if (low_bits >> bit) & 1:
                img[HEIGHT // 2:, cols] = 235
        img[..., 2] = 128  # constant blue plane: a channel with zero variance
        return img

    @staticmethod
    def read(img: np.ndarray) -> tuple[int, int, int]:
        """(frame, episode, cam_id) back from a (decoded) image."""
        def bits(rows: slice) -> int:
            value = 0
            for bit in range(8):
                patch = img[rows, bit * STRIPE + 3:(bit + 1) * STRIPE - 3, 0]
                value |= int(patch.mean() > 128) << bit
            return value

        low = bits(slice(HEIGHT // 2 + 3, HEIGHT - 3))
        return bits(slice(3, HEIGHT // 2 - 3)), low & 0xF, low >> 4

    @staticmethod
    def state(episode: int, frame: int) -> np.ndarray:
        return np.array([np.sin(0.1 * frame + episode), 0.01 * frame, episode, -1.0 + frame / 7],
                        np.float32)

    @staticmethod
    def action(episode: int, frame: int) -> np.ndarray:
        return np.array([frame * 0.5, episode * 2.0 - frame, 0.25], np.float32)

    @staticmethod
    def env_state(episode: int, frame: int) -> np.ndarray:
        return np.array([0.3 + 0.01 * episode, 0.1 * np.cos(frame)], np.float32)

    def config(self, root: Path, codec: str = "libx264", cameras: tuple[str, ...] = CAMERAS,
               **kwargs) -> WriterConfig:
        spec = FeatureSpec(
            state_names=["waist", "shoulder", "elbow", "left_finger"],
            action_names=["x", "y", "gripper"],
            env_state_names=["obj_x", "obj_y"],
            cameras=[CameraSpec(name, HEIGHT, WIDTH) for name in cameras])
        return WriterConfig(root=root, fps=self.fps, robot_type="armstack_wx250s", features=spec,
                            video=VideoConfig(codec=codec), **kwargs)

    def record(self, writer: LeRobotDatasetWriter, episode: int, frames: int,
               task: str = "put the cube in the bin") -> None:
        """Add one episode's frames (not saved). `episode` labels the synthetic content."""
        writer.start_episode(task)
        names = [c.name for c in writer.config.features.cameras]
        for k in range(frames):
            images = {n: self.image(k, episode, i) for i, n in enumerate(names)}
            writer.add_frame(self.state(episode, k), self.action(episode, k),
                             self.env_state(episode, k), images, timestamp=50.0 + k / self.fps)

    def write(self, root: Path, episodes: int = 3, frames: int = 40, **kwargs) -> WriterConfig:
        cfg = self.config(root, **kwargs)
        with LeRobotDatasetWriter(cfg) as writer:
            for e in range(episodes):
                self.record(writer, e, frames)
                writer.save_episode()
        return cfg


@pytest.fixture
def synthetic() -> Synthetic:
    return Synthetic()


@pytest.fixture(scope="module")
def written_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes x 40 frames, 2 cameras, H.264; shared read-only by a module's tests."""
    root = tmp_path_factory.mktemp("ds") / "demo"
    Synthetic().write(root)
    return root
