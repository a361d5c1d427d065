"""Randomized scenes rendered by armstack_sim, labelled with boxes from the true cube poses.

A dataset is a sequence of episodes. Each episode resets a `SimWorld` with its own seed
(random cube poses), randomizes the lighting, then either
- poses the arm at random joint targets (or at home) and renders once per pose; the arm
  sweeping between poses sometimes pushes or hides cubes; or
- lets the scripted pick-and-place expert work and renders every second or so, which
  shows cubes in the gripper, in the air and in the bin, as the demo does.
Every few episodes a new world is built with another random subset of the cube colours,
so the classes are seen alone, together and next to every other colour.

Labels: a tight box per cube (`boxes.view_cube`); a cube with less than `min_visible` of
its camera-facing surface in view is marked `ignore` (neither to be found nor a false
positive when found). Seeds: episode k of a dataset with seed S resets the world with
S * EPISODE_SEED_STRIDE + k, so datasets of different S never share a scene.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import urdf_path
from armstack_sim.expert import ExpertConfig, PickPlaceExpert, observe
from armstack_sim.world import CUBE_PALETTE, SimConfig, SimWorld

from detector_lib.boxes import Labels, view_cube

logger = logging.getLogger(__name__)

EPISODE_SEED_STRIDE = 100_000
CONTROL_PERIOD = 0.02  # s, the expert's control tick, as the ROS graph runs it

_SIM_DEFAULTS = SimConfig()


def class_names(colors: tuple[str, ...]) -> tuple[str, ...]:
    """Detector labels of cube colours, the object names the simulator uses."""
    return tuple(f"{c}_cube" for c in colors)


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Lengths in m, angles in rad."""

    # The detector's classes, in class-id order (the runtime scene's red, green, blue first).
    class_colors: tuple[str, ...] = tuple(CUBE_PALETTE)
    # Cubes of every world; empty: a random subset of class_colors per world.
    scene_colors: tuple[str, ...] = ()
    min_cubes: int = 2  # per world, when drawing subsets
    max_cubes: int = 6
    workspace_x: tuple[float, float] = (0.08, 0.44)
    workspace_y: tuple[float, float] = (-0.30, 0.30)
    min_cube_spacing: float = 0.05  # > the cube's 4.2 cm diagonal, so cubes may touch
    episodes_per_world: int = 10
    expert_share: float = 0.35  # share of episodes driven by the expert
    frames_per_pose_episode: int = 2
    frames_per_expert_episode: int = 6
    expert_frame_gap: tuple[float, float] = (0.6, 2.0)  # s of simulated time between frames
    home_share: float = 0.25  # share of pose-episode frames with the arm at home
    settle_steps: tuple[int, int] = (150, 500)  # physics steps after a new arm pose
    # Random arm poses: joint targets uniform in [arm_low, arm_high], (7,) arm + gripper.
    arm_low: tuple[float, ...] = (-1.6, -1.2, -1.2, -1.2, -1.2, -3.1, 0.0)
    arm_high: tuple[float, ...] = (1.6, 0.9, 1.3, 1.2, 1.9, 3.1, 0.037)
    light_scale: tuple[float, float] = (0.6, 1.4)  # factor on every light's intensity
    min_visible: float = 0.5  # below: the cube is labelled ignore
    depth_tolerance: float = 0.004  # m, rendered vs. true depth of a visible surface point

    def __post_init__(self) -> None:
        for name in ("class_colors", "scene_colors"):
            colors = getattr(self, name)
            unknown = [c for c in colors if c not in CUBE_PALETTE]
            if unknown or len(set(colors)) != len(colors):
                raise ValueError(f"SceneConfig.{name} must be distinct names from "
                                 f"{sorted(CUBE_PALETTE)}, got {colors}")
        if not self.class_colors:
            raise ValueError("SceneConfig.class_colors must name at least one colour")
        if not set(self.scene_colors) <= set(self.class_colors):
            raise ValueError("SceneConfig.scene_colors must be a subset of class_colors")
        if not 1 <= self.min_cubes <= self.max_cubes <= len(self.class_colors):
            raise ValueError("SceneConfig: need 1 <= min_cubes <= max_cubes <= len(class_colors)")
        for name in ("episodes_per_world", "frames_per_pose_episode", "frames_per_expert_episode"):
            if getattr(self, name) < 1:
                raise ValueError(f"SceneConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("expert_share", "home_share", "min_visible"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SceneConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("workspace_x", "workspace_y"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"SceneConfig.{name} must be (low, high) with low < high")
        for name in ("expert_frame_gap", "settle_steps", "light_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"SceneConfig.{name} must be (low, high) with 0 < low <= high")
        if len(self.arm_low) != 7 or len(self.arm_high) != 7 or any(
            lo > hi for lo, hi in zip(self.arm_low, self.arm_high, strict=True)
        ):
            raise ValueError("SceneConfig.arm_low/arm_high must be 7 values with low <= high")
        if not self.depth_tolerance > 0.0 or not self.min_cube_spacing > 0.0:
            raise ValueError("SceneConfig.depth_tolerance and min_cube_spacing must be > 0")

    @classmethod
    def runtime(cls, **overrides: object) -> SceneConfig:
        """The demo's scene: the simulator's default cubes and workspace."""
        values: dict = dict(
            scene_colors=_SIM_DEFAULTS.cube_colors,
            workspace_x=_SIM_DEFAULTS.workspace_x,
            workspace_y=_SIM_DEFAULTS.workspace_y,
            min_cube_spacing=_SIM_DEFAULTS.min_cube_spacing,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.class_colors)


@dataclass
class Dataset:
    """Rendered images with their labels."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    labels: list[Labels]
    class_names: tuple[str, ...]
    episode_seeds: list[int] = field(default_factory=list)  # SimWorld.reset seeds used

    def __len__(self) -> int:
        return len(self.labels)

    def digest(self) -> str:
        """sha256 of the images and labels: names the exact data a model was trained on."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        for lab in self.labels:
            for arr in (lab.boxes, lab.classes, lab.ignore):
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per class: (labelled boxes, ignored boxes)."""
        out = {}
        for i, name in enumerate(self.class_names):
            kept = sum(int(np.sum((lab.classes == i) & ~lab.ignore)) for lab in self.labels)
            hidden = sum(int(np.sum((lab.classes == i) & lab.ignore)) for lab in self.labels)
            out[name] = (kept, hidden)
        return out


def label_frame(world: SimWorld, depth: np.ndarray, config: SceneConfig) -> Labels:
    """Boxes of the world's cubes in a depth image rendered from its current state."""
    ids = {name: i for i, name in enumerate(config.class_names)}
    camera = world.camera_intrinsics
    rows = []
    for obj in world.object_poses():
        view = view_cube(camera, depth, obj.position, obj.rotation, obj.size,
                         config.depth_tolerance)
        box = None if view is None else view.box
        if box is None or box[2] - box[0] < 1.0 or box[3] - box[1] < 1.0:
            continue  # behind the camera or out of frame
        rows.append((box, ids[obj.name], view.visible < config.min_visible, view.visible))
    if not rows:
        return Labels.empty()
    boxes, classes, ignore, visible = zip(*rows, strict=True)
    return Labels(np.stack(boxes).astype(np.float32), np.array(classes, np.int64),
                  np.array(ignore, bool), np.array(visible, np.float32))


class _Lighting:
    """Scales every light of a world around its built-in intensity."""

    def __init__(self, world: SimWorld) -> None:
        self._model = world.model
        self._ambient = self._model.vis.headlight.ambient.copy()  # (3,)
        self._headlight = self._model.vis.headlight.diffuse.copy()  # (3,)
        self._diffuse = self._model.light_diffuse.copy()  # (nlight, 3)
        self._dir = self._model.light_dir.copy()  # (nlight, 3)

    def randomize(self, rng: np.random.Generator, scale: tuple[float, float]) -> None:
        self._model.vis.headlight.ambient[:] = self._ambient * rng.uniform(*scale)
        self._model.vis.headlight.diffuse[:] = self._headlight * rng.uniform(*scale)
        self._model.light_diffuse[:] = self._diffuse * rng.uniform(*scale, (len(self._dir), 1))
        tilted = self._dir + rng.normal(0.0, 0.25, self._dir.shape)
        self._model.light_dir[:] = tilted / np.linalg.norm(tilted, axis=1, keepdims=True)


Frame = tuple[np.ndarray, Labels]


def _pose_episode(world: SimWorld, config: SceneConfig, rng: np.random.Generator
                  ) -> Iterator[Frame]:
    home = np.array(world.config.home_q)
    for _ in range(config.frames_per_pose_episode):
        if rng.random() < config.home_share:
            target = home
        else:
            target = rng.uniform(config.arm_low, config.arm_high)
        world.set_joint_targets(target)
        world.step(int(rng.integers(config.settle_steps[0], config.settle_steps[1] + 1)))
        rgb, depth = world.render_rgbd()
        yield rgb, label_frame(world, depth, config)


def _expert_episode(world: SimWorld, kinematics: ArmKinematics, config: SceneConfig,
                    rng: np.random.Generator) -> Iterator[Frame]:
    """The expert's pick-and-place, sampled every expert_frame_gap (the loop of
    armstack_sim.expert.run_episode, with renders between control ticks)."""
    expert = PickPlaceExpert(ExpertConfig(), world.bin_center, world.config.bin_inner_size,
                             world.object_names)
    substeps = max(1, round(CONTROL_PERIOD / world.timestep))
    command = world.joint_targets()  # (7,)
    next_frame = rng.uniform(*config.expert_frame_gap)
    frames = 0
    while frames < config.frames_per_expert_episode:
        action = expert.act(observe(world, kinematics))
        if action.done:
            return
        solution = kinematics.ik(action.ee_pose, world.joint_positions()[:-1])
        command = np.append(solution.q if solution.success else command[:-1], action.gripper)
        world.set_joint_targets(command)
        world.step(substeps)
        if world.time >= next_frame:
            rgb, depth = world.render_rgbd()
            yield rgb, label_frame(world, depth, config)
            frames += 1
            next_frame += rng.uniform(*config.expert_frame_gap)


def _world_colors(config: SceneConfig, rng: np.random.Generator) -> tuple[str, ...]:
    if config.scene_colors:
        return config.scene_colors
    count = int(rng.integers(config.min_cubes, config.max_cubes + 1))
    return tuple(str(c) for c in rng.choice(config.class_colors, count, replace=False))


def generate(
    config: SceneConfig,
    seed: int,
    num_images: int,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Render `num_images` labelled images; the same (config, seed) gives the same data."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    kinematics = ArmKinematics(urdf_path())
    images: np.ndarray | None = None
    labels: list[Labels] = []
    episode_seeds: list[int] = []
    t0 = time.perf_counter()
    while len(labels) < num_images:
        world = SimWorld(SimConfig(
            cube_colors=_world_colors(config, rng), workspace_x=config.workspace_x,
            workspace_y=config.workspace_y, min_cube_spacing=config.min_cube_spacing))
        lighting = _Lighting(world)
        try:
            for _ in range(config.episodes_per_world):
                episode = len(episode_seeds)
                if episode >= EPISODE_SEED_STRIDE:
                    raise ValueError(f"more than {EPISODE_SEED_STRIDE} episodes in one dataset")
                episode_seeds.append(seed * EPISODE_SEED_STRIDE + episode)
                world.reset(episode_seeds[-1])
                episode_rng = np.random.default_rng((seed, episode))
                lighting.randomize(episode_rng, config.light_scale)
                frames = (
                    _expert_episode(world, kinematics, config, episode_rng)
                    if episode_rng.random() < config.expert_share
                    else _pose_episode(world, config, episode_rng)
                )
                for rgb, lab in frames:
                    if images is None:
                        images = np.empty((num_images, *rgb.shape), np.uint8)
                    images[len(labels)] = rgb
                    labels.append(lab)
                    if len(labels) == num_images:
                        break
                if progress is not None:
                    progress(len(labels), num_images)
                if len(labels) == num_images:
                    break
        finally:
            world.close()
    logger.info("rendered %d images in %.1f s", num_images, time.perf_counter() - t0)
    assert images is not None
    return Dataset(images, labels, config.class_names, episode_seeds)
