"""A ROS-free transform buffer: the part of tf2 armstack needs, for the pip-only way.

tf2_ros has no wheel, so nodes that look up transforms feed this buffer from their own
`tf` / `tf_static` subscriptions. Semantics follow tf2 where it matters:

- frames form a tree; each frame has one parent, set by the transforms that name it as child;
- static transforms hold at every time; dynamic ones are kept in a time-ordered cache per
  edge and interpolated between the two samples around the query time (linear in
  translation, slerp in rotation);
- `lookup(target, source, t)` gives the pose of `source` in `target` (so
  p_target = T @ p_source), composed through the tree via the common ancestor;
- t = 0 means "the latest time every dynamic edge of the chain has" (tf2's TimePointZero);
- a query outside an edge's cached interval raises `ExtrapolationError`, a missing frame or
  a disconnected pair `ConnectivityError`; both are `TransformLookupError`s and say which edge
  and which times.
"""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


class TransformLookupError(LookupError):
    """A transform cannot be given; the message names the frames and times involved."""


class ConnectivityError(TransformLookupError):
    """A frame is unknown, or the two frames are in different trees."""


class ExtrapolationError(TransformLookupError):
    """The query time is outside the cached interval of a dynamic edge."""


def _normalize_quat(q: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"rotation quaternion must be finite and non-zero, got {q.tolist()}")
    return q / norm


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (x, y, z, w) quaternions (rotation b first, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(x, y, z, w) unit quaternion -> (3, 3) rotation matrix."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions, s in [0, 1], along the short arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation; take the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        # Nearly parallel: sin(theta) ~ 0 makes the slerp weights ill-conditioned, and the
        # normalized lerp is within 1e-7 rad of it there.
        return _normalize_quat(q0 + s * (q1 - q0))
    theta = np.arccos(dot)
    w0 = np.sin((1.0 - s) * theta) / np.sin(theta)
    w1 = np.sin(s * theta) / np.sin(theta)
    return w0 * q0 + w1 * q1


@dataclass(frozen=True)
class Transform:
    """A rigid transform: p_parent = R(rotation) @ p_child + translation."""

    translation: np.ndarray  # (3,) metres
    rotation: np.ndarray  # (4,) unit quaternion x, y, z, w

    @classmethod
    def identity(cls) -> Transform:
        return cls(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))

    @classmethod
    def make(cls, translation, rotation_xyzw) -> Transform:
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(4)
        if not np.all(np.isfinite(t)):
            raise ValueError(f"translation must be finite, got {t.tolist()}")
        return cls(t, _normalize_quat(q))

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(self.rotation)
        T[:3, 3] = self.translation
        return T

    def __mul__(self, other: Transform) -> Transform:
        """self * other: apply `other` first (frames chain left to right, like matrices)."""
        rotation = quat_multiply(self.rotation, other.rotation)
        translation = quat_to_matrix(self.rotation) @ other.translation + self.translation
        return Transform(translation, _normalize_quat(rotation))

    def inverse(self) -> Transform:
        conj = self.rotation * np.array([-1.0, -1.0, -1.0, 1.0])
        return Transform(-(quat_to_matrix(conj) @ self.translation), conj)

    def interpolate(self, other: Transform, s: float) -> Transform:
        """The transform a fraction `s` of the way from self to other."""
        translation = self.translation + s * (other.translation - self.translation)
        return Transform(translation, _normalize_quat(slerp(self.rotation, other.rotation, s)))


