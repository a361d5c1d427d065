"""What happened in an in-process episode, step by step, and the grasps in it (no ROS).

`EpisodeTrace` keeps, per control step, the true end-effector position, the gripper opening the
policy commanded and every cube's true position; it saves to and loads from an .npz file.
`find_grasps` reads a trace the way one reads a failed episode: each time the policy closed
the gripper, which cube was nearest and how far off in the horizontal plane, which cube (if
any) came up with the gripper, and where that cube left the gripper and came to rest (in the
bin or not, given the bin's test), and which cubes it pushed without lifting them. So a
failure can be told apart as a reach that went elsewhere, a grasp that closed beside its cube
(and perhaps shoved it or a neighbour away), a cube dropped on the way, or one let go beside
the bin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from armstack_sim.world import SimWorld


@dataclass(frozen=True)
class GraspRules:
    """When a step counts as the gripper closing and a cube as lifted."""

    closed_below: float = 0.017  # m: a commanded opening below this is a close (open 0.034)
    lift_height: float = 0.03  # m above its height at the close: the cube came up
    lift_window: float = 3.0  # s after the close to look for that
    carried_within: float = 0.05  # m from the ee while lifted: in the gripper, not knocked up
    settle: float = 1.0  # s after a lifted cube left the gripper: where it came to rest
    # m a cube the close did not lift moved in the horizontal plane within lift_window: pushed
    pushed_over: float = 0.01

    def __post_init__(self) -> None:
        for name in ("closed_below", "lift_height", "lift_window", "carried_within", "settle",
                     "pushed_over"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"GraspRules.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Release:
    """Where a lifted cube left the gripper, and where it then came to rest."""

    time: float  # s: the first step the cube was farther than carried_within from the ee
    position: tuple[float, float, float]  # the cube's centre then, base_link, m
    rest: tuple[float, float, float]  # its centre `settle` s later (or at the trace's end)
    in_bin: bool | None  # whether `rest` is in the bin (None: no bin test was given)

    def describe(self) -> str:
        where = {True: ", in the bin", False: ", outside the bin", None: ""}[self.in_bin]
        return (f"let go at t {self.time:5.2f} s, {self.position[2] * 100:.0f} cm up over "
                f"({self.position[0]:.3f}, {self.position[1]:.3f}); came to rest at "
                f"({self.rest[0]:.3f}, {self.rest[1]:.3f}){where}")


@dataclass(frozen=True)
class Push:
    """A cube a close moved without lifting it."""

    cube: str
    moved: float  # m, horizontal, from the close to the end of the lift window
    to: tuple[float, float, float]  # its centre then, base_link, m


@dataclass(frozen=True)
class Grasp:
    time: float  # s into the episode when the close was commanded
    ee: tuple[float, float, float]  # ee_link position then, base_link, m
    nearest: str  # cube whose centre was nearest the ee in the horizontal plane
    cube: tuple[float, float, float]  # that cube's centre then, base_link, m
    offset: float  # m, that horizontal distance
    lifted: str | None  # the cube that came up with the gripper, if any
    release: Release | None = None  # None: nothing lifted, or still held when the trace ends
    pushed: tuple[Push, ...] = ()

    def describe(self) -> str:
        if not self.lifted:
            outcome = "lifted nothing"
        elif self.release is None:
            outcome = f"lifted {self.lifted}, still held at the end"
        else:
            outcome = f"lifted {self.lifted}, {self.release.describe()}"
        for push in self.pushed:
            outcome += (f"; pushed {push.cube} {push.moved * 100:.1f} cm to ({push.to[0]:.3f}, "
                        f"{push.to[1]:.3f})")
        return (f"t {self.time:5.2f} s: closed at ({self.ee[0]:.3f}, {self.ee[1]:.3f}, "
                f"{self.ee[2]:.3f}), {self.offset * 100:.1f} cm from {self.nearest}; {outcome}")


class EpisodeTrace:
    """Per-step record of one episode; `add` once per control step."""

    def __init__(self, object_names: tuple[str, ...]) -> None:
        self.object_names = tuple(object_names)
        self._rows: list[np.ndarray] = []

    def add(self, time: float, ee_position: np.ndarray, gripper_command: float,
            object_positions: np.ndarray) -> None:
        """`gripper_command`: the opening the policy asked for (nan while it asked nothing);
        `object_positions`: (N, 3) in `object_names` order."""
        self._rows.append(np.concatenate(([time], ee_position, [gripper_command],
                                          np.asarray(object_positions).ravel())))

    def add_world(self, time: float, world: SimWorld, gripper_command: float) -> None:
        """One step from the simulator's true state: its ee_link position and each of
        `object_names`' positions (by name, so the columns follow this trace's order)."""
        self.add(time, world.ee_pose()[:3, 3], gripper_command,
                 np.array([world.object_pose(name).position for name in self.object_names]))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def table(self) -> np.ndarray:
        """(T, 5 + 3N): time, ee x y z, gripper command, then each cube's x y z."""
        return np.array(self._rows).reshape(len(self._rows), 5 + 3 * len(self.object_names))

    def save(self, path: Path | str) -> None:
        np.savez_compressed(path, table=self.table, object_names=np.array(self.object_names))

    @classmethod
    def load(cls, path: Path | str) -> EpisodeTrace:
        with np.load(path) as data:
            trace = cls(tuple(str(n) for n in data["object_names"]))
            trace._rows = list(data["table"])
        return trace


