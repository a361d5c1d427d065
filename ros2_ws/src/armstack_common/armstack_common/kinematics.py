"""Forward kinematics, Jacobian and inverse kinematics of the arm, from its URDF.

All geometry comes from the one robot description (config/robot/arm.urdf) through
pinocchio; nothing here knows link lengths. The IK works on the joints that move the
end-effector frame (the chain from the root to `ee_link`); other joints (the gripper
fingers, including the mimic finger) are held fixed, so the same code serves a 5- or
6-DOF arm.

IK method: damped least squares (Levenberg-Marquardt with error-dependent damping as
in Sugihara, "Solvability-unconcerned inverse kinematics by the Levenberg-Marquardt
method", IEEE T-RO 2011), with
- joint limits: full-turn revolute joints wrap, others are clipped after every step,
  and a joint resting on a limit that the descent pushes against is left out of the
  step (projected-gradient active set);
- a posture term pulling towards the seed, acting only in the null space of the
  weighted task, so it never biases a fully constrained solution;
- starts: the seed (the current state) and the nearest entries of a small table of
  sampled configurations, ranked by pose distance to the target plus distance to the
  seed; when the seed is near the target (tracking) it ranks first. Stalled attempts
  restart from the next start, then from random configurations, as TRAC-IK does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

logger = logging.getLogger(__name__)

# Singular values of the weighted task Jacobian below this (relative) are zero: the
# directions they span are free for the posture term.
_NULLSPACE_TOL = 1e-9
# Start-table pose distance: squared metres plus this times the squared Frobenius
# distance of the rotations (0.05 m^2 per unit: a 90 deg error weighs like ~0.3 m).
_TABLE_ROTATION_SCALE = 0.05


@dataclass(frozen=True)
class IKConfig:
    """Settings of the IK solver. Tolerances are on the unweighted errors."""

    # Task weights: position (isotropic) and orientation about the ee_link x, y, z
    # axes. A zero orientation weight frees that axis (e.g. (0, 1, 1) leaves the roll
    # about the approach axis to the posture term; (0, 0, 0) is position-only).
    position_weight: float = 1.0
    orientation_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    position_tolerance: float = 1e-4  # m
    orientation_tolerance: float = 1e-3  # rad, over the weighted axes only
    max_iterations: int = 60  # per attempt
    max_restarts: int = 30  # attempts after the first one
    # Floor of the LM damping (Sugihara's w_N): bounds steps near singularities.
    damping: float = 1e-6
    # Weight of the squared weighted error in the damping (Sugihara uses 1). Smaller
    # takes bolder Gauss-Newton steps far from the goal; max_step bounds them.
    error_damping: float = 0.02
    max_step: float = 0.8  # rad (or m), largest joint step per iteration
    posture_gain: float = 0.5  # fraction of the null-space offset to the seed removed per step
    # An attempt whose cost has not dropped to a quarter over this many iterations
    # is stuck: restarting beats grinding in a local minimum.
    stall_iterations: int = 8
    start_table_size: int = 2048  # sampled configurations for starts; 0: seed + random only
    start_candidates: int = 6  # table entries tried before random restarts
    # Ranking of starts: pose distance (m^2) + seed_preference * |q - seed|^2 (rad^2);
    # 0.001 weighs a 1 rad offset from the seed like a 3 cm pose offset.
    seed_preference: float = 0.001
    random_seed: int = 0  # generator of the start table and random restarts

    def __post_init__(self) -> None:
        if not self.position_weight >= 0.0:
            raise ValueError(f"IKConfig.position_weight must be >= 0, got {self.position_weight}")
        weights = self.orientation_weights
        if len(weights) != 3 or any(not w >= 0.0 for w in weights):
            raise ValueError(f"IKConfig.orientation_weights must be 3 values >= 0, got {weights}")
        if self.position_weight == 0.0 and not any(weights):
            raise ValueError("IKConfig: position_weight and orientation_weights are all zero")
        for name in ("position_tolerance", "orientation_tolerance", "max_step"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"IKConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("damping", "error_damping", "seed_preference"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"IKConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.posture_gain <= 1.0:
            raise ValueError(f"IKConfig.posture_gain must be in [0, 1], got {self.posture_gain}")
        for name in ("max_iterations", "stall_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"IKConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_restarts", "start_table_size", "start_candidates"):
            if getattr(self, name) < 0:
                raise ValueError(f"IKConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class IKResult:
    """Outcome of one IK solve. `q` is the best configuration found, within limits."""

    q: np.ndarray  # (n,)
    success: bool
    iterations: int  # over all attempts
    restarts: int  # attempts after the first
    position_error: float  # m
    orientation_error: float  # rad, over the weighted axes


@dataclass
class _Attempt:
    q: np.ndarray  # (n,)
    cost: float = math.inf
    pos_err: float = math.inf
    rot_err: float = math.inf
    iterations: int = 0
    converged: bool = False


class ArmKinematics:
    """Kinematics of the arm chain that carries `ee_frame`, loaded from a URDF.

    Not thread-safe: each instance owns one pinocchio Data workspace.
    """

    def __init__(
        self,
        urdf_path: str | Path,
        config: IKConfig | None = None,
        ee_frame: str = "ee_link",
    ) -> None:
        self.config = config or IKConfig()
        full = pin.buildModelFromUrdf(str(urdf_path))
        if not full.existFrame(ee_frame):
            raise ValueError(f"URDF {urdf_path} has no frame named {ee_frame!r}")
        self._full_model = full
        chain = set(full.supports[full.frames[full.getFrameId(ee_frame)].parentJoint])
        locked = [j for j in range(1, full.njoints) if j not in chain]
        self.model = pin.buildReducedModel(full, locked, pin.neutral(full))
        if self.model.nq != self.model.nv:
            raise ValueError(f"{urdf_path}: the arm chain has joints with nq != nv (continuous?)")
        self.data = self.model.createData()
        self.ee_frame = ee_frame
        self._frame_id = self.model.getFrameId(ee_frame)
        self.joint_names: tuple[str, ...] = tuple(self.model.names[1:])
        self.lower = self.model.lowerPositionLimit.copy()  # (n,)
        self.upper = self.model.upperPositionLimit.copy()  # (n,)
        # Revolute joints whose range spans a full turn have no real barrier: they
        # wrap instead of clipping, so the solver can cross +-pi.
        revolute = np.array(
            [j.shortname().startswith("JointModelR") for j in self.model.joints[1:]]
        )
        wraps = revolute & (self.upper - self.lower >= 2.0 * np.pi)  # (n,)
        self._wrap_index = np.nonzero(wraps)[0]
        self._clip_lower = np.where(wraps, -np.inf, self.lower)  # (n,)
        self._clip_upper = np.where(wraps, np.inf, self.upper)  # (n,)
        self._weights = np.array(
            [self.config.position_weight] * 3 + list(self.config.orientation_weights)
        )  # (6,)
        self._rot_mask = np.array(self.config.orientation_weights) > 0.0  # (3,)
        # Only a task that leaves joint-space directions free gives the posture term
        # something to act on.
        self._partial_task = bool(np.any(self._weights == 0.0)) or self.model.nq > 6
        self._eye = np.eye(self.model.nq)
        self._rng = np.random.default_rng(self.config.random_seed)
        self._build_start_table()
        logger.debug("arm chain %s, ee frame %s", self.joint_names, ee_frame)

    @property
    def n_joints(self) -> int:
        return self.model.nq

    def joint_limits(self, name: str) -> tuple[float, float]:
        """Position limits of any joint of the URDF (arm or gripper), by name."""
        if not self._full_model.existJointName(name):
            raise KeyError(f"no joint named {name!r} in the URDF")
        idx = self._full_model.joints[self._full_model.getJointId(name)].idx_q
        return (
            float(self._full_model.lowerPositionLimit[idx]),
            float(self._full_model.upperPositionLimit[idx]),
        )

    def clip(self, q: np.ndarray) -> np.ndarray:
        """`q` (n,) brought within the limits: wrapped on full-turn joints, else clipped."""
        q = np.minimum(np.maximum(q, self._clip_lower), self._clip_upper)
        if self._wrap_index.size:
            lo = self.lower[self._wrap_index]
            q[self._wrap_index] = lo + np.mod(q[self._wrap_index] - lo, 2.0 * np.pi)
        return q

    def random_configuration(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A configuration drawn uniformly within the joint limits. (n,)"""
        return (rng or self._rng).uniform(self.lower, self.upper)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Pose of the end-effector frame in the root frame (base_link). (4, 4)"""
        pin.framesForwardKinematics(self.model, self.data, self._check_q(q))
        return self.data.oMf[self._frame_id].homogeneous

    def jacobian(self, q: np.ndarray, local: bool = False) -> np.ndarray:
        """Jacobian of the end-effector frame, rows (linear, angular). (6, n)

        World-aligned by default (velocity of the frame origin and angular velocity,
        both in base_link axes); `local=True` expresses both in ee_link axes.
        """
        frame = pin.ReferenceFrame.LOCAL if local else pin.ReferenceFrame.LOCAL_WORLD_ALIGNED
        return pin.computeFrameJacobian(
            self.model, self.data, self._check_q(q), self._frame_id, frame
        )

    def ik(self, target: np.ndarray, seed: np.ndarray) -> IKResult:
        """Joint configuration placing the end-effector frame at `target` (4, 4).

        `seed` (n,) is the current state: the solution stays near it wherever the
        weighted task leaves freedom, and it is the first start unless stored samples
        are much nearer the target. The result is the best attempt; `success` says
        whether it met the tolerances.
        """
        target = np.asarray(target, dtype=float)
        if target.shape != (4, 4):
            raise ValueError(f"target must be a 4x4 homogeneous matrix, got shape {target.shape}")
        seed = self.clip(self._check_q(seed).copy())
        p_target = target[:3, 3].copy()
        r_target = target[:3, :3].copy()
        starts = self._ranked_starts(seed, p_target, r_target)
        best = _Attempt(q=seed)
        iterations = 0
        attempts = 0
        while attempts <= self.config.max_restarts:
            start = starts[attempts] if attempts < len(starts) else self.random_configuration()
            attempts += 1
            attempt = self._solve_from(start, seed, p_target, r_target)
            iterations += attempt.iterations
            if attempt.cost < best.cost or attempt.converged:
                best = attempt
            if best.converged:
                break
        return IKResult(
            q=best.q,
            success=best.converged,
            iterations=iterations,
            restarts=attempts - 1,
            position_error=best.pos_err,
            orientation_error=best.rot_err,
        )

    def _check_q(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape != (self.model.nq,):
            raise ValueError(f"q must have shape ({self.model.nq},), got {q.shape}")
        return q

    def _pose_features(self, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """Vector whose squared distances are the start-table pose distance. (12,)"""
        return np.concatenate([position, self._feature_rot_scale * rotation.ravel()])

    def _build_start_table(self) -> None:
        cfg = self.config
        w_pos = max(cfg.position_weight, 1e-9)
        w_rot = float(np.mean(np.square(cfg.orientation_weights)))
        self._feature_rot_scale = math.sqrt(_TABLE_ROTATION_SCALE * w_rot) / w_pos
        table_rng = np.random.default_rng(cfg.random_seed)
        self._table_q = table_rng.uniform(
            self.lower, self.upper, size=(cfg.start_table_size, self.model.nq)
        )  # (N, n)
        features = np.empty((cfg.start_table_size, 12))
        for row, q in enumerate(self._table_q):
            pin.framesForwardKinematics(self.model, self.data, q)
            placement = self.data.oMf[self._frame_id]
            features[row] = self._pose_features(placement.translation, placement.rotation)
        self._table_features = features  # (N, 12)
        self._table_sq_norms = np.einsum("ij,ij->i", features, features)  # (N,)

    def _ranked_starts(
        self, seed: np.ndarray, p_target: np.ndarray, r_target: np.ndarray
    ) -> list[np.ndarray]:
        """The seed and the best start-table entries, best ranked first."""
        count = min(self.config.start_candidates, self.config.start_table_size)
        if count == 0:
            return [seed]
        f_target = self._pose_features(p_target, r_target)  # (12,)
        pose_d2 = (
            self._table_sq_norms - 2.0 * (self._table_features @ f_target) + f_target @ f_target
        )
        diff = self._table_q - seed  # (N, n)
        scores = pose_d2 + self.config.seed_preference * np.einsum("ij,ij->i", diff, diff)
        nearest = np.argpartition(scores, count - 1)[:count]
        nearest = nearest[np.argsort(scores[nearest])]
        pin.framesForwardKinematics(self.model, self.data, seed)
        placement = self.data.oMf[self._frame_id]
        f_seed = self._pose_features(placement.translation, placement.rotation)
        seed_score = float(np.sum(np.square(f_seed - f_target)))
        table_starts = [self._table_q[i].copy() for i in nearest]
        if seed_score <= scores[nearest[0]]:
            return [seed, *table_starts]
        return [table_starts[0], seed, *table_starts[1:]]

    def _error_and_jacobian(
        self, q: np.ndarray, p_target: np.ndarray, r_target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Task error in ee_link axes, rows (position, rotation vector) (6,), and the
        LOCAL frame Jacobian (6, n), from one kinematics pass."""
        pin.computeJointJacobians(self.model, self.data, q)
        placement = pin.updateFramePlacement(self.model, self.data, self._frame_id)
        rot = placement.rotation
        err = np.empty(6)
        err[:3] = rot.T @ (p_target - placement.translation)
        err[3:] = pin.log3(rot.T @ r_target)
        jac = pin.getFrameJacobian(self.model, self.data, self._frame_id, pin.ReferenceFrame.LOCAL)
        return err, jac

    def _solve_from(
        self, start: np.ndarray, seed: np.ndarray, p_target: np.ndarray, r_target: np.ndarray
    ) -> _Attempt:
        cfg = self.config
        w = self._weights
        q = start
        best = _Attempt(q=q)
        stall_ref = math.inf
        stall_count = 0
        for iteration in range(1, cfg.max_iterations + 1):
            err, jac = self._error_and_jacobian(q, p_target, r_target)
            weighted = w * err  # (6,)
            cost = float(weighted @ weighted)
            best.iterations = iteration
            if cost < best.cost:
                rot = err[3:][self._rot_mask]
                best = _Attempt(
                    q=q,
                    cost=cost,
                    pos_err=math.sqrt(err[:3] @ err[:3]),
                    rot_err=math.sqrt(rot @ rot),
                    iterations=iteration,
                )
                if (
                    best.pos_err <= cfg.position_tolerance
                    and best.rot_err <= cfg.orientation_tolerance
                ):
                    best.converged = True
                    break
            if cost < 0.25 * stall_ref:
                stall_ref, stall_count = cost, 0
            else:
                stall_count += 1
                if stall_count >= cfg.stall_iterations:
                    break
            q = self.clip(q + self._step(q, w[:, None] * jac, weighted, cost, seed - q))
        return best

    def _step(
        self, q: np.ndarray, a: np.ndarray, b: np.ndarray, cost: float, to_seed: np.ndarray
    ) -> np.ndarray:
        """LM step for A dq = b (A (6, n), b (6,)) plus the posture term in null(A).

        Joints resting on a limit that the descent direction pushes against are left
        out of the step, so the other joints make the progress a clipped step loses.
        """
        damping = self.config.error_damping * cost + self.config.damping
        grad = a.T @ b  # (n,) descent direction of |A dq - b|^2
        pinned = ((q <= self._clip_lower) & (grad < 0.0)) | ((q >= self._clip_upper) & (grad > 0.0))
        if pinned.any():
            a = a.copy()
            a[:, pinned] = 0.0
            grad[pinned] = 0.0
        dq = np.linalg.solve(a.T @ a + damping * self._eye, grad)
        if self._partial_task and self.config.posture_gain > 0.0:
            dq += self.config.posture_gain * self._null_projection(a, to_seed)
        largest = float(np.max(np.abs(dq)))
        if largest > self.config.max_step:
            dq *= self.config.max_step / largest
        return dq

    @staticmethod
    def _null_projection(a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """`v` (n,) projected onto the null space of A (6, n)."""
        _, s, vt = np.linalg.svd(a, full_matrices=True)  # s (k,), vt (n, n)
        rank = int(np.count_nonzero(s > _NULLSPACE_TOL * max(float(s[0]), 1.0)))
        basis = vt[rank:]  # (n - rank, n), orthonormal rows spanning null(A)
        return basis.T @ (basis @ v)
