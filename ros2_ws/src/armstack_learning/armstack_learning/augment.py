"""Training-time augmentation: move the cubes a sample's actions ignore; turn a reach about the
arm's base.

Fifty demonstrations show fifty layouts, and a policy can learn where to reach from the whole
layout instead of from the cube it is reaching for: act_pick's first reach moved by about as
much as a far cube's position did, and went to empty table when that cube sat at the edge of
the demonstrated layouts. A cube the demonstration handles only after a sample's action chunk
ends has no say in those actions, so moving it to another free spot on the table gives a sample
whose actions are still right, and a layout the demonstrations never showed.

`waiting_slots` finds those cubes from the recording alone: the gripper command says when each
cube is let go, and the cube that moved most between a pick's start and just after its release
is the one that pick handled. `relocate_slots` moves them.

Fifty demonstrations also show each reach only once: about 150 grasps for the whole table, and
a policy that interpolates between them closes a centimetre or more beside a cube it has not
seen there. The arm's first joint turns about base_link's z axis through its origin
(config/robot/arm.urdf), so a reach turned by an angle about that axis, its cubes and its
commanded poses with it and that joint's reading plus the angle, is the same reach done by the
same arm. The bin does not turn, so only samples whose action chunk carries nothing to it
(`rotation_safe`) are turned, and only the cubes still where the episode first saw them
(`untouched_slots`); the cubes already in the bin stay put. `rotate_about_base` turns one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from armstack_common.robot_names import ARM_JOINTS
from armstack_common.tf_buffer import quat_multiply

from armstack_learning.features import canonicalize_quaternions

# A pick "handled" a cube if that cube moved at least this far (m) by just after the release:
# a missed grasp moves nothing, and then the pick says nothing about which cube waits.
MIN_HANDLED_MOVE_M = 0.03
# The joint that turns about base_link's z axis (tests/test_augment checks it on the URDF).
BASE_JOINT = ARM_JOINTS[0]


@dataclass(frozen=True)
class RelocationConfig:
    """Which samples move their waiting cubes, and where to."""

    probability: float = 0.0  # of a sample having its waiting cubes moved (0: off)
    min_separation: float = 0.06  # m between a moved cube and every other cube (centres)
    settle_frames: int = 25  # frames after a release at which the released cube is looked up

    @property
    def enabled(self) -> bool:
        return self.probability > 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("RelocationConfig.probability must be in [0, 1], got "
                             f"{self.probability!r}")
        if not self.min_separation > 0.0:
            raise ValueError("RelocationConfig.min_separation must be > 0 m, got "
                             f"{self.min_separation!r}")
        if not isinstance(self.settle_frames, int) or self.settle_frames < 1:
            raise ValueError("RelocationConfig.settle_frames must be an int >= 1, got "
                             f"{self.settle_frames!r}")


def _xy_present(fields: Sequence[str]) -> tuple[int, int, int]:
    missing = [f for f in ("x", "y", "present") if f not in fields]
    if missing:
        raise ValueError(f"moving objects needs the slot fields x, y and present; {missing} "
                         f"missing from {tuple(fields)}")
    return fields.index("x"), fields.index("y"), fields.index("present")


def gripper_closed(gripper: np.ndarray) -> np.ndarray:
    """(T,) bool: the commanded gripper below half of its recorded range, i.e. closed."""
    return gripper < 0.5 * (gripper.min() + gripper.max())


def _episode_starts(episode: np.ndarray) -> np.ndarray:
    """First frame of each episode (an episode's frames are contiguous)."""
    return np.r_[0, np.flatnonzero(np.diff(episode)) + 1]


def _first_seen(slots: np.ndarray, ix: int, iy: int, ip: int) -> np.ndarray:
    """(C, 2) x, y of each slot in the first of `slots` (T, C, F) frames that sees it; nan if
    none does."""
    seen = slots[:, :, ip] > 0.5  # (T, C)
    first = np.argmax(seen, axis=0)
    xy = slots[first, np.arange(slots.shape[1])][:, [ix, iy]].astype(np.float64)
    xy[~seen.any(axis=0)] = np.nan
    return xy


def _picks(env: np.ndarray, gripper: np.ndarray, fields: Sequence[str], settle: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """One episode: (P,) release frames and (P,) the slot each pick handled (-1: none).

    A pick runs from the frame after the previous release to its own release; each cube is
    looked up where it was first seen in the pick and first seen from `settle` frames after
    the release on (the arm can hide it at either moment)."""
    ix, iy, ip = _xy_present(fields)
    slots_t = env.reshape(env.shape[0], -1, len(fields))  # (T, C, F)
    closed = gripper_closed(gripper)
    releases = np.flatnonzero(closed[:-1] & ~closed[1:]) + 1
    handled = np.full(len(releases), -1, np.int64)
    start = 0
    for j, release in enumerate(releases):
        before = _first_seen(slots_t[start:release], ix, iy, ip)
        after = _first_seen(slots_t[min(int(release) + settle, len(env) - 1):], ix, iy, ip)
        move = np.nan_to_num(np.hypot(*(after - before).T), nan=0.0)
        if move.max(initial=0.0) >= MIN_HANDLED_MOVE_M:
            handled[j] = int(np.argmax(move))
        start = int(release) + 1
    return releases, handled


def waiting_slots(env: np.ndarray, gripper: np.ndarray, episode: np.ndarray,
                  fields: Sequence[str], horizon: int, settle: int = 25) -> np.ndarray:
    """(N, C) bool: slot c waits at frame t if the demonstration handles that cube only in a
    pick that starts after frame t + horizon - 1 (the end of t's action chunk, clipped to its
    episode) and in none before.

    env (N, C*F) environment states, gripper (N,) the commanded gripper of each frame,
    episode (N,) episode index; an episode's frames are contiguous and in time order."""
    n, f = env.shape[0], len(fields)
    out = np.zeros((n, env.shape[1] // f), bool)
    starts = _episode_starts(episode)
    for a, b in zip(starts, np.r_[starts[1:], n], strict=True):
        releases, slots = _picks(env[a:b], gripper[a:b], fields, settle)
        last = np.minimum(np.arange(b - a) + horizon - 1, b - a - 1)
        pick_of_last = np.searchsorted(releases, last, side="left")  # the pick frame `last` is in
        for j, slot in enumerate(slots):
            if slot < 0:
                continue
            earlier = slots[:j]
            if slot in earlier:
                continue  # picked again after a drop: it has been handled before
            out[a:b, slot] |= pick_of_last < j
    return out


def relocate_slots(env: np.ndarray, slots: Sequence[int], fields: Sequence[str],
                   region: tuple[float, float, float, float], min_separation: float,
                   uniform: np.ndarray) -> np.ndarray:
    """A copy of `env` (n_obs, C*F) with each of `slots` that is present in the last row moved
    to a new x, y in `region` (x_min, x_max, y_min, y_max), at least `min_separation` from
    every other present cube, the same in every row where it is present; z and present stay.

    uniform (T, 2): numbers in [0, 1), tried in order as candidates (T per the whole call); a
    slot left without an acceptable candidate stays where it was."""
    ix, iy, ip = _xy_present(fields)
    f = len(fields)
    out = np.array(env, dtype=np.float32, copy=True)
    rows = out.reshape(out.shape[0], -1, f)  # view: (n_obs, C, F)
    x0, x1, y0, y1 = region
    candidates = np.column_stack([x0 + uniform[:, 0] * (x1 - x0), y0 + uniform[:, 1] * (y1 - y0)])
    tried = 0
    for slot in slots:
        last = rows[-1]
        if last[slot, ip] <= 0.5:
            continue
        others = [c for c in range(last.shape[0]) if c != slot and last[c, ip] > 0.5]
        while tried < len(candidates):
            xy = candidates[tried]
            tried += 1
            if all(np.hypot(*(xy - last[c, [ix, iy]])) >= min_separation for c in others):
                present = rows[:, slot, ip] > 0.5
                rows[present, slot, ix], rows[present, slot, iy] = xy[0], xy[1]
                break
    return out


def table_region(env: np.ndarray, episode: np.ndarray, fields: Sequence[str]
                 ) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of every cube seen in the first frame of an episode: where
    the demonstrations' layouts put cubes."""
    ix, iy, ip = _xy_present(fields)
    slots = env[_episode_starts(episode)].reshape(-1, len(fields))
    seen = slots[slots[:, ip] > 0.5]
    if not len(seen):
        raise ValueError("no cube is seen in any episode's first frame: nowhere to move cubes to")
    return (float(seen[:, ix].min()), float(seen[:, ix].max()),
            float(seen[:, iy].min()), float(seen[:, iy].max()))


@dataclass(frozen=True)
class BaseRotationConfig:
    """Which samples turn their reach about the arm's base, and by how much."""

    probability: float = 0.0  # of a sample that may be turned being turned (0: off)
    max_angle_deg: float = 10.0  # the angle is uniform in [-max, max]
    # m of commanded ee travel in x, y with the gripper closed after which a frame carries a
    # cube to the bin (a grasp closes in place; a carry moves)
    carry_tolerance: float = 0.02

    @property
    def enabled(self) -> bool:
        return self.probability > 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("BaseRotationConfig.probability must be in [0, 1], got "
                             f"{self.probability!r}")
        if not 0.0 < self.max_angle_deg <= 45.0:
            raise ValueError("BaseRotationConfig.max_angle_deg must be in (0, 45], got "
                             f"{self.max_angle_deg!r}")
        if not self.carry_tolerance > 0.0:
            raise ValueError("BaseRotationConfig.carry_tolerance must be > 0 m, got "
                             f"{self.carry_tolerance!r}")


def carrying_frames(xy: np.ndarray, gripper: np.ndarray, episode: np.ndarray,
                    tolerance: float) -> np.ndarray:
    """(N,) bool: the commanded gripper is closed and the commanded ee position `xy` (N, 2) has
    moved more than `tolerance` (m) from where it closed; gripper (N,) the commanded gripper,
    episode (N,) episode index (an episode's frames are contiguous and in time order)."""
    closed = gripper_closed(gripper)
    frames = np.arange(len(closed))
    starts = np.zeros(len(closed), bool)
    starts[_episode_starts(episode)] = True
    closes = closed & (starts | ~np.r_[False, closed[:-1]])  # first frame of each closed run
    since = np.maximum.accumulate(np.where(closes, frames, 0))  # where the current run began
    travel = np.hypot(*(xy - xy[since]).T)
    return closed & (travel > tolerance)


def rotation_safe(carrying: np.ndarray, episode: np.ndarray, horizon: int) -> np.ndarray:
    """(N,) bool: no frame from t to t + horizon - 1 (clipped to t's episode) is `carrying`."""
    n = len(carrying)
    safe = np.zeros(n, bool)
    starts = _episode_starts(episode)
    for a, b in zip(starts, np.r_[starts[1:], n], strict=True):
        # next carrying frame at or after each frame (b - a: none)
        marks = np.where(carrying[a:b], np.arange(b - a), b - a)
        upcoming = np.minimum.accumulate(marks[::-1])[::-1]
        safe[a:b] = upcoming > np.minimum(np.arange(b - a) + horizon - 1, b - a - 1)
    return safe


def untouched_slots(env: np.ndarray, episode: np.ndarray, fields: Sequence[str],
                    tolerance: float = MIN_HANDLED_MOVE_M) -> np.ndarray:
    """(N, C) bool: slot c is present at frame t within `tolerance` (m) of where its episode
    first saw it, i.e. not yet picked."""
    ix, iy, ip = _xy_present(fields)
    slots = env.reshape(env.shape[0], -1, len(fields))  # (N, C, F)
    out = np.zeros(slots.shape[:2], bool)
    starts = _episode_starts(episode)
    for a, b in zip(starts, np.r_[starts[1:], env.shape[0]], strict=True):
        first = _first_seen(slots[a:b], ix, iy, ip)  # (C, 2), nan if never seen
        move = np.hypot(slots[a:b, :, ix] - first[:, 0], slots[a:b, :, iy] - first[:, 1])
        out[a:b] = (slots[a:b, :, ip] > 0.5) & (np.nan_to_num(move, nan=np.inf) <= tolerance)
    return out


def _turn_xy(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return c * x - s * y, s * x + c * y


def rotate_about_base(angle: float, state: np.ndarray, env: np.ndarray | None,
                      actions: np.ndarray, *, base_joint: int, slots: Sequence[int],
                      fields: Sequence[str], position: tuple[int, int],
                      quaternion: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None,
                                                          np.ndarray]:
    """Copies of one sample turned by `angle` (rad) about base_link's z axis.

    state (n_obs, D_s): column `base_joint` plus the angle; env (n_obs, C*F) or None: the x, y of
    each of `slots` turned in the rows where it is present; actions (k, D_a) ee poses in
    base_link: columns `position` (x, y) turned, the quaternion (x, y, z, w at `quaternion`)
    pre-multiplied by the turn and kept at qw >= 0."""
    state = np.array(state, dtype=np.float32, copy=True)
    state[:, base_joint] += angle
    if env is not None:
        ix, iy, ip = _xy_present(fields)
        env = np.array(env, dtype=np.float32, copy=True)
        rows = env.reshape(env.shape[0], -1, len(fields))  # view: (n_obs, C, F)
        for slot in slots:
            present = rows[:, slot, ip] > 0.5
            rows[present, slot, ix], rows[present, slot, iy] = _turn_xy(
                rows[present, slot, ix], rows[present, slot, iy], angle)
    actions = np.array(actions, dtype=np.float32, copy=True)
    px, py = position
    actions[:, px], actions[:, py] = _turn_xy(actions[:, px], actions[:, py], angle)
    turn = np.array([0.0, 0.0, math.sin(angle / 2.0), math.cos(angle / 2.0)])  # x y z w
    q = actions[:, list(quaternion)].astype(np.float64)  # (k, 4)
    actions[:, list(quaternion)] = quat_multiply(turn, q.T).T  # q.T: one product per row
    return state, env, canonicalize_quaternions(actions, quaternion)
