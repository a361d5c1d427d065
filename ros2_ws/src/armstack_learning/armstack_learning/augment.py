"""Training-time augmentation of the object slots: move the cubes a sample's actions ignore.

Fifty demonstrations show fifty layouts, and a policy can learn where to reach from the whole
layout instead of from the cube it is reaching for: act_pick's first reach moved by about as
much as a far cube's position did, and went to empty table when that cube sat at the edge of
the demonstrated layouts. A cube the demonstration handles only after a sample's action chunk
ends has no say in those actions, so moving it to another free spot on the table gives a sample
whose actions are still right, and a layout the demonstrations never showed.

`waiting_slots` finds those cubes from the recording alone: the gripper command says when each
cube is let go, and the cube that moved most between a pick's start and just after its release
is the one that pick handled. `relocate_slots` moves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A pick "handled" a cube if that cube moved at least this far (m) by just after the release:
# a missed grasp moves nothing, and then the pick says nothing about which cube waits.
MIN_HANDLED_MOVE_M = 0.03


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