class _Edge:
    """The transforms from one child frame to its parent: static, or a time-ordered cache."""

    def __init__(self, parent: str, static: bool) -> None:
        self.parent = parent
        self.static = static
        self.stamps: list[float] = []
        self.transforms: list[Transform] = []

    def insert(self, stamp: float, transform: Transform, cache_time: float) -> None:
        if self.static:
            self.stamps, self.transforms = [stamp], [transform]
            return
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.transforms[i] = transform  # a re-sent sample replaces the old one
        else:
            self.stamps.insert(i, stamp)
            self.transforms.insert(i, transform)
        # Keep only `cache_time` seconds behind the newest sample, as tf2's TimeCache does.
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time)
        if cut:
            del self.stamps[:cut], self.transforms[:cut]

    def newest(self) -> float:
        return self.stamps[-1]

    def at(self, t: float, child: str) -> Transform:
        if self.static:
            return self.transforms[0]
        if t < self.stamps[0] or t > self.stamps[-1]:
            when = "before the oldest" if t < self.stamps[0] else "after the newest"
            raise ExtrapolationError(
                f"transform {self.parent} -> {child} at t={t:.6f} is {when} cached sample "
                f"(cached [{self.stamps[0]:.6f}, {self.stamps[-1]:.6f}])"
            )
        i = bisect.bisect_left(self.stamps, t)
        if self.stamps[i] == t:
            return self.transforms[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        return self.transforms[i - 1].interpolate(self.transforms[i], (t - t0) / (t1 - t0))


def _strip(frame: str) -> str:
    # tf2 ignores a leading slash (ROS 1 style frame ids).
    return frame[1:] if frame.startswith("/") else frame


class TransformBuffer:
    """Transforms between frames of a tree over time. Thread-safe: one lock per buffer."""

    def __init__(self, cache_time_s: float = 10.0) -> None:
        if cache_time_s <= 0.0:
            raise ValueError(f"TransformBuffer.cache_time_s must be > 0, got {cache_time_s}")
        self.cache_time_s = cache_time_s
        self._edges: dict[str, _Edge] = {}  # child frame -> edge to its parent
        self._lock = threading.Lock()

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_s: float,
        translation,
        rotation_xyzw,
        static: bool = False,
    ) -> None:
        """Add the pose of `child` in `parent` at `stamp_s` (static: valid at every time)."""
        parent, child = _strip(parent), _strip(child)
        if not parent or not child or parent == child:
            raise ValueError(f"transform needs two distinct frame ids, got {parent!r} -> {child!r}")
        transform = Transform.make(translation, rotation_xyzw)
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if edge is not None:
                    logger.warning(
                        "frame %s: parent %s (%s) replaced by %s (%s)",
                        child,
                        edge.parent,
                        "static" if edge.static else "dynamic",
                        parent,
                        "static" if static else "dynamic",
                    )
                if self._would_cycle(parent, child):
                    raise ValueError(
                        f"transform {parent} -> {child} would close a loop in the tree"
                    )
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(float(stamp_s), transform, self.cache_time_s)

    def _would_cycle(self, parent: str, child: str) -> bool:
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                return True
            edge = self._edges.get(frame)
            frame = edge.parent if edge else None
        return False

    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def _path_to_root(self, frame: str) -> list[str]:
        path = [frame]
        while (edge := self._edges.get(path[-1])) is not None:
            path.append(edge.parent)
        return path

    def _chain(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from source up to the common ancestor, and from target up to it."""
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for frame in (target, source):
            if frame not in known:
                listed = ", ".join(sorted(known)) or "none"
                raise ConnectivityError(f"frame '{frame}' is unknown (known frames: {listed})")
        up_source, up_target = self._path_to_root(source), self._path_to_root(target)
        common = set(up_target)
        for i, frame in enumerate(up_source):
            if frame in common:
                return up_source[: i + 1], up_target[: up_target.index(frame) + 1]
        raise ConnectivityError(
            f"frames '{target}' and '{source}' are not connected (roots '{up_target[-1]}' and "
            f"'{up_source[-1]}')"
        )

    def _latest_common_time(self, chains: list[list[str]]) -> float:
        newest = [
            self._edges[f].newest()
            for chain in chains
            for f in chain[:-1]
            if not self._edges[f].static
        ]
        return min(newest) if newest else 0.0

    def _to_ancestor(self, chain: list[str], t: float) -> Transform:
        """Pose of chain[0] in chain[-1] at t (chain walks child -> parent)."""
        result = Transform.identity()
        for child in chain[:-1]:
            result = self._edges[child].at(t, child) * result
        return result

    def lookup(self, target: str, source: str, time_s: float = 0.0) -> Transform:
        """Pose of `source` in `target` at `time_s` (0 = latest common time)."""
        target, source = _strip(target), _strip(source)
        with self._lock:
            if target == source:
                if target not in self._edges and not any(
                    e.parent == target for e in self._edges.values()
                ):
                    raise ConnectivityError(f"frame '{target}' is unknown")
                return Transform.identity()
            up_source, up_target = self._chain(target, source)
            t = time_s if time_s != 0.0 else self._latest_common_time([up_source, up_target])
            source_in_common = self._to_ancestor(up_source, t)
            target_in_common = self._to_ancestor(up_target, t)
        return target_in_common.inverse() * source_in_common

    def lookup_matrix(self, target: str, source: str, time_s: float = 0.0) -> np.ndarray:
        """`lookup` as a (4, 4) homogeneous matrix."""
        return self.lookup(target, source, time_s).matrix()

    def can_transform(self, target: str, source: str, time_s: float = 0.0) -> bool:
        try:
            self.lookup(target, source, time_s)
        except TransformLookupError:
            return False
        return True