def find_grasps(trace: EpisodeTrace, rules: GraspRules = GraspRules(),
                in_bin: Callable[[np.ndarray], bool] | None = None) -> list[Grasp]:
    """Every close the policy commanded, in order (see the module doc); `in_bin` (a cube
    centre -> inside the bin, e.g. SimConfig.in_bin) says whether a released cube ended there."""
    table = trace.table
    if not len(table):
        return []
    t, ee, command = table[:, 0], table[:, 1:4], table[:, 4]
    cubes = table[:, 5:].reshape(len(table), len(trace.object_names), 3)  # (T, N, 3)
    closed = command < rules.closed_below  # nan (no command) is not a close
    starts = np.flatnonzero(closed & ~np.concatenate(([False], closed[:-1])))
    grasps = []
    for k in starts:
        horizontal = np.linalg.norm(cubes[k, :, :2] - ee[k, :2], axis=1)  # (N,)
        nearest = int(np.argmin(horizontal))
        window = np.flatnonzero((t >= t[k]) & (t <= t[k] + rules.lift_window))
        lifted, release = None, None
        for n, name in enumerate(trace.object_names):
            up = cubes[window, n, 2] >= cubes[k, n, 2] + rules.lift_height
            held = np.linalg.norm(cubes[window, n] - ee[window], axis=1) <= rules.carried_within
            if np.any(up & held):
                lifted = name
                release = _release(t, ee, cubes[:, n], window[np.argmax(up & held)], rules,
                                   in_bin)
                break
        end = window[-1]
        moved = np.linalg.norm(cubes[end, :, :2] - cubes[k, :, :2], axis=1)  # (N,)
        # A cube in the bin, or still falling into it, is jostled or lands; it is not pushed.
        pushed = tuple(Push(cube=name, moved=float(moved[n]),
                            to=tuple(float(v) for v in cubes[end, n]))
                       for n, name in enumerate(trace.object_names)
                       if name != lifted and moved[n] > rules.pushed_over
                       and (in_bin is None or not (in_bin(cubes[k, n]) or in_bin(cubes[end, n]))))
        grasps.append(Grasp(time=float(t[k]), ee=tuple(float(v) for v in ee[k]),
                            nearest=trace.object_names[nearest],
                            cube=tuple(float(v) for v in cubes[k, nearest]),
                            offset=float(horizontal[nearest]), lifted=lifted, release=release,
                            pushed=pushed))
    return grasps


def _release(t: np.ndarray, ee: np.ndarray, cube: np.ndarray, lifted_at: int,
             rules: GraspRules, in_bin: Callable[[np.ndarray], bool] | None) -> Release | None:
    """Where the cube (T, 3), carried from step `lifted_at`, left the gripper; None if it
    never did."""
    away = np.linalg.norm(cube[lifted_at:] - ee[lifted_at:], axis=1) > rules.carried_within
    if not np.any(away):
        return None
    j = lifted_at + int(np.argmax(away))
    rest = int(np.searchsorted(t, t[j] + rules.settle, side="right")) - 1
    return Release(time=float(t[j]), position=tuple(float(v) for v in cube[j]),
                   rest=tuple(float(v) for v in cube[rest]),
                   in_bin=None if in_bin is None else bool(in_bin(cube[rest])))


@dataclass(frozen=True)
class GraspBias:
    """How grasps miss their cubes, over many: is the miss pulled towards the layouts' centre?"""

    grasps: int  # closes within `aimed_within` of a cube, the ones counted
    lifted: int
    offset_median: float  # m, horizontal, ee to the nearest cube centre
    offset_p90: float
    # Least squares over the grasps: miss (ee - cube, x and y) = slope * (cube - centre) + bias.
    # A negative slope is a miss towards the centre, growing with the cube's distance from it.
    slope: tuple[float, float]  # x, y
    bias: tuple[float, float]  # m


def grasp_bias(grasps: list[Grasp], centre: tuple[float, float],
               aimed_within: float = 0.06) -> GraspBias:
    """Summary of `grasps` (from find_grasps over any number of episodes); closes farther than
    `aimed_within` (m) from every cube were aimed at none and are left out."""
    aimed = [g for g in grasps if g.offset <= aimed_within]
    if len(aimed) < 3:
        raise ValueError(f"grasp_bias needs at least 3 grasps within {aimed_within} m of a cube, "
                         f"got {len(aimed)}")
    cube = np.array([g.cube[:2] for g in aimed])  # (G, 2)
    miss = np.array([g.ee[:2] for g in aimed]) - cube  # (G, 2)
    spread = cube - np.asarray(centre)
    slope, bias = [], []
    for axis in range(2):
        design = np.column_stack([spread[:, axis], np.ones(len(aimed))])
        (a, b), *_ = np.linalg.lstsq(design, miss[:, axis], rcond=None)
        slope.append(float(a))
        bias.append(float(b))
    offsets = np.array([g.offset for g in aimed])
    return GraspBias(grasps=len(aimed), lifted=sum(g.lifted is not None for g in aimed),
                     offset_median=float(np.median(offsets)),
                     offset_p90=float(np.percentile(offsets, 90)),
                     slope=(slope[0], slope[1]), bias=(bias[0], bias[1]))
