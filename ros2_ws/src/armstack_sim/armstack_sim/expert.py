"""Scripted pick-and-place expert: puts cubes into the bin using their true poses.

`PickPlaceExpert` is a plain state machine. Given an observation (time, end-effector
pose, gripper opening, object poses) it returns the next end-effector target in
base_link and a gripper opening: exactly what an `ee_command` message carries, so the
same expert can drive the ROS graph through the IK node. `run_episode` runs it in
process against `SimWorld`, turning targets into joint setpoints with `ArmKinematics`,
the module the IK node wraps.

Episode definition: every cube on the table is picked, top-down, and placed in the
bin, nearest to the gripper first; the episode succeeds when all of them rest inside
the bin. A failed grasp (the cube not lifted, or closed on its edge: `max_grasp_offset`) is
retried up to `max_attempts` times.
With `miss_rate` > 0 the expert also misses on purpose now and then (see ExpertConfig), so a
recording shows failed grasps and their retries.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from armstack_common.kinematics import ArmKinematics

from armstack_sim.profiled_joints import ProfiledJoints
from armstack_sim.world import ObjectPose, SimWorld

logger = logging.getLogger(__name__)


PICK_ORDERS = ("nearest", "listed")
GRASP_YAWS = ("cube", "azimuth")


@dataclass(frozen=True)
class ExpertConfig:
    """Motion plan of the expert. Heights are of ee_link above the table top (m)."""

    approach_height: float = 0.09  # pre-grasp, above the cube centre
    # ee above the cube centre when closing: the fingertips clear the table.
    grasp_offset: float = 0.008
    lift_height: float = 0.16  # carrying height
    # Over the bin, where the gripper opens: the fingertips stay above the rim.
    release_height: float = 0.08
    bin_wall_clearance: float = 0.03  # m, from a bin wall to the nearest drop spot
    gripper_open: float = 0.034  # m, left_finger opening
    # m, commanded when gripping: the servo's force limit is what holds the cube.
    gripper_closed: float = 0.0
    linear_speed: float = 0.25  # m/s, average along a move
    angular_speed: float = 1.5  # rad/s, average along a move
    min_move_time: float = 0.4  # s
    close_time: float = 0.5  # s, gripper closing with the arm still
    open_time: float = 0.4  # s
    # m, ee position error accepted before closing, judging a grasp or opening over the bin
    settle_tolerance: float = 0.004
    settle_timeout: float = 1.0  # s, longest wait for that
    lift_check: float = 0.03  # m, a held cube must be this far above its resting height
    max_attempts: int = 3  # grasp attempts per cube
    # m, horizontal, cube centre to the fingers' centre line when closed: beyond, the fingers
    # hold an edge (a deliberate miss that caught the cube), which slips out on the way to the
    # bin, so the expert opens again where it is and retries.
    max_grasp_offset: float = 0.01
    home_position: tuple[float, float, float] = (0.14, 0.0, 0.25)  # final rest of the ee
    # Which cube next: "nearest" to the gripper, or "listed" (the order the targets are given
    # in). A policy learns "listed" far more easily: which cube is nearest flips between two
    # almost equally near cubes, and a policy trained on nearest-first demonstrations averages
    # the two and closes the gripper between them.
    pick_order: str = "nearest"
    # Finger axis of a grasp: "cube", normal to a pair of the cube's faces (the firmest grip),
    # or "azimuth", the wrist's natural direction at the cube's position whatever the cube's
    # yaw (the open fingers span the cube's diagonal and square it up as they close). A policy
    # that sees objects as positions only learns "azimuth": the cube's yaw decides the "cube"
    # grasp, so its wrist angle is a target the policy cannot predict.
    grasp_yaw: str = "cube"
    # Probability that the first attempt at a cube aims `miss_offset` beside it, radially
    # (towards or away from the arm, at random), so the grasp fails or knocks the cube and the
    # expert retries. Clean demonstrations never show the states after a failed grasp (cube
    # pushed aside, gripper empty at carrying height), which is where a policy that misses
    # lands; with misses in the recording it can learn to go back for the cube. Where a miss
    # aims is random, in both directions, so nothing a policy sees predicts it; a regression
    # should see it as spread around the cube rather than a shift.
    miss_rate: float = 0.0
    miss_offset: float = 0.025  # m, horizontal, from the cube centre to where a miss aims

    def __post_init__(self) -> None:
        positive = (
            "approach_height",
            "lift_height",
            "release_height",
            "bin_wall_clearance",
            "linear_speed",
            "angular_speed",
            "min_move_time",
            "close_time",
            "open_time",
            "settle_tolerance",
            "settle_timeout",
            "lift_check",
            "max_grasp_offset",
        )
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ExpertConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ValueError(f"ExpertConfig.miss_rate must be in [0, 1], got {self.miss_rate}")
        if not self.miss_offset >= 0.0:
            raise ValueError(f"ExpertConfig.miss_offset must be >= 0, got {self.miss_offset}")
        if not self.grasp_offset >= 0.0:
            raise ValueError(f"ExpertConfig.grasp_offset must be >= 0, got {self.grasp_offset}")
        if not self.gripper_open > self.gripper_closed >= 0.0:
            raise ValueError("ExpertConfig.gripper_open must exceed gripper_closed (>= 0)")
        if self.max_attempts < 1:
            raise ValueError(f"ExpertConfig.max_attempts must be >= 1, got {self.max_attempts}")
        if self.pick_order not in PICK_ORDERS:
            raise ValueError(f"ExpertConfig.pick_order must be one of {PICK_ORDERS}, "
                             f"got {self.pick_order!r}")
        if self.grasp_yaw not in GRASP_YAWS:
            raise ValueError(f"ExpertConfig.grasp_yaw must be one of {GRASP_YAWS}, "
                             f"got {self.grasp_yaw!r}")
        if not self.lift_height > self.approach_height > self.grasp_offset:
            raise ValueError("ExpertConfig: need lift_height > approach_height > grasp_offset")


@dataclass(frozen=True)
class ExpertObservation:
    time: float  # s
    ee_pose: np.ndarray  # (4, 4) ee_link in base_link
    gripper: float  # m, left_finger position
    objects: Mapping[str, ObjectPose]


@dataclass(frozen=True)
class ExpertAction:
    ee_pose: np.ndarray  # (4, 4) target of ee_link in base_link
    gripper: float  # m, target left_finger opening
    phase: str
    target: str | None  # the cube being handled
    done: bool = False
    # Part of a deliberate miss (its approach, descent and close): a command aimed beside the
    # cube on purpose, which a policy must not learn; what follows it (open, retry) it should.
    deliberate: bool = False


class Phase(enum.Enum):
    APPROACH = "approach"  # above the cube, gripper open
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"
    TRANSFER = "transfer"  # above the bin at carrying height
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    HOME = "home"
    DONE = "done"


# Phases whose next step needs the arm where the segment ended, not only the segment's time
# to be up: close once the fingers are around the cube, judge the grasp once the ee is at
# carrying height (a held cube is up by then), open once over the cube's spot in the bin.
# Through the ROS graph the measured arm trails the targets (IK motion limits, servo
# profiles, a loaded machine); in process it barely does, and the wait is a few ticks.
_ARRIVAL_PHASES = (Phase.DESCEND, Phase.LIFT, Phase.LOWER)


@dataclass
class _Segment:
    """A timed straight-line move of the ee (min-jerk in time, slerp in rotation)."""

    start: np.ndarray  # (4, 4)
    goal: np.ndarray  # (4, 4)
    t0: float
    duration: float

    def at(self, t: float) -> np.ndarray:
        s = 1.0 if self.duration <= 0.0 else min(max((t - self.t0) / self.duration, 0.0), 1.0)
        s = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
        pose = np.eye(4)
        pose[:3, 3] = self.start[:3, 3] + s * (self.goal[:3, 3] - self.start[:3, 3])
        pose[:3, :3] = _slerp(self.start[:3, :3], self.goal[:3, :3], s)
        return pose

    def finished(self, t: float) -> bool:
        return t >= self.t0 + self.duration


def top_down_pose(position: np.ndarray, finger_yaw: float) -> np.ndarray:
    """ee_link pose pointing straight down (x = -z of base_link), the fingers closing
    along the horizontal direction at angle `finger_yaw`. (4, 4)"""
    x = np.array([0.0, 0.0, -1.0])
    y = np.array([math.cos(finger_yaw), math.sin(finger_yaw), 0.0])
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x, y, np.cross(x, y)])
    pose[:3, 3] = position
    return pose


def _natural_yaw(position: np.ndarray) -> float:
    """Finger axis of a top-down gripper at this position with wrist_rotate = 0: the
    base y axis turned by the waist angle."""
    return math.atan2(position[1], position[0]) + math.pi / 2.0


def rest_joint_positions(config: ExpertConfig, kinematics: ArmKinematics,
                         seed: Sequence[float]) -> np.ndarray:
    """Joint positions (arm, then the open gripper) of the expert's rest: the top-down pose at
    `home_position` it ends every take in, so where every demonstration it records after the
    first one starts. `seed`: arm joints IK starts from (e.g. the simulator's home)."""
    home = np.array(config.home_position)
    solution = kinematics.ik(top_down_pose(home, _natural_yaw(home)),
                             np.asarray(seed, dtype=float)[:len(kinematics.joint_names)])
    if not solution.success:
        raise ValueError(f"ExpertConfig.home_position {config.home_position} is out of reach")
    return np.append(solution.q, config.gripper_open)


def grasp_yaw(obj: ObjectPose) -> float:
    """Finger axis for a top-down grasp: normal to a pair of cube faces, chosen nearest
    to the wrist's natural direction at that azimuth so wrist_rotate stays small."""
    natural = _natural_yaw(obj.position)
    rot = obj.rotation
    cube_yaw = math.atan2(rot[1, 0], rot[0, 0])
    candidates = cube_yaw + np.arange(-4, 5) * (math.pi / 2.0)
    return float(candidates[np.argmin(np.abs(candidates - natural))])


def _bin_slots(center: np.ndarray, inner_size: float, clearance: float, count: int) -> np.ndarray:
    """Drop spots on the bin floor: a square grid with `clearance` from the walls. (count, 2)"""
    n = math.ceil(math.sqrt(count))
    reach = max(inner_size / 2.0 - clearance, 0.0)
    offsets = np.linspace(-reach, reach, n) if n > 1 else np.zeros(1)  # (n,)
    grid = np.array([(x, y) for y in offsets for x in offsets])  # (n*n, 2)
    return center[:2] + grid[:count]


def _slerp(r0: np.ndarray, r1: np.ndarray, s: float) -> np.ndarray:
    rel = r0.T @ r1
    angle = math.acos(min(max((np.trace(rel) - 1.0) / 2.0, -1.0), 1.0))
    if angle < 1e-9:
        return r1.copy()
    axis = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # half a turn: any perpendicular axis from the symmetric part
        eigvals, eigvecs = np.linalg.eigh(rel + rel.T)
        axis = eigvecs[:, np.argmax(eigvals)]
    else:
        axis = axis / norm
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    a = s * angle
    return r0 @ (np.eye(3) + math.sin(a) * k + (1.0 - math.cos(a)) * (k @ k))


def _rotation_angle(r0: np.ndarray, r1: np.ndarray) -> float:
    return math.acos(min(max((np.trace(r0.T @ r1) - 1.0) / 2.0, -1.0), 1.0))


class PickPlaceExpert:
    """State machine picking each cube in `targets` and dropping it into the bin."""

    def __init__(
        self,
        config: ExpertConfig,
        bin_center: np.ndarray,
        bin_inner_size: float,
        targets: Sequence[str],
        rng: np.random.Generator | None = None,
        forced_miss: str | None = None,
    ) -> None:
        """`rng` draws the deliberate misses (ExpertConfig.miss_rate); default seed 0.
        `forced_miss`: a target whose first attempt misses whatever miss_rate says."""
        if not targets:
            raise ValueError("PickPlaceExpert needs at least one target object")
        if forced_miss is not None and forced_miss not in targets:
            raise ValueError(f"PickPlaceExpert forced_miss {forced_miss!r} is not a target")
        self.config = config
        self.bin_center = np.asarray(bin_center, dtype=float)  # (3,) bin floor centre
        self._slots = _bin_slots(
            self.bin_center, bin_inner_size, config.bin_wall_clearance, len(targets)
        )  # (N, 2)
        self.phase = Phase.APPROACH
        self.target: str | None = None
        self.attempts: dict[str, int] = {name: 0 for name in targets}
        self.delivered: list[str] = []
        self.gave_up: list[str] = []
        self._pending = list(targets)
        self._carrying = False
        # (3,) where the held cube's centre is in ee_link, measured once it is lifted: a grasp
        # off the cube's centre (a deliberate miss that caught an edge, a cube pushed while
        # the fingers closed slowly) carries it that far from the fingers' centre line.
        self._held_offset = np.zeros(3)
        self._segment: _Segment | None = None
        self._gripper = config.gripper_open
        self._yaw = 0.0
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._aim_offset = np.zeros(3)  # (3,) from the cube centre to where this attempt aims
        self.misses = 0  # deliberate misses so far
        self._forced_miss = forced_miss

    def act(self, obs: ExpertObservation) -> ExpertAction:
        """Next ee target and gripper opening for this observation."""
        if self._segment is None:
            self._enter(Phase.APPROACH, obs)
        elif self.phase is not Phase.DONE and self._phase_complete(obs):
            self._enter(self._next_phase(obs), obs)
        assert self._segment is not None
        return ExpertAction(
            ee_pose=self._segment.at(obs.time),
            gripper=self._gripper,
            phase=self.phase.value,
            target=self.target,
            done=self.phase is Phase.DONE,
            deliberate=bool(self._aim_offset.any())
            and self.phase in (Phase.APPROACH, Phase.DESCEND, Phase.CLOSE),
        )

    def _phase_complete(self, obs: ExpertObservation) -> bool:
        seg = self._segment
        assert seg is not None
        if not seg.finished(obs.time):
            return False
        if self.phase in _ARRIVAL_PHASES:
            error = np.linalg.norm(obs.ee_pose[:3, 3] - seg.goal[:3, 3])
            waited = obs.time - (seg.t0 + seg.duration)
            return error <= self.config.settle_tolerance or waited >= self.config.settle_timeout
        return True

    def _next_phase(self, obs: ExpertObservation) -> Phase:
        if self.phase is Phase.CLOSE:
            offset = self._grasp_offset(obs)
            if offset <= self.config.max_grasp_offset:
                return Phase.LIFT
            logger.info("grasp of %s %.1f cm off its centre (attempt %d): opening to retry",
                        self.target, 100.0 * offset, self.attempts[self.target])
            return Phase.RELEASE  # opens in place; _carrying is False, so nothing is delivered
        if self.phase is Phase.LIFT:
            self._carrying = self._holding(obs)
            cube = obs.objects[self.target].position
            self._held_offset = (obs.ee_pose[:3, :3].T @ (cube - obs.ee_pose[:3, 3])
                                 if self._carrying else np.zeros(3))
            if not self._carrying:
                logger.info(
                    "grasp of %s failed (attempt %d)", self.target, self.attempts[self.target]
                )
            # A failed grasp opens where it is, backs off and tries again.
            return Phase.TRANSFER if self._carrying else Phase.RELEASE
        return {
            Phase.APPROACH: Phase.DESCEND,
            Phase.DESCEND: Phase.CLOSE,
            Phase.TRANSFER: Phase.LOWER,
            Phase.LOWER: Phase.RELEASE,
            Phase.RELEASE: Phase.RETREAT,
            Phase.RETREAT: Phase.APPROACH,
            Phase.HOME: Phase.DONE,
        }[self.phase]

    def _grasp_offset(self, obs: ExpertObservation) -> float:
        """Horizontal distance (m) from the target cube's centre to the ee's axis."""
        return float(np.linalg.norm(obs.objects[self.target].position[:2] - obs.ee_pose[:2, 3]))

    def _holding(self, obs: ExpertObservation) -> bool:
        cube = obs.objects[self.target]
        lifted = cube.position[2] >= cube.size / 2.0 + self.config.lift_check
        # A grip off the cube's centre (a deliberate miss that caught an edge) holds it up to
        # about a cube's size from ee_link; a cube that high and that near is held.
        near = np.linalg.norm(cube.position - obs.ee_pose[:3, 3]) < 1.5 * cube.size
        return bool(lifted and near)

    def _enter(self, phase: Phase, obs: ExpertObservation) -> None:
        """Start `phase` at obs.time with a segment from the current target pose."""
        if phase is Phase.APPROACH:
            phase = self._choose_target(obs)
        elif phase is Phase.RELEASE and self._carrying:
            self._pending.remove(self.target)
            self.delivered.append(self.target)
            self._carrying = False
        self.phase = phase
        start = self._segment.at(obs.time) if self._segment else obs.ee_pose.copy()
        if phase is Phase.DONE:
            self._segment = _Segment(start, start, obs.time, 0.0)
            return
        goal, self._gripper, hold = self._goal(phase, obs, start)
        duration = hold if hold is not None else self._move_time(start, goal)
        self._segment = _Segment(start, goal, obs.time, duration)

    def _choose_target(self, obs: ExpertObservation) -> Phase:
        """Next cube to handle (by `pick_order`), or HOME when none is left."""
        if self.target in self._pending and self.attempts[self.target] >= self.config.max_attempts:
            logger.warning(
                "giving up on %s after %d attempts", self.target, self.attempts[self.target]
            )
            self._pending.remove(self.target)
            self.gave_up.append(self.target)
        if not self._pending:
            self.target = None
            return Phase.HOME
        if self.config.pick_order == "nearest":
            ee = obs.ee_pose[:3, 3]
            self._pending.sort(
                key=lambda n: float(np.linalg.norm(obs.objects[n].position[:2] - ee[:2]))
            )
        self.target = self._pending[0]
        self.attempts[self.target] += 1
        self._aim_offset = np.zeros(3)
        forced = self.target == self._forced_miss
        if self.attempts[self.target] == 1 and (self._rng.random() < self.config.miss_rate
                                                 or forced):
            position = obs.objects[self.target].position
            radial = position[:2] / max(float(np.linalg.norm(position[:2])), 1e-9)
            sign = 1.0 if self._rng.random() < 0.5 else -1.0
            self._aim_offset[:2] = sign * self.config.miss_offset * radial
            self.misses += 1
        return Phase.APPROACH

    def _goal(
        self, phase: Phase, obs: ExpertObservation, start: np.ndarray
    ) -> tuple[np.ndarray, float, float | None]:
        """Goal pose, gripper opening, and a fixed duration for hold phases (else None)."""
        cfg = self.config
        if phase in (Phase.CLOSE, Phase.RELEASE):
            if phase is Phase.CLOSE:
                return start.copy(), cfg.gripper_closed, cfg.close_time
            return start.copy(), cfg.gripper_open, cfg.open_time
        if phase is Phase.HOME:
            home = np.array(cfg.home_position)
            return top_down_pose(home, _natural_yaw(home)), cfg.gripper_open, None
        if phase in (Phase.APPROACH, Phase.DESCEND):
            cube = obs.objects[self.target]
            self._yaw = (grasp_yaw(cube) if cfg.grasp_yaw == "cube"
                         else _natural_yaw(cube.position))
            height = cfg.approach_height if phase is Phase.APPROACH else cfg.grasp_offset
            return (
                top_down_pose(cube.position + self._aim_offset + (0.0, 0.0, height), self._yaw),
                cfg.gripper_open,
                None,
            )
        if phase in (Phase.TRANSFER, Phase.LOWER):
            # Each cube gets its own spot on the bin floor, so none lands on another.
            height = cfg.lift_height if phase is Phase.TRANSFER else cfg.release_height
            drop = np.array([*self._slots[len(self.delivered) % len(self._slots)], height])
            pose = top_down_pose(drop, _natural_yaw(drop))
            # The cube, not the fingers' centre, goes over its spot.
            pose[:2, 3] -= (pose[:3, :3] @ self._held_offset)[:2]
            return pose, self._gripper, None
        # LIFT and RETREAT: straight up to carrying height, orientation kept.
        goal = start.copy()
        goal[2, 3] = cfg.lift_height
        return goal, self._gripper if phase is Phase.LIFT else cfg.gripper_open, None

    def _move_time(self, start: np.ndarray, goal: np.ndarray) -> float:
        cfg = self.config
        distance = float(np.linalg.norm(goal[:3, 3] - start[:3, 3]))
        angle = _rotation_angle(start[:3, :3], goal[:3, :3])
        return max(cfg.min_move_time, distance / cfg.linear_speed, angle / cfg.angular_speed)


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool  # every target rests inside the bin
    in_bin: dict[str, bool]  # every object of the world
    sim_time: float  # s
    wall_time: float  # s
    ik_failures: int  # control ticks whose IK did not converge (previous command held)
    gave_up: tuple[str, ...]
    misses: int  # deliberate misses (ExpertConfig.miss_rate)


def observe(world: SimWorld, kinematics: ArmKinematics) -> ExpertObservation:
    """What the expert sees: the ee pose by FK of the measured joints (as the ROS graph
    has it from joint_states) and the sim's true object poses."""
    q = world.joint_positions()  # (7,)
    return ExpertObservation(
        time=world.time,
        ee_pose=kinematics.fk(q[:-1]).copy(),
        gripper=float(q[-1]),
        objects={obj.name: obj for obj in world.object_poses()},
    )


def run_episode(
    world: SimWorld,
    kinematics: ArmKinematics,
    seed: int,
    config: ExpertConfig | None = None,
    control_period: float = 0.02,
    time_limit: float = 60.0,
    settle_time: float = 0.5,
    objects: Sequence[str] | None = None,
    on_command: Callable[[SimWorld, ExpertAction], None] | None = None,
    servos: ProfiledJoints | None = None,
) -> EpisodeResult:
    """Reset `world` with `seed` and let the expert put every cube (or those of `objects`)
    into the bin.

    At each control tick (`control_period`, 50 Hz as the graph runs) the expert's ee
    target goes through IK seeded from the measured joints, and the result becomes the
    joint setpoints; physics runs in between. `seed` also draws the expert's deliberate misses.
    `on_command(world, action)` sees each tick after its setpoints are set, before physics
    (an episode trace records there). With `servos` the joint targets go through the servos'
    velocity profiles, as on the graph's servo bus, instead of straight to the actuators.
    """
    t_wall = time.perf_counter()
    world.reset(seed)
    targets = list(objects) if objects is not None else world.object_names
    expert = PickPlaceExpert(config or ExpertConfig(), world.bin_center,
                             world.config.bin_inner_size, targets,
                             rng=np.random.default_rng(seed))
    substeps = max(1, round(control_period / world.timestep))
    command = world.joint_targets()  # (7,)
    if servos is not None:
        servos.reset(world.joint_positions())
    ik_failures = 0
    while world.time < time_limit:
        obs = observe(world, kinematics)
        action = expert.act(obs)
        if action.done:
            break
        solution = kinematics.ik(action.ee_pose, world.joint_positions()[:-1])
        if solution.success:
            command = np.append(solution.q, action.gripper)
        else:
            ik_failures += 1
            command = np.append(command[:-1], action.gripper)
        if servos is not None:
            servos.set_goals(command)
        else:
            world.set_joint_targets(command)
        if on_command is not None:
            on_command(world, action)
        if servos is not None:
            servos.drive(world, control_period)
        else:
            world.step(substeps)
    # Let the last drop come to rest before judging.
    world.step(max(1, round(settle_time / world.timestep)))
    in_bin = {name: world.object_in_bin(name) for name in world.object_names}
    return EpisodeResult(
        seed=seed,
        success=all(in_bin[name] for name in targets),
        in_bin=in_bin,
        sim_time=world.time,
        wall_time=time.perf_counter() - t_wall,
        ik_failures=ik_failures,
        gave_up=tuple(expert.gave_up),
        misses=expert.misses,
    )
