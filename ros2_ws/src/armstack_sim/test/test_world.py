"""Tests of armstack_sim.world: the MuJoCo world built from the URDF and the calibration."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import config_file, urdf_path
from armstack_sim.world import (
    ACTUATED_JOINTS,
    CUBE_PALETTE,
    SimConfig,
    SimWorld,
    load_calibration,
)


@pytest.fixture(scope="module")
def world() -> SimWorld:
    w = SimWorld()
    yield w
    w.close()


# Cube poses (x, y, yaw) spread across the image: errors in fx or cx shift the ones
# far from the image centre by pixels.
_CUBES_IN_VIEW = {
    "red_cube": (0.36, 0.22, 0.3),
    "green_cube": (0.19, -0.12, 0.1),
    "blue_cube": (0.27, 0.02, 0.7),
}


@pytest.fixture(scope="module")
def frame(world: SimWorld) -> tuple[np.ndarray, np.ndarray]:
    """One rendered RGB-D frame with the cubes at _CUBES_IN_VIEW."""
    world.reset(3)
    for name, (x, y, yaw) in _CUBES_IN_VIEW.items():
        adr = world.model.jnt_qposadr[world.model.joint(name).id]
        world.data.qpos[adr : adr + 7] = (
            x,
            y,
            world.config.cube_size / 2,
            np.cos(yaw / 2),
            0,
            0,
            np.sin(yaw / 2),
        )
    mujoco.mj_forward(world.model, world.data)
    return world.render_rgbd()


def _urdf_limits() -> dict[str, tuple[float, float]]:
    root = ET.parse(urdf_path()).getroot()
    return {
        j.get("name"): (float(j.find("limit").get("lower")), float(j.find("limit").get("upper")))
        for j in root.findall("joint")
        if j.find("limit") is not None
    }


def test_world_is_built_from_the_urdf(world: SimWorld) -> None:
    limits = _urdf_limits()
    assert world.joint_names == ACTUATED_JOINTS
    low, high = world.joint_limits
    for i, name in enumerate(ACTUATED_JOINTS):
        assert (low[i], high[i]) == pytest.approx(limits[name])
        assert tuple(world.model.jnt_range[world.model.joint(name).id]) == pytest.approx(
            limits[name]
        )
    # The mimic finger exists, is not actuated, and is coupled to left_finger.
    right = world.model.joint("right_finger").id
    left = world.model.joint("left_finger").id
    assert world.model.nu == len(ACTUATED_JOINTS)
    couplings = [
        i
        for i in range(world.model.neq)
        if {world.model.eq_obj1id[i], world.model.eq_obj2id[i]} == {left, right}
    ]
    assert len(couplings) == 1
    assert world.object_names == ("red_cube", "green_cube", "blue_cube")


@pytest.mark.parametrize("case", range(5))
def test_mujoco_and_pinocchio_agree_on_ee_link(world: SimWorld, case: int) -> None:
    # Two independent URDF parsers: the sim's ee_link must be where the IK thinks it is.
    kin = ArmKinematics(urdf_path())
    q = kin.random_configuration(np.random.default_rng(case))
    data = mujoco.MjData(world.model)
    for name, value in zip(kin.joint_names, q, strict=True):
        data.qpos[world.model.jnt_qposadr[world.model.joint(name).id]] = value
    mujoco.mj_kinematics(world.model, data)
    ee = world.model.body("ee_link").id
    np.testing.assert_allclose(data.xpos[ee], kin.fk(q)[:3, 3], atol=1e-9)
    np.testing.assert_allclose(data.xmat[ee].reshape(3, 3), kin.fk(q)[:3, :3], atol=1e-9)


def test_camera_pose_is_the_calibrated_one(world: SimWorld) -> None:
    calib = load_calibration(config_file("camera/calibration.yaml"))
    np.testing.assert_allclose(world.camera_pose(), calib.pose, atol=1e-6)
    # Optical frame convention: +z looks at the workspace, +y points down the image.
    pose = world.camera_pose()
    assert pose[2, 2] < -0.5  # looking down at the table
    assert world.camera_intrinsics.k[0, 0] == calib.fx


def _pixel_rays(calib) -> np.ndarray:
    """Rays through every pixel centre in base_link, scaled to optical z = 1. (H, W, 3)"""
    v, u = np.mgrid[0 : calib.height, 0 : calib.width]
    rays = np.stack([(u - calib.cx) / calib.fx, (v - calib.cy) / calib.fy, np.ones(u.shape)], -1)
    return rays @ calib.rotation.T


def test_rendered_depth_of_the_table_matches_the_calibration(
    world: SimWorld, frame: tuple[np.ndarray, np.ndarray]
) -> None:
    # Back-project every pixel with the calibration onto the table plane z = 0: where
    # the table is seen, the rendered z-depth equals the predicted one. A principal
    # point or focal length off by a tenth of a pixel moves this by ~0.1 mm.
    rgb, depth = frame
    calib = world.camera_intrinsics
    assert rgb.shape == (calib.height, calib.width, 3) and rgb.dtype == np.uint8
    assert depth.shape == (calib.height, calib.width) and depth.dtype == np.float32
    rays_base = _pixel_rays(calib)
    z_pred = -calib.translation[2] / rays_base[..., 2]  # depth where the ray meets z = 0
    hit = calib.translation + z_pred[..., None] * rays_base  # (H, W, 3)
    table = (hit[..., 0] > 0.15) & (hit[..., 0] < 0.6) & (np.abs(hit[..., 1]) < 0.5)
    for obj in world.object_poses():  # leave the cubes out
        table &= np.linalg.norm(hit[..., :2] - obj.position[:2], axis=-1) > 0.05
    bin_xy = np.array(world.config.bin_center)
    table &= np.max(np.abs(hit[..., :2] - bin_xy), axis=-1) > world.config.bin_inner_size
    assert table.sum() > 50_000
    error = np.abs(depth[table] - z_pred[table])
    assert np.median(error) < 5e-5
    assert np.mean(error < 1e-3) > 0.99


def test_cubes_appear_where_the_calibration_projects_them(
    world: SimWorld, frame: tuple[np.ndarray, np.ndarray]
) -> None:
    # For each cube, the pixels whose rays (through the calibration) meet its top face
    # at least a pixel inside its edges must show that face: its colour, and the
    # face's depth. A principal point or focal length that moves the cube by more
    # than a pixel puts some of them on the table, 3 cm deeper.
    rgb, depth = frame
    calib = world.camera_intrinsics
    rays = _pixel_rays(calib)
    for obj in world.object_poses():
        top = obj.position[2] + obj.size / 2.0
        z_face = (top - calib.translation[2]) / rays[..., 2]  # (H, W)
        hit = calib.translation + z_face[..., None] * rays
        local = (hit - obj.position) @ obj.rotation  # (H, W, 3) in the cube frame
        margin = float(np.median(z_face)) / calib.fx  # one pixel, in metres
        inside = np.all(np.abs(local[..., :2]) < obj.size / 2.0 - margin, axis=-1)
        assert inside.sum() > 100, obj.name
        np.testing.assert_allclose(depth[inside], z_face[inside], atol=5e-4)
        colors = rgb[inside].astype(int)  # (N, 3)
        expected = int(np.argmax(CUBE_PALETTE[obj.color][:3]))
        assert np.all(np.argmax(colors, axis=1) == expected), obj.name
        # The cube centre itself, projected, lands on the cube at its true depth.
        u, v, z = calib.project(obj.position + (0.0, 0.0, obj.size / 2.0))[0]
        assert abs(depth[int(round(v)), int(round(u))] - z) < 0.005


def test_position_servos_reach_their_targets() -> None:
    w = SimWorld()
    target = np.array([0.5, 0.2, -0.3, 0.4, 0.5, -0.5, 0.01])
    applied = w.set_joint_targets(target)
    np.testing.assert_array_equal(applied, target)
    w.step(int(1.5 / w.timestep))
    np.testing.assert_allclose(w.joint_positions(), target, atol=2e-3)
    assert np.all(np.abs(w.joint_velocities()) < 0.01)
    # Holding against gravity takes shoulder/elbow torque, within the servo limits.
    efforts = w.joint_efforts()
    assert abs(efforts[1]) > 0.1
    assert abs(efforts[1]) <= 8.2 + 1e-9


def test_targets_are_clipped_and_checked(world: SimWorld) -> None:
    world.reset(0)
    low, high = world.joint_limits
    applied = world.set_joint_targets(np.full(7, 10.0))
    np.testing.assert_array_equal(applied, high)
    np.testing.assert_array_equal(world.joint_targets(), high)
    with pytest.raises(ValueError, match="shape"):
        world.set_joint_targets(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        world.set_joint_targets(np.full(7, np.nan))
    world.reset(0)


@pytest.mark.parametrize("seed", [0, 1, 2, 41])
def test_reset_places_cubes_apart_in_the_workspace(world: SimWorld, seed: int) -> None:
    world.reset(seed)
    cfg = world.config
    poses = world.object_poses()
    for obj in poses:
        assert cfg.workspace_x[0] <= obj.position[0] <= cfg.workspace_x[1]
        assert cfg.workspace_y[0] <= obj.position[1] <= cfg.workspace_y[1]
        assert obj.position[2] == pytest.approx(cfg.cube_size / 2.0)
        assert not world.object_in_bin(obj.name)
    for a in range(len(poses)):
        for b in range(a + 1, len(poses)):
            gap = np.linalg.norm(poses[a].position[:2] - poses[b].position[:2])
            assert gap >= cfg.min_cube_spacing
    np.testing.assert_allclose(world.joint_positions(), cfg.home_q)


def test_reset_is_deterministic_per_seed(world: SimWorld) -> None:
    world.reset(7)
    first = [o.position for o in world.object_poses()]
    world.reset(8)
    other = [o.position for o in world.object_poses()]
    world.reset(7)
    again = [o.position for o in world.object_poses()]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_a_cube_dropped_in_the_bin_is_in_the_bin(world: SimWorld) -> None:
    world.reset(0)
    adr = world.model.jnt_qposadr[world.model.joint("red_cube").id]
    world.data.qpos[adr : adr + 3] = (*world.config.bin_center, 0.1)
    mujoco.mj_forward(world.model, world.data)
    assert not world.object_in_bin("red_cube")  # above the rim
    world.step(int(1.0 / world.timestep))
    assert world.object_in_bin("red_cube")
    assert world.object_pose("red_cube").position[2] == pytest.approx(
        world.bin_center[2] + world.config.cube_size / 2.0, abs=2e-3
    )
    assert not world.object_in_bin("green_cube")
    with pytest.raises(KeyError):
        world.object_pose("pink_cube")
    world.reset(0)


def test_the_bin_test_is_its_opening_below_the_rim() -> None:
    cfg = SimConfig()
    cx, cy = cfg.bin_center
    edge = cfg.bin_inner_size / 2.0
    assert cfg.in_bin((cx, cy, 0.02)) and cfg.in_bin((cx + 0.9 * edge, cy - 0.9 * edge, 0.02))
    assert not cfg.in_bin((cx + 1.1 * edge, cy, 0.02))  # beside it, on the table
    assert not cfg.in_bin((cx, cy, cfg.bin_wall_height + 0.01))  # above the rim


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cube_colors"):
        SimConfig(cube_colors=("red", "red"))
    with pytest.raises(ValueError, match="timestep"):
        SimConfig(timestep=0.0)
    with pytest.raises(ValueError, match="arm_kp"):
        SimConfig(arm_kp=(1.0, 2.0))
    bad = tmp_path / "calibration.yaml"
    bad.write_text("width: 640\nheight: 480\nfx: 600\nfy: 600\ncx: 320\n")
    with pytest.raises(ValueError, match="cy"):
        load_calibration(bad)
    crowded = dataclasses.replace(SimConfig(), workspace_x=(0.2, 0.21), workspace_y=(0.0, 0.01))
    with pytest.raises(RuntimeError, match="workspace"):
        SimWorld(crowded)
