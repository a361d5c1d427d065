"""The MuJoCo world of armstack: the arm from its URDF plus table, cubes, bin and camera.

The arm is not described twice: `SimWorld` loads config/robot/arm.urdf with MjSpec and
adds only what a URDF cannot say (servo actuators and reflected inertia, contact
properties of the finger pads) and the scene around it. The camera is placed and
shaped from config/camera/calibration.yaml, so a rendered image has exactly the
calibrated intrinsics and pose.

Frames: the arm's base_link is the MuJoCo world origin and the table top is z = 0,
so positions reported here are in base_link.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
import yaml
from armstack_common import paths
from armstack_common.robot_names import ARM_JOINTS, GRIPPER_JOINT, JOINT_NAMES

logger = logging.getLogger(__name__)

MIMIC_JOINT = "right_finger"
# Commanded and reported joints, in this order everywhere in the simulator: (7,).
ACTUATED_JOINTS = JOINT_NAMES
CAMERA_NAME = "camera_color_optical_frame"
# Nominal physical pixel pitch of the simulated sensor; only the ratio to the focal
# length matters, so any value gives the same image.
_PIXEL_PITCH = 3e-6  # m
# Share of the stall torque the integral term may supply (anti-windup bound).
_INTEGRAL_SHARE = 0.4

CUBE_PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.70, 0.20, 1.0),
    "blue": (0.10, 0.25, 0.85, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "orange": (0.95, 0.50, 0.05, 1.0),
    "purple": (0.55, 0.15, 0.70, 1.0),
}


@dataclass(frozen=True)
class CameraCalibration:
    """Pinhole camera of config/camera/calibration.yaml (OpenCV pixel convention)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...]
    frame_id: str
    parent_frame: str
    translation: np.ndarray  # (3,) optical frame origin in parent_frame, m
    rotation: np.ndarray  # (3, 3) optical frame axes (columns) in parent_frame

    @property
    def k(self) -> np.ndarray:
        """Intrinsic matrix. (3, 3)"""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def pose(self) -> np.ndarray:
        """Pose of the optical frame in parent_frame. (4, 4)"""
        pose = np.eye(4)
        pose[:3, :3] = self.rotation
        pose[:3, 3] = self.translation
        return pose

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel (u, v) and depth z of points in parent_frame. (N, 3) -> (N, 3)"""
        cam = (np.atleast_2d(points) - self.translation) @ self.rotation  # (N, 3) optical
        z = cam[:, 2]
        return np.stack(
            [self.fx * cam[:, 0] / z + self.cx, self.fy * cam[:, 1] / z + self.cy, z], 1
        )


def load_calibration(path: str | Path) -> CameraCalibration:
    """Read and check a calibration file; errors name the offending key."""
    with open(path) as stream:
        raw = yaml.safe_load(stream)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")

    def need(mapping: dict, key: str, where: str = "") -> object:
        if key not in mapping:
            raise ValueError(f"{path}: missing key {where}{key}")
        return mapping[key]

    width, height = int(need(raw, "width")), int(need(raw, "height"))
    intrinsics = {key: float(need(raw, key)) for key in ("fx", "fy", "cx", "cy")}
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: width and height must be > 0, got {width}x{height}")
    for key in ("fx", "fy"):
        if intrinsics[key] <= 0.0:
            raise ValueError(f"{path}: {key} must be > 0, got {intrinsics[key]}")
    extr = need(raw, "extrinsics")
    translation = np.array(need(extr, "translation", "extrinsics."), dtype=float)
    quat_xyzw = np.array(need(extr, "rotation_xyzw", "extrinsics."), dtype=float)
    if translation.shape != (3,):
        raise ValueError(f"{path}: extrinsics.translation must have 3 values")
    if quat_xyzw.shape != (4,) or abs(np.linalg.norm(quat_xyzw) - 1.0) > 1e-3:
        raise ValueError(f"{path}: extrinsics.rotation_xyzw must be a unit quaternion (x, y, z, w)")
    quat_wxyz = np.roll(quat_xyzw / np.linalg.norm(quat_xyzw), 1)
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, quat_wxyz)
    return CameraCalibration(
        width=width,
        height=height,
        distortion=tuple(float(d) for d in raw.get("distortion", ())),
        frame_id=str(raw.get("frame_id", CAMERA_NAME)),
        parent_frame=str(extr.get("parent_frame", "base_link")),
        translation=translation,
        rotation=rotation.reshape(3, 3),
        **intrinsics,
    )


def inside_bin(position: np.ndarray, bin_center: tuple[float, float], inner_size: float,
               wall_height: float) -> bool:
    """Whether a cube centred at `position` (base_link, m) is inside a bin standing on the
    table: within its square opening and below its rim."""
    position = np.asarray(position)
    inside = np.all(np.abs(position[:2] - np.asarray(bin_center)) < inner_size / 2.0)
    return bool(inside and position[2] < wall_height)


@dataclass(frozen=True)
class SimConfig:
    """Scene and servo settings of the simulated world. Lengths in m, angles in rad."""

    urdf_path: Path | None = None  # None: config/robot/arm.urdf
    calibration_path: Path | None = None  # None: config/camera/calibration.yaml
    timestep: float = 0.002  # s, physics step
    cube_colors: tuple[str, ...] = ("red", "green", "blue")  # one cube per entry
    cube_size: float = 0.03  # edge
    cube_mass: float = 0.02  # kg
    # Cube centres are drawn uniformly in this box of base_link, yaw uniformly.
    workspace_x: tuple[float, float] = (0.17, 0.35)
    workspace_y: tuple[float, float] = (-0.13, 0.20)
    min_cube_spacing: float = 0.07  # centre to centre, leaves room for the fingers
    bin_center: tuple[float, float] = (0.16, -0.27)  # on the table
    bin_inner_size: float = 0.13  # square opening
    bin_wall_height: float = 0.05
    bin_wall_thickness: float = 0.006
    # Arm rest pose at reset: above the table, clear of the camera's view of the cubes.
    home_q: tuple[float, ...] = (0.0, -0.9, 0.6, 0.0, 1.4, 0.0, 0.035)  # (7,) arm + gripper
    # Servo models: a PID position loop like the Dynamixel's, torque limited by the URDF
    # efforts. kp N m/rad, kd N m s/rad (on velocity), ki N m/(rad s) with its integral
    # capped at 40 % of the stall torque (anti-windup); armature is the rotor inertia
    # reflected through the gearbox, kg m^2. Tuned for < 0.01 rad lag on a 1.5 s move
    # and < 0.5 mrad error 0.5 s after it.
    arm_kp: tuple[float, ...] = (150.0, 300.0, 250.0, 60.0, 100.0, 30.0)
    arm_kd: tuple[float, ...] = (2.0, 4.0, 3.0, 0.7, 0.7, 0.3)
    arm_ki: tuple[float, ...] = (600.0, 1200.0, 1000.0, 240.0, 400.0, 120.0)
    armature: tuple[float, ...] = (0.02, 0.04, 0.02, 0.01, 0.01, 0.005)
    # Gripper: position loop whose force saturates at the URDF effort, like current-
    # based position mode; the grip force on a cube is that limit.
    gripper_kp: float = 2000.0  # N / m
    gripper_kd: float = 20.0  # N s / m
    finger_armature: float = 0.05  # kg, the gripper motor's inertia seen at each finger
    finger_friction: tuple[float, float, float] = (1.5, 0.02, 0.002)  # slide, spin, roll
    cube_friction: tuple[float, float, float] = (0.9, 0.005, 0.0001)
    # Multisample anti-aliasing of the camera. 0: each pixel is sampled at its centre,
    # so depth is exact (~2 um on the table) and a 640x480 frame takes ~2.5 ms on Mesa
    # llvmpipe; edges show staircases. 4: smooth colour edges, ~11 ms, but depth comes
    # from one sub-pixel sample (a ~0.3 px shift, ~0.3 mm on the table).
    render_samples: int = 0

    def in_bin(self, position: np.ndarray) -> bool:
        """Whether a cube centred at `position` is inside this scene's bin (`inside_bin`;
        SimWorld.object_in_bin also asks it to be still)."""
        return inside_bin(position, self.bin_center, self.bin_inner_size, self.bin_wall_height)

    def __post_init__(self) -> None:
        if not self.timestep > 0.0:
            raise ValueError(f"SimConfig.timestep must be > 0, got {self.timestep}")
        if not self.cube_colors:
            raise ValueError("SimConfig.cube_colors must name at least one cube")
        unknown = [c for c in self.cube_colors if c not in CUBE_PALETTE]
        if unknown or len(set(self.cube_colors)) != len(self.cube_colors):
            raise ValueError(
                f"SimConfig.cube_colors must be distinct names from {sorted(CUBE_PALETTE)}, "
                f"got {self.cube_colors}"
            )
        for name in (
            "cube_size",
            "cube_mass",
            "min_cube_spacing",
            "bin_inner_size",
            "bin_wall_height",
            "bin_wall_thickness",
            "gripper_kp",
            "gripper_kd",
            "finger_armature",
        ):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"SimConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("workspace_x", "workspace_y"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ValueError(f"SimConfig.{name} must be (low, high) with low < high, "
                                 f"got {list(bounds)}")
        if len(self.home_q) != len(ACTUATED_JOINTS):
            raise ValueError(f"SimConfig.home_q must have {len(ACTUATED_JOINTS)} values")
        for name in ("arm_kp", "arm_kd", "arm_ki", "armature"):
            values = getattr(self, name)
            if len(values) != len(ARM_JOINTS) or any(not v >= 0.0 for v in values):
                raise ValueError(f"SimConfig.{name} must be {len(ARM_JOINTS)} values >= 0")
        if self.render_samples not in (0, 1, 2, 4, 8):
            raise ValueError(
                f"SimConfig.render_samples must be 0, 1, 2, 4 or 8, got {self.render_samples}"
            )
        for name in ("finger_friction", "cube_friction"):
            if len(getattr(self, name)) != 3 or any(not v >= 0.0 for v in getattr(self, name)):
                raise ValueError(f"SimConfig.{name} must be 3 values >= 0")


@dataclass(frozen=True)
class ObjectPose:
    """A scene object's true pose in base_link."""

    name: str  # e.g. "red_cube"
    color: str  # class label, e.g. "red"
    position: np.ndarray  # (3,) centre, m
    quat_xyzw: np.ndarray  # (4,) orientation (ROS order)
    size: float  # edge length, m

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3)"""
        mat = np.empty(9)
        mujoco.mju_quat2Mat(mat, np.roll(self.quat_xyzw, 1))
        return mat.reshape(3, 3)


@dataclass
class _Indices:
    """Addresses of the actuated joints and the cubes in the compiled model."""

    qpos: np.ndarray  # (7,) qpos addresses of ACTUATED_JOINTS
    dof: np.ndarray  # (7,) dof addresses
    mimic_qpos: int
    actuators: np.ndarray  # (7,)
    cube_qpos: dict[str, int] = field(default_factory=dict)  # freejoint qpos address
    cube_dof: dict[str, int] = field(default_factory=dict)
    ee_body: int = -1
    camera: int = -1


class SimWorld:
    """MuJoCo simulation of the arm, the cubes and the bin, with an RGB-D camera.

    Not thread-safe: a caller that steps physics in one thread and renders in another
    serializes access itself (render_rgbd takes a copied state for that). Rendering
    and close() belong to one thread, the one that owns the GL context.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        self.urdf_path = Path(cfg.urdf_path) if cfg.urdf_path else paths.urdf_path()
        self.calibration = load_calibration(
            cfg.calibration_path or paths.config_file("camera/calibration.yaml")
        )
        spec = self._build_spec()
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._idx = self._lookup_indices()
        self._ctrl_low = self.model.actuator_ctrlrange[self._idx.actuators, 0].copy()  # (7,)
        self._ctrl_high = self.model.actuator_ctrlrange[self._idx.actuators, 1].copy()  # (7,)
        self._renderer: _RgbdRenderer | None = None
        self.reset(0)
        logger.info(
            "sim world: %d bodies, %d cubes, dt %.4f s, camera %dx%d",
            self.model.nbody,
            len(cfg.cube_colors),
            cfg.timestep,
            self.calibration.width,
            self.calibration.height,
        )

    # ---------------------------------------------------------------- model build
    def _build_spec(self) -> mujoco.MjSpec:
        cfg = self.config
        spec = mujoco.MjSpec.from_file(str(self.urdf_path))
        spec.modelname = "armstack_world"
        # Keep ee_link as a body (URDF import fuses fixed links by default).
        spec.compiler.fusestatic = False
        spec.option.timestep = cfg.timestep
        # implicitfast: stable with stiff servo damping; elliptic cones and a high
        # impratio keep a grasped cube from creeping out of the fingers.
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        spec.option.impratio = 10.0
        self._add_actuators(spec)
        self._set_finger_contacts(spec)
        self._add_scene(spec)
        self._add_camera(spec)
        return spec

    def _add_actuators(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        joints = {j.name: j for j in spec.joints}
        missing = [n for n in (*ACTUATED_JOINTS, MIMIC_JOINT) if n not in joints]
        if missing:
            raise ValueError(f"{self.urdf_path} lacks joints {missing}")
        for i, name in enumerate(ARM_JOINTS):
            joint = joints[name]
            joint.armature = cfg.armature[i]
            act = spec.add_actuator(name=name, target=name)
            act.trntype = mujoco.mjtTrn.mjTRN_JOINT
            # Anti-windup: the integral state (rad s) stops where its torque reaches
            # _INTEGRAL_SHARE of the stall torque. Only the position setpoint is an
            # input (ctrlspec 1: no velocity setpoint, kv damps velocity).
            ki = cfg.arm_ki[i]
            imax = _INTEGRAL_SHARE * float(joint.actfrcrange[1]) / ki if ki > 0.0 else -1.0
            act.set_to_pid(kp=cfg.arm_kp[i], kv=cfg.arm_kd[i], ki=ki, imax=imax, ctrlspec=1)
            act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
            act.ctrlrange = joint.range.copy()
        finger = joints[GRIPPER_JOINT]
        act = spec.add_actuator(name=GRIPPER_JOINT, target=GRIPPER_JOINT)
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        act.set_to_position(kp=cfg.gripper_kp, kv=cfg.gripper_kd)
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = finger.range.copy()
        # MuJoCo's URDF import turns <mimic> into a joint equality; add it only if
        # this version did not, so the mimic finger is coupled exactly once.
        couplings = [
            e for e in spec.equalities if {e.name1, e.name2} == {MIMIC_JOINT, GRIPPER_JOINT}
        ]
        if not couplings:
            eq = spec.add_equality(name="finger_mimic", type=mujoco.mjtEq.mjEQ_JOINT)
            eq.name1, eq.name2 = MIMIC_JOINT, GRIPPER_JOINT
            eq.data[:5] = [0.0, 1.0, 0.0, 0.0, 0.0]
            couplings = [eq]
        # The linkage is rigid: MuJoCo's default soft equality scales with the light
        # fingers' mass and would let a gripped cube push one finger 1-2 cm off its
        # mirror. Stiff (two timesteps) and nearly hard instead.
        for eq in couplings:
            eq.solref = [2.0 * cfg.timestep, 1.0]
            eq.solimp = [0.99, 0.999, 0.001, 0.5, 2.0]
        for name in (GRIPPER_JOINT, MIMIC_JOINT):
            joints[name].armature = cfg.finger_armature

    def _set_finger_contacts(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        for geom in spec.geoms:
            if geom.parent.name in ("left_finger_link", "right_finger_link"):
                geom.friction = list(cfg.finger_friction)
                # condim 4 adds torsional friction: a cube held off-centre does not spin.
                geom.condim = 4
                geom.solref = [0.01, 1.0]
        # The pads touch when closed; that contact would only fight the mimic coupling.
        spec.add_exclude(bodyname1="left_finger_link", bodyname2="right_finger_link")

    def _add_scene(self, spec: mujoco.MjSpec) -> None:
        cfg = self.config
        world = spec.worldbody
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
        light = world.add_light(name="sun", pos=[0.3, 0.3, 1.5], dir=[-0.2, -0.2, -1.0])
        light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
        light.diffuse = [0.6, 0.6, 0.6]
        light.castshadow = False
        world.add_geom(
            name="table",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.45, 0.6, 0.02],
            pos=[0.2, 0.0, -0.02],
            rgba=[0.62, 0.50, 0.36, 1.0],
        )
        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[3.0, 3.0, 0.1],
            pos=[0.0, 0.0, -0.75],
            rgba=[0.3, 0.3, 0.32, 1.0],
        )
        self._add_bin(world)
        half = cfg.cube_size / 2.0
        for color in cfg.cube_colors:
            body = world.add_body(name=f"{color}_cube", pos=[0.0, 0.0, half])
            body.add_freejoint(name=f"{color}_cube")
            body.add_geom(
                name=f"{color}_cube",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[half] * 3,
                mass=cfg.cube_mass,
                rgba=list(CUBE_PALETTE[color]),
                friction=list(cfg.cube_friction),
                condim=4,
            )

    def _add_bin(self, world: mujoco.MjsBody) -> None:
        cfg = self.config
        inner, t, h = cfg.bin_inner_size / 2.0, cfg.bin_wall_thickness / 2.0, cfg.bin_wall_height
        body = world.add_body(name="bin", pos=[*cfg.bin_center, 0.0])
        rgba = [0.25, 0.30, 0.35, 1.0]
        body.add_geom(
            name="bin_floor",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[inner + 2 * t, inner + 2 * t, t],
            pos=[0.0, 0.0, t],
            rgba=rgba,
        )
        for i, (dx, dy) in enumerate(((1, 0), (-1, 0), (0, 1), (0, -1))):
            size = [t, inner + 2 * t, h / 2.0] if dx else [inner + 2 * t, t, h / 2.0]
            body.add_geom(
                name=f"bin_wall_{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=size,
                pos=[dx * (inner + t), dy * (inner + t), h / 2.0],
                rgba=rgba,
            )

    def _add_camera(self, spec: mujoco.MjSpec) -> None:
        cal = self.calibration
        spec.visual.global_.offwidth = max(cal.width, spec.visual.global_.offwidth)
        spec.visual.global_.offheight = max(cal.height, spec.visual.global_.offheight)
        spec.visual.quality.offsamples = self.config.render_samples
        # MuJoCo cameras look along -z with y up; the optical frame looks along +z
        # with y down: the same frame turned half a turn about x.
        mj_rot = cal.rotation @ np.diag([1.0, -1.0, -1.0])
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, mj_rot.ravel())
        cam = spec.worldbody.add_camera(
            name=CAMERA_NAME, pos=cal.translation.tolist(), quat=quat.tolist()
        )
        cam.resolution = [cal.width, cal.height]
        cam.sensor_size = [cal.width * _PIXEL_PITCH, cal.height * _PIXEL_PITCH]
        cam.focal_pixel = [cal.fx, cal.fy]
        # MuJoCo measures the principal point from the image centre ((W-1)/2, (H-1)/2
        # in OpenCV pixels), positive towards -u and -v (checked by the camera test).
        cam.principal_pixel = [(cal.width - 1) / 2.0 - cal.cx, (cal.height - 1) / 2.0 - cal.cy]

    def _lookup_indices(self) -> _Indices:
        m = self.model
        joint_ids = [m.joint(name).id for name in ACTUATED_JOINTS]
        idx = _Indices(
            qpos=np.array([m.jnt_qposadr[j] for j in joint_ids]),
            dof=np.array([m.jnt_dofadr[j] for j in joint_ids]),
            mimic_qpos=int(m.jnt_qposadr[m.joint(MIMIC_JOINT).id]),
            actuators=np.array([m.actuator(name).id for name in ACTUATED_JOINTS]),
            ee_body=m.body("ee_link").id,
            camera=m.camera(CAMERA_NAME).id,
        )
        for color in self.config.cube_colors:
            joint = m.joint(f"{color}_cube")
            idx.cube_qpos[f"{color}_cube"] = int(m.jnt_qposadr[joint.id])
            idx.cube_dof[f"{color}_cube"] = int(m.jnt_dofadr[joint.id])
        return idx

    # ---------------------------------------------------------------- episode
    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        """Simulated time since the last reset, s."""
        return float(self.data.time)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Names of the commanded/reported joints, the order of every (7,) array."""
        return ACTUATED_JOINTS

    @property
    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper position limits of the actuated joints (URDF). (7,), (7,)"""
        return self._ctrl_low.copy(), self._ctrl_high.copy()

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(self._idx.cube_qpos)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: arm at home, cubes at random poses drawn from `seed`."""
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        home = np.array(self.config.home_q)
        self.data.qpos[self._idx.qpos] = home
        self.data.qpos[self._idx.mimic_qpos] = home[-1]
        self._place_cubes(rng)
        self.set_joint_targets(home)
        mujoco.mj_forward(self.model, self.data)

    def _place_cubes(self, rng: np.random.Generator) -> None:
        cfg = self.config
        half = cfg.cube_size / 2.0
        # Keep cube centres off the bin, with room for a finger beside the wall.
        bin_keepout = cfg.bin_inner_size / 2.0 + cfg.bin_wall_thickness + cfg.cube_size
        placed: list[np.ndarray] = []
        for name, adr in self._idx.cube_qpos.items():
            for _ in range(1000):
                xy = np.array([rng.uniform(*cfg.workspace_x), rng.uniform(*cfg.workspace_y)])
                off_bin = np.max(np.abs(xy - cfg.bin_center)) > bin_keepout
                spaced = all(np.linalg.norm(xy - p) >= cfg.min_cube_spacing for p in placed)
                if off_bin and spaced:
                    break
            else:
                raise RuntimeError(
                    f"cannot place {name}: workspace_x/workspace_y too small for "
                    f"{len(cfg.cube_colors)} cubes {cfg.min_cube_spacing} m apart"
                )
            placed.append(xy)
            yaw = rng.uniform(0.0, math.pi / 2.0)  # a cube repeats every quarter turn
            self.data.qpos[adr : adr + 3] = (xy[0], xy[1], half)
            self.data.qpos[adr + 3 : adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def step(self, n: int = 1) -> None:
        """Advance the physics by `n` timesteps."""
        mujoco.mj_step(self.model, self.data, nstep=n)

    # ---------------------------------------------------------------- servos
    def set_joint_targets(self, q: np.ndarray) -> np.ndarray:
        """Position setpoints of the 7 actuated joints (rad, gripper m); returns them
        as applied, clipped to the joint limits. (7,) -> (7,)"""
        q = np.asarray(q, dtype=float)
        if q.shape != (len(ACTUATED_JOINTS),):
            raise ValueError(
                f"joint targets must have shape ({len(ACTUATED_JOINTS)},), got {q.shape}"
            )
        if not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be finite, got {q}")
        applied = np.clip(q, self._ctrl_low, self._ctrl_high)
        self.data.ctrl[self.model.actuator_ctrladr[self._idx.actuators]] = applied
        return applied

    def joint_targets(self) -> np.ndarray:
        """The setpoints in force. (7,)"""
        return self.data.ctrl[self.model.actuator_ctrladr[self._idx.actuators]].copy()

    def joint_positions(self) -> np.ndarray:
        """(7,) rad, gripper m"""
        return self.data.qpos[self._idx.qpos].copy()

    def joint_velocities(self) -> np.ndarray:
        """(7,) rad/s, gripper m/s"""
        return self.data.qvel[self._idx.dof].copy()

    def joint_efforts(self) -> np.ndarray:
        """Actuator torque at each joint after the servo's limit. (7,) N m, gripper N"""
        return self.data.qfrc_actuator[self._idx.dof].copy()

    def ee_pose(self) -> np.ndarray:
        """True pose of ee_link in base_link. (4, 4)"""
        pose = np.eye(4)
        pose[:3, :3] = self.data.xmat[self._idx.ee_body].reshape(3, 3)
        pose[:3, 3] = self.data.xpos[self._idx.ee_body]
        return pose

    # ---------------------------------------------------------------- objects
    @property
    def bin_center(self) -> np.ndarray:
        """Centre of the bin's floor (top face) in base_link. (3,)"""
        return np.array([*self.config.bin_center, self.config.bin_wall_thickness])

    def object_pose(self, name: str) -> ObjectPose:
        if name not in self._idx.cube_qpos:
            raise KeyError(f"no object named {name!r}; objects: {self.object_names}")
        adr = self._idx.cube_qpos[name]
        return ObjectPose(
            name=name,
            color=name.removesuffix("_cube"),
            position=self.data.qpos[adr : adr + 3].copy(),
            quat_xyzw=np.roll(self.data.qpos[adr + 3 : adr + 7], -1),
            size=self.config.cube_size,
        )

    def object_poses(self) -> list[ObjectPose]:
        """True poses of all cubes in base_link."""
        return [self.object_pose(name) for name in self.object_names]

    def object_speed(self, name: str) -> float:
        """Linear speed of an object's centre, m/s."""
        self.object_pose(name)  # validates the name
        dof = self._idx.cube_dof[name]
        return float(np.linalg.norm(self.data.qvel[dof : dof + 3]))

    def object_in_bin(self, name: str, max_speed: float = 0.05) -> bool:
        """Whether the object rests inside the bin: centre within the opening, below
        the rim, and (nearly) still."""
        return (self.config.in_bin(self.object_pose(name).position)
                and self.object_speed(name) <= max_speed)

    # ---------------------------------------------------------------- camera
    @property
    def camera_intrinsics(self) -> CameraCalibration:
        """The calibration the camera was built from (rendered images match it)."""
        return self.calibration

    def camera_pose(self) -> np.ndarray:
        """Pose of camera_color_optical_frame in base_link, read back from the model. (4, 4)"""
        pose = np.eye(4)
        mj_rot = self.data.cam_xmat[self._idx.camera].reshape(3, 3)
        pose[:3, :3] = mj_rot @ np.diag([1.0, -1.0, -1.0])
        pose[:3, 3] = self.data.cam_xpos[self._idx.camera]
        return pose

    def render_rgbd(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Colour and depth from the calibrated camera, from one render pass.

        `data`: a copy of this world's state to render instead of the live one, so a
        camera thread can render while physics steps on (see runtime.SimRuntime.snapshot).

        Returns rgb (H, W, 3) uint8 and depth (H, W) float32: z in the optical frame
        (distance along the optical axis, not along the ray), metres.
        """
        if self._renderer is None:
            self._renderer = _RgbdRenderer(
                self.model, self._idx.camera, self.calibration.width, self.calibration.height
            )
        return self._renderer.render(self.data if data is None else data)

    def close(self) -> None:
        """Free the renderer's GL resources (the world stays usable for physics)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _gl_context_class() -> type:
    """The OpenGL context class named by MUJOCO_GL, EGL when unset (headless).

    Chosen here rather than by `import mujoco`, which fixes mujoco.GLContext from the
    environment at import time, possibly before anyone set MUJOCO_GL.
    """
    backend = os.environ.get("MUJOCO_GL", "egl").strip().lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    return GLContext


class _RgbdRenderer:
    """Offscreen renderer reading colour and depth of one camera from the same frame."""

    def __init__(self, model: mujoco.MjModel, camera_id: int, width: int, height: int) -> None:
        self._model = model
        self._gl = _gl_context_class()(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        # Reversed depth (1 at the near plane, 0 at the far one) in a float buffer:
        # keeps depth precise over the whole range.
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = camera_id
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._depth = np.empty((height, width), dtype=np.float32)
        extent = model.stat.extent
        self._near = float(model.vis.map.znear * extent)
        self._far = float(model.vis.map.zfar * extent)

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self._model,
            data,
            self._option,
            None,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, self._context)
        # OpenGL rows run bottom-up.
        rgb = np.ascontiguousarray(self._rgb[::-1])
        d = self._depth[::-1].astype(np.float64)
        # Invert the reversed-z perspective map d = n (f - z) / (z (f - n)); float64
        # because the map is hyperbolic and float32 loses millimetres far away.
        near, far = self._near, self._far
        depth = (near * far / (d * (far - near) + near)).astype(np.float32)
        return rgb, depth

    def close(self) -> None:
        self._gl.make_current()
        self._context.free()
        self._gl.free()
