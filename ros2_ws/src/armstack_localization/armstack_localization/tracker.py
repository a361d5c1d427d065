"""A small multi-object tracker for localized objects: stable ids across frames.

Each frame, objects are matched to tracks by a minimum-total-distance assignment (Hungarian
method) on 3D distance, with a gate: pairs farther apart than the gate, or of different class,
never match. A track is born tentative, confirmed after `min_hits` consecutive matched frames,
and deleted after `max_misses` consecutive frames without a match. Positions are smoothed
exponentially; there is no motion model, since objects on a table move only when grasped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns of a finite cost matrix (n, m).

    Returns (rows, cols) index arrays of the min(n, m) assigned pairs, sorted by row. Shortest
    augmenting paths with potentials (Hungarian method, O(n^2 m)); small matrices only, which
    is all a table of objects gives.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost  # (n, m) with n <= m
    n, m = c.shape
    u = np.zeros(n + 1)  # row potentials (1-based, index 0 unused)
    v = np.zeros(m + 1)  # column potentials; column 0 is the virtual start
    match = np.zeros(m + 1, np.int64)  # match[j] = row assigned to column j (1-based, 0 = none)
    for row in range(1, n + 1):
        match[0] = row
        j0 = 0
        dist = np.full(m + 1, np.inf)
        prev = np.zeros(m + 1, np.int64)
        used = np.zeros(m + 1, bool)
        while match[j0] != 0:
            used[j0] = True
            i0 = match[j0]
            # Reduced costs from row i0 to every unused column, vectorized over columns.
            reduced = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < dist[1:])
            dist[1:][better] = reduced[better]
            prev[1:][better] = j0
            candidates = np.where(free, dist[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            dist[1:][free] -= delta
            j0 = j1
        while j0 != 0:  # flip the augmenting path
            j1 = prev[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.nonzero(match[1:])[0]
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


@dataclass(frozen=True)
class TrackerConfig:
    # Largest distance (m) between a track and an object for them to be the same object.
    gate_m: float = 0.05
    # Consecutive matched frames before a track is confirmed (1 = at once).
    min_hits: int = 3
    # Consecutive unmatched frames after which a track is deleted.
    max_misses: int = 5
    # Weight of the new measurement in the position update (1 = no smoothing).
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.gate_m <= 0.0:
            raise ValueError(f"gate_m must be > 0, got {self.gate_m}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_misses < 1:
            raise ValueError(f"max_misses must be >= 1, got {self.max_misses}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")


@dataclass
class Track:
    track_id: int
    class_id: int | str
    position: np.ndarray  # (3,) smoothed, metres
    score: float  # score of the last matched object
    hits: int = 1  # consecutive matched frames
    misses: int = 0  # consecutive unmatched frames
    confirmed: bool = False


class Tracker:
    """Keeps tracks across frames; `update` once per frame with that frame's objects."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self._next_id = 1

    def _cost(
        self, positions: np.ndarray, class_ids: list[int | str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(T, N) assignment costs and the (T, N) mask of pairs that may not match."""
        track_pos = np.array([t.position for t in self.tracks]).reshape(-1, 3)
        dist = np.linalg.norm(track_pos[:, None, :] - positions[None, :, :], axis=2)  # (T, N)
        same_class = np.array([[t.class_id == c for c in class_ids] for t in self.tracks], bool)
        forbidden = ~same_class.reshape(dist.shape) | (dist > self.config.gate_m)
        # Any one forbidden pair costs more than every allowed pair together, so the assignment
        # never trades an allowed match for a forbidden one.
        big = self.config.gate_m * (min(dist.shape) + 1)
        return np.where(forbidden, big, dist), forbidden

    def update(
        self, positions: np.ndarray, class_ids: list[int | str], scores: list[float]
    ) -> list[int]:
        """Match this frame's objects (positions (N, 3)) to tracks; returns a track id per object.

        Unmatched objects start new (tentative) tracks; tracks unmatched for more than
        max_misses frames are removed.
        """
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        cfg = self.config
        ids = [0] * len(positions)
        matched_tracks: set[int] = set()
        if self.tracks and len(positions):
            cost, forbidden = self._cost(positions, list(class_ids))
            for ti, oi in zip(*linear_assignment(cost), strict=True):
                if forbidden[ti, oi]:
                    continue
                track = self.tracks[ti]
                track.position = track.position + cfg.smoothing * (positions[oi] - track.position)
                track.score = float(scores[oi])
                track.hits += 1
                track.misses = 0
                track.confirmed = track.confirmed or track.hits >= cfg.min_hits
                matched_tracks.add(ti)
                ids[oi] = track.track_id
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.misses += 1
                track.hits = 0
        self.tracks = [t for t in self.tracks if t.misses <= cfg.max_misses]
        for oi, track_id in enumerate(ids):
            if track_id == 0:
                ids[oi] = self._birth(positions[oi], class_ids[oi], float(scores[oi]))
        return ids

    def _birth(self, position: np.ndarray, class_id: int | str, score: float) -> int:
        track = Track(self._next_id, class_id, position.copy(), score)
        track.confirmed = self.config.min_hits <= 1
        self.tracks.append(track)
        self._next_id += 1
        return track.track_id

    def confirmed_tracks(self) -> list[Track]:
        """Confirmed tracks, including ones coasting through a few missed frames."""
        return [t for t in self.tracks if t.confirmed]
