"""Chunk buffer: action chunks in, one action per control step out.

A chunked policy (ACT, Diffusion Policy, a VLA) predicts k future actions, shape (k, D), from an
observation stamped t_obs. Inference runs asynchronously and is slow next to the 50 Hz control
loop, so `ChunkBuffer` keeps chunks keyed by time and answers `action_at(t_now)` once per step.

Time convention
    Action i of a chunk is meant for t_obs + i*dt, and i = 0 is the action for the observation
    instant itself. That is how chunk policies are trained: a LeRobot dataset pairs the
    observation of frame t with the action of frame t, and the chunk target is actions t..t+k-1
    (action delta timestamps 0, 1/fps, ...). ACT's temporal ensemble indexes chunks the same way.
    So by the time a chunk exists its first actions are already in the past (inference latency);
    the modes differ in what they do about that and about overlapping chunks.

Control grid
    `action_at` snaps t_now to a control step s on a grid t_ref + s*dt that follows the control
    timer: anchored at the first call, its phase tracked slowly (`clock_gain`) so drift is
    followed while jitter below `jitter_tolerance` never changes s; a lone outlier beyond it is
    ignored, and only a persistent shift (timer restarted) re-anchors the grid. A chunk gets its
    grid step s0 = round((t_obs - t_ref)/dt) once, when added, so its action index at step s is
    the integer s - s0, i.e. round((t_now - t_obs)/dt) with both times on the grid. That index
    advances by exactly one per control step whatever the phase between camera stamps and the
    control timer; rounding t_now - t_obs afresh each step would skip or repeat actions whenever
    that phase sits near half a step.

Modes (`ChunkBufferConfig.mode`)
    temporal_ensemble: every held chunk covering the step contributes, weight exp(-m*r) with r
        the chunk's rank by observation time among the contributors (Zhao et al. 2023,
        Algorithm 2). favour="oldest" puts r = 0 on the oldest chunk, as the ACT code and
        LeRobot's ACTTemporalEnsembler do (m = 0.01 there); favour="newest" puts it on the
        newest. A late chunk (older stamp than one held) is inserted by stamp, so the result
        does not depend on arrival order. A full ring evicts the oldest chunk: size max_chunks
        to chunk_size / (steps between chunks).
    receding_horizon: play the active chunk by time; once the first n_action_steps of it have
        passed, switch (hard) to the newest chunk covering now; with none newer, play on to the
        end of the active chunk.
    async_latency_compensated: switch to a newer chunk as soon as it covers now, starting at
        the action for now (those whose time has passed are dropped), and crossfade linearly
        from what would have been output over `blend_steps` steps. A switch during a blend
        freezes the current mixture as the new source, so nothing jumps. Closing a gap G
        between the chunks over B blend steps adds at most G/(B+1) per step to the chunks' own
        per-step change (a hard switch adds G at once).

Robustness
    Rejected chunks are counted by reason (`ChunkVerdict`). No chunk covering now gives a hold
    of the last action, flagged (`StepStatus.DRY`). A step number going backwards, or forwards
    by more than `max_time_gap`, is a time jump (clock reset, pause): the chunks were planned
    for a timeline that did not happen, so they are dropped, the last action is held
    (`StepStatus.TIME_JUMP`) and only chunks observed after the jump are accepted (those
    stamped over max_time_gap ahead of the clock are refused as from another timeline).
"""

import bisect
import enum
import logging
import math
import numbers
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MODES = ("temporal_ensemble", "receding_horizon", "async_latency_compensated")
FAVOUR = ("oldest", "newest")

# Key of the frozen blend anchor (the held action) in an async blend source.
_ANCHOR = -1
# Blend-source entries faded below this only pin ring slots; they are dropped and the rest
# renormalised (the output moves by about this fraction of their distance, far below one
# crossfade increment 1/(blend_steps+1)). With arrivals every few steps this keeps a handful.
_MIN_BLEND_WEIGHT = 0.01
# Consecutive same-sign off-grid calls needed to re-anchor the grid: one late wakeup is an
# outlier to ignore; a timer whose phase really moved stays off on the same side.
_REGRID_AFTER = 3
# Accepted difference between a chunk's dt and the configured control period (relative).
_DT_RTOL = 1e-6


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ChunkBufferConfig.{field}: {message}")


def _check_int(field: str, value: object, minimum: int) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool), field,
             f"must be an int, got {value!r}")
    _require(value >= minimum, field, f"must be >= {minimum}, got {value}")


def _check_real(field: str, value: object) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value), field, f"must be a finite number, got {value!r}")


@dataclass(frozen=True)
class ChunkBufferConfig:
    """Configuration of a `ChunkBuffer`; validated on construction (errors name the field)."""

    mode: str = "async_latency_compensated"  # one of MODES
    chunk_size: int = 100  # k, actions per chunk
    action_dim: int = 7  # D, values per action
    dt: float = 0.02  # control period and chunk action spacing, s
    max_chunks: int = 32  # ring capacity; ensembling a chunk every step needs >= chunk_size
    ensemble_coeff: float = 0.01  # m in exp(-m*r); ACT's default
    favour: str = "oldest"  # which chunk gets rank 0 (the largest weight) in the ensemble
    n_action_steps: int | None = None  # receding horizon n; None = chunk_size (LeRobot ACT default)
    blend_steps: int = 5  # async crossfade length, control steps; 0 = hard switch
    max_time_gap: float = 0.5  # a forward step larger than this (s) is a time jump
    jitter_tolerance: float = 0.4  # |t_now - grid| above this fraction of dt re-anchors the grid
    clock_gain: float = 0.05  # fraction of each on-grid residual the grid phase follows

    def __post_init__(self) -> None:
        _require(self.mode in MODES, "mode", f"must be one of {MODES}, got {self.mode!r}")
        _check_int("chunk_size", self.chunk_size, 1)
        _check_int("action_dim", self.action_dim, 1)
        _check_real("dt", self.dt)
        _require(self.dt > 0, "dt", f"must be > 0, got {self.dt}")
        # Two slots at least: the chunk being played and the one that replaces it.
        _check_int("max_chunks", self.max_chunks, 2)
        _check_real("ensemble_coeff", self.ensemble_coeff)
        _require(self.ensemble_coeff >= 0, "ensemble_coeff",
                 f"must be >= 0 (use favour to pick the direction), got {self.ensemble_coeff}")
        _require(self.favour in FAVOUR, "favour", f"must be one of {FAVOUR}, got {self.favour!r}")
        if self.n_action_steps is not None:
            _check_int("n_action_steps", self.n_action_steps, 1)
            _require(self.n_action_steps <= self.chunk_size, "n_action_steps",
                     f"must be <= chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        _check_int("blend_steps", self.blend_steps, 0)
        _check_real("max_time_gap", self.max_time_gap)
        _require(self.max_time_gap >= 2 * self.dt, "max_time_gap",
                 f"must be >= 2*dt ({2 * self.dt}) so a late step is not a jump, "
                 f"got {self.max_time_gap}")
        _check_real("jitter_tolerance", self.jitter_tolerance)
        _require(0 < self.jitter_tolerance <= 0.5, "jitter_tolerance",
                 f"must be in (0, 0.5], got {self.jitter_tolerance}")
        _check_real("clock_gain", self.clock_gain)
        _require(0 <= self.clock_gain < 1, "clock_gain",
                 f"must be in [0, 1), got {self.clock_gain}")

    @property
    def horizon(self) -> int:
        """Receding-horizon n: actions played from a chunk before switching."""
        return self.chunk_size if self.n_action_steps is None else self.n_action_steps


class StepStatus(enum.Enum):
    OK = "ok"  # action computed from chunk(s)
    DRY = "dry"  # no chunk covers this step: last action held
    TIME_JUMP = "time_jump"  # clock jumped: chunks dropped, last action held
    EMPTY = "empty"  # no chunk covers this step and no action was ever output: action is None


class ChunkVerdict(enum.Enum):
    ACCEPTED = "accepted"
    ACCEPTED_LATE = "accepted_late"  # ensemble: older stamp than a held chunk, inserted by stamp
    STALE = "stale"  # every action of the chunk is for a step already served
    OUT_OF_ORDER = "out_of_order"  # not newer than a chunk already accepted (receding/async)
    FUTURE = "future"  # observed more than max_time_gap ahead of the control clock
    PRE_JUMP = "pre_jump"  # observed before the last time jump

    @property
    def accepted(self) -> bool:
        return self in (ChunkVerdict.ACCEPTED, ChunkVerdict.ACCEPTED_LATE)


@dataclass(frozen=True, slots=True)
class ActionStep:
    """Result of one control step."""

    # (D,) read-only view of the buffer's output array, overwritten by the next call: copy it to
    # keep it. None only with StepStatus.EMPTY (or a time jump before any action).
    action: np.ndarray | None
    status: StepStatus
    step: int  # control step number (monotonic; rebased at time jumps)
    # Observation time (s) of the newest chunk contributing to `action` (for a hold, that of
    # the held action), so a command can carry its camera frame's stamp. None with no action.
    t_obs: float | None = None

    @property
    def is_hold(self) -> bool:
        """True when the caller must report that no fresh action was available."""
        return self.status is not StepStatus.OK


@dataclass(frozen=True)
class BufferStats:
    depth: int  # chunks held
    steps_remaining: int  # control steps after the last served one still covered by a held chunk
    dry_steps: int  # steps answered with a hold (or nothing) because no chunk covered them
    accepted: int  # chunks accepted (late ones included)
    late_accepted: int  # ensemble: chunks inserted behind a newer one by stamp
    rejected: dict[str, int]  # reason (ChunkVerdict value) -> count
    evicted: int  # chunks dropped for room while they still covered future steps
    time_jumps_backward: int
    time_jumps_forward: int
    regrids: int  # grid re-anchored after a persistent timer phase shift
    switches: int  # receding/async: switches to a newer chunk
    last_latency_steps: int | None  # receding/async: first index used from the latest chunk
    last_status: str | None


class ChunkBuffer:
    """Time-keyed action chunk buffer; see the module docstring for conventions and modes.

    Thread-safe: `add_chunk` (inference thread) and `action_at` (control timer) may run
    concurrently. Per step the cost is O(max_chunks * D) for the gather and O(held chunks) Python
    bookkeeping, with no array allocation: the output is written into preallocated arrays.
    """

    def __init__(self, config: ChunkBufferConfig) -> None:
        self.config = config
        k, d, m = config.chunk_size, config.action_dim, config.max_chunks
        self._k = k
        self._gap_steps = max(2, round(config.max_time_gap / config.dt))
        # One row table so every mode is a gather + weighted sum: m chunks of k rows, then the
        # hold row (last output) and the anchor row (hold frozen when an async blend starts).
        self._flat = np.zeros((m * k + 2, d))  # (m*k + 2, D)
        self._chunks = self._flat[: m * k].reshape(m, k, d)  # (m, k, D) view
        self._hold_row, self._anchor_row = m * k, m * k + 1
        self._hold = self._flat[self._hold_row]  # (D,) view
        self._anchor = self._flat[self._anchor_row]  # (D,) view
        # A mixture has at most m chunk entries plus the anchor; unused entries have weight 0.
        self._rows = np.zeros(m + 1, dtype=np.intp)  # (m+1,)
        self._weights = np.zeros(m + 1)  # (m+1,)
        self._gathered = np.zeros((m + 1, d))  # (m+1, D)
        self._out = np.zeros(d)  # (D,)
        self._out_view = self._out.view()
        self._out_view.flags.writeable = False
        decay = np.exp(-config.ensemble_coeff * np.arange(m))  # (m,) weight by rank
        self._decay = decay.tolist()
        self._decay_sum = [0.0, *np.cumsum(decay).tolist()]  # [n] = sum of the first n weights
        self._contrib: list[int] = []
        self._tobs = [0.0] * m
        self._s0 = [0] * m
        self._fill = {
            "temporal_ensemble": self._fill_ensemble,
            "receding_horizon": self._fill_receding,
            "async_latency_compensated": self._fill_async,
        }[config.mode]
        self._lock = threading.Lock()
        self.reset()

    # ---------------------------------------------------------------- public API

    def reset(self) -> None:
        """Forget chunks, control clock, held action and counters (e.g. at an episode start)."""
        with self._lock:
            self._drop_chunks()
            self._t_ref: float | None = None
            self._s_last: int | None = None
            self._barrier: int | None = None  # smallest chunk s0 accepted after a time jump
            self._off_grid = 0  # signed count of consecutive off-grid calls
            self._has_hold = False
            self._hold_tobs: float | None = None  # t_obs of the held action (see ActionStep)
            self._dry_counted_at: int | None = None
            self._rejected = {v.value: 0 for v in ChunkVerdict if not v.accepted}
            self._accepted = self._late = self._evicted = self._regrids = self._switches = 0
            self._jumps_back = self._jumps_fwd = self._dry_steps = 0
            self._last_latency: int | None = None
            self._last_status: StepStatus | None = None

    def add_chunk(self, actions: np.ndarray, t_obs: float,
                  dt: float | None = None) -> ChunkVerdict:
        """Offer a chunk (k, D) (or (1, k, D)) predicted from the observation stamped t_obs (s).

        dt, if given, must equal the configured control period: chunks are not resampled.
        Raises ValueError on malformed input; returns the verdict (rejections are counted).
        """
        chunk = self._validated(actions, t_obs, dt)
        t_obs = float(t_obs)
        with self._lock:
            verdict = self._admit(t_obs)
            if not verdict.accepted:
                self._rejected[verdict.value] += 1
                logger.debug("chunk t_obs=%.4f rejected: %s", t_obs, verdict.value)
                return verdict
            s0 = self._grid_step(t_obs) if self._t_ref is not None else 0
            if self.config.mode != "temporal_ensemble":
                self._drop_superseded(s0)  # before claiming, so superseded is not evicted
            slot = self._claim_slot()
            np.copyto(self._chunks[slot], chunk)
            self._tobs[slot], self._s0[slot] = t_obs, s0
            bisect.insort(self._order, slot, key=self._tobs.__getitem__)
            self._newest_tobs = max(self._newest_tobs, t_obs)
            self._accepted += 1
            if verdict is ChunkVerdict.ACCEPTED_LATE:
                self._late += 1
            return verdict

    def action_at(self, t_now: float) -> ActionStep:
        """Action for the control step at t_now (s); see `ActionStep` for holds."""
        if not math.isfinite(t_now):
            raise ValueError(f"t_now must be finite, got {t_now!r}")
        with self._lock:
            s, jumped = self._clock(t_now)
            n = 0 if jumped else self._fill(s)
            status = StepStatus.TIME_JUMP if jumped else (StepStatus.OK if n else StepStatus.DRY)
            if n:
                # Unused entries carry weight 0, so gathering all m+1 rows keeps shapes fixed.
                np.take(self._flat, self._rows, axis=0, out=self._gathered, mode="clip")
                np.dot(self._weights, self._gathered, out=self._out)
                np.copyto(self._hold, self._out)
                self._has_hold = True
                self._hold_tobs = self._newest_source()
            else:
                if not jumped and self._dry_counted_at != s:
                    self._dry_steps += 1
                    self._dry_counted_at = s
                if not self._has_hold:
                    if status is StepStatus.DRY:
                        status = StepStatus.EMPTY
                    self._last_status = status
                    return ActionStep(None, status, s)
                np.copyto(self._out, self._hold)
            self._last_status = status
            return ActionStep(self._out_view, status, s, self._hold_tobs)

    @property
    def depth(self) -> int:
        """Chunks held (cheap, for per-step use; `stats` has the rest)."""
        return len(self._order)

    def stats(self) -> BufferStats:
        """Diagnostics snapshot (allocates; call at diagnostics rate, not per step)."""
        with self._lock:
            k = self._k
            if not self._order:
                remaining = 0
            elif self._s_last is None:
                remaining = k
            else:
                last = max(self._s0[slot] + k - 1 for slot in self._order)
                remaining = max(0, last - self._s_last)
            return BufferStats(
                depth=len(self._order), steps_remaining=remaining, dry_steps=self._dry_steps,
                accepted=self._accepted, late_accepted=self._late, rejected=dict(self._rejected),
                evicted=self._evicted, time_jumps_backward=self._jumps_back,
                time_jumps_forward=self._jumps_fwd, regrids=self._regrids,
                switches=self._switches, last_latency_steps=self._last_latency,
                last_status=None if self._last_status is None else self._last_status.value)

    def _newest_source(self) -> float:
        """Observation time of the newest chunk in the mixture just filled: the last ensemble
        contributor (held chunks are kept in stamp order), else the active chunk (an async
        blend's other sources are older chunks, or a hold of their output)."""
        if self.config.mode == "temporal_ensemble":
            return self._tobs[self._contrib[-1]]
        return self._tobs[self._active]

    # ---------------------------------------------------------------- chunk intake

    def _validated(self, actions: np.ndarray, t_obs: float, dt: float | None) -> np.ndarray:
        cfg = self.config
        chunk = np.asarray(actions)
        if chunk.ndim == 3 and chunk.shape[0] == 1:
            chunk = chunk[0]  # (1, k, D) batch of one, as policies return it
        if chunk.shape != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(f"actions: expected shape ({cfg.chunk_size}, {cfg.action_dim}) "
                             f"(chunk_size, action_dim), got {chunk.shape}")
        if chunk.dtype.kind not in "iuf":
            raise ValueError(f"actions: expected a real numeric array, got dtype {chunk.dtype}")
        if not np.isfinite(chunk).all():
            raise ValueError("actions: contains NaN or inf")
        if not isinstance(t_obs, numbers.Real) or not math.isfinite(t_obs):
            raise ValueError(f"t_obs: must be a finite number of seconds, got {t_obs!r}")
        if dt is not None and abs(dt - cfg.dt) > _DT_RTOL * cfg.dt:
            raise ValueError(f"dt: chunk spacing {dt} differs from ChunkBufferConfig.dt "
                             f"{cfg.dt}; resample the chunk to the control period")
        return chunk

    def _admit(self, t_obs: float) -> ChunkVerdict:
        late = t_obs <= self._newest_tobs
        if self._s_last is not None:
            s0 = self._grid_step(t_obs)
            if self._barrier is not None and s0 < self._barrier:
                return ChunkVerdict.PRE_JUMP
            if s0 + self._k - 1 <= self._s_last:
                return ChunkVerdict.STALE
            if s0 > self._s_last + self._gap_steps:
                return ChunkVerdict.FUTURE
        if not late:
            return ChunkVerdict.ACCEPTED
        if self.config.mode != "temporal_ensemble":
            return ChunkVerdict.OUT_OF_ORDER
        # The ensemble ranks chunks by stamp, so a late chunk is inserted where its stamp puts
        # it, unless the ring is full and it would be the oldest (evicted at once).
        if not self._free and t_obs < self._tobs[self._order[0]]:
            return ChunkVerdict.OUT_OF_ORDER
        return ChunkVerdict.ACCEPTED_LATE

    def _claim_slot(self) -> int:
        if self._free:
            return self._free.pop()
        # Full: evict the oldest chunk that is neither playing nor feeding a blend; failing
        # that, the oldest blend source.
        sources = {key for key, _ in self._src}
        candidates = [slot for slot in self._order if slot != self._active]
        victim = next((slot for slot in candidates if slot not in sources), candidates[0])
        if self._s_last is None or self._s0[victim] + self._k - 1 > self._s_last:
            self._evicted += 1
        if victim in sources:
            self._src = self._normalised({key: w for key, w in self._src if key != victim})
        self._order.remove(victim)
        return victim

    def _drop_superseded(self, new_s0: int) -> None:
        """Receding/async: chunks between the playing one and a newer usable one never play."""
        if self._s_last is not None and new_s0 > self._s_last + 1:
            return  # not usable at the next step; older chunks may still be switched to
        keep = {self._active, *(key for key, _ in self._src)}
        dropped = [slot for slot in self._order if slot not in keep]
        for slot in dropped:
            self._forget(slot)

    # ---------------------------------------------------------------- clock

    def _grid_step(self, t: float) -> int:
        return math.floor((t - self._t_ref) / self.config.dt + 0.5)

    def _clock(self, t_now: float) -> tuple[int, bool]:
        """Snap t_now to a control step; returns (step, time_jumped)."""
        cfg = self.config
        if self._t_ref is None:
            self._t_ref, self._s_last = t_now, 0
            for slot in self._order:
                self._s0[slot] = self._grid_step(self._tobs[slot])
            return 0, False
        s = self._grid_step(t_now)
        gap = s - self._s_last
        if gap < 0 or gap > self._gap_steps:
            return self._time_jump(t_now, gap), True
        residual = t_now - (self._t_ref + s * cfg.dt)
        if abs(residual) <= cfg.jitter_tolerance * cfg.dt:
            self._off_grid = 0
            self._t_ref += cfg.clock_gain * residual
        else:
            side = 1 if residual > 0 else -1
            self._off_grid = self._off_grid + side if self._off_grid * side > 0 else side
            if abs(self._off_grid) >= _REGRID_AFTER:
                # The timer's phase moved (restart, clock adjustment): re-anchor rather than
                # let jitter around the half-step boundary alternate skips and repeats.
                self._t_ref += residual
                self._regrids += 1
                self._off_grid = 0
        self._s_last = s
        return s, False

    def _time_jump(self, t_now: float, gap: int) -> int:
        if gap < 0:
            self._jumps_back += 1
        else:
            self._jumps_fwd += 1
        logger.warning("control clock jumped by %d steps at t=%.3f: chunks dropped, holding",
                       gap, t_now)
        s = self._s_last + 1  # keep step numbers monotonic across the jump
        self._t_ref = t_now - s * self.config.dt
        self._s_last = s
        self._off_grid = 0
        # Accept observations from a little before the jump was seen (they may have been taken
        # after the pause ended) but none from the old timeline before the pause.
        self._barrier = s - self._gap_steps // 2
        self._drop_chunks()
        return s

    # ---------------------------------------------------------------- ring bookkeeping

    def _drop_chunks(self) -> None:
        self._free = list(range(self.config.max_chunks))
        self._order: list[int] = []  # held slots, oldest observation first
        self._newest_tobs = -math.inf
        self._active: int | None = None  # receding/async: chunk being played
        self._src: list[tuple[int, float]] = []  # async: frozen blend source (slot|_ANCHOR, w)
        self._s_switch = 0  # async: step at which the active chunk took over

    def _forget(self, slot: int) -> None:
        self._order.remove(slot)
        self._free.append(slot)

    def _covers(self, slot: int, s: int) -> bool:
        return 0 <= s - self._s0[slot] < self._k

    def _newest_covering(self, s: int) -> int | None:
        """Newest chunk covering step s that is newer than the active one."""
        for slot in reversed(self._order):
            if slot == self._active:
                return None
            if self._covers(slot, s):
                return slot
        return None

    def _prune_before_active(self) -> None:
        """Drop chunks older than the active one unless they feed the blend."""
        if self._active is None:
            return
        sources = {key for key, _ in self._src}
        cut = self._order.index(self._active)
        for slot in [slot for slot in self._order[:cut] if slot not in sources]:
            self._forget(slot)

    def _switch_to(self, slot: int, s: int) -> None:
        self._active, self._s_switch = slot, s
        self._last_latency = s - self._s0[slot]
        self._switches += 1
        self._prune_before_active()

    # ---------------------------------------------------------------- modes

    def _fill_ensemble(self, s: int) -> int:
        k, order, s0 = self._k, self._order, self._s0
        while order and s0[order[0]] + k - 1 < s:
            self._free.append(order.pop(0))
        contrib = self._contrib
        contrib.clear()
        for slot in order:
            if self._covers(slot, s):
                contrib.append(slot)
        n = len(contrib)
        if n == 0:
            return 0
        norm = 1.0 / self._decay_sum[n]
        newest_first = self.config.favour == "newest"
        rows, weights = self._rows, self._weights
        weights.fill(0.0)
        for j, slot in enumerate(contrib):
            rows[j] = slot * k + s - s0[slot]
            weights[j] = self._decay[n - 1 - j if newest_first else j] * norm
        return n

    def _fill_receding(self, s: int) -> int:
        active = self._active
        if active is None or s - self._s0[active] >= self.config.horizon:
            newest = self._newest_covering(s)
            if newest is not None:
                self._switch_to(newest, s)
                active = newest
        if active is None:
            return 0
        i = s - self._s0[active]
        if i >= self._k:  # played to its end and nothing newer covers now
            self._forget(active)
            self._active = None
            return 0
        self._weights.fill(0.0)
        self._rows[0] = active * self._k + i
        self._weights[0] = 1.0
        return 1

    def _fill_async(self, s: int) -> int:
        newest = self._newest_covering(s)
        if newest is not None:
            self._start_blend(newest, s)
        active = self._active
        if active is None:
            return 0
        blend = self.config.blend_steps
        j = s - self._s_switch
        if self._src and j >= blend:
            self._src = []
            self._prune_before_active()
        weights, rows = self._weights, self._rows
        weights.fill(0.0)
        if not self._src:
            i = s - self._s0[active]
            if i >= self._k:
                self._forget(active)
                self._active = None
                return 0
            rows[0] = active * self._k + i
            weights[0] = 1.0
            return 1
        beta = (j + 1) / (blend + 1)  # linear crossfade; the new chunk is in from the first step
        n = 0
        for key, w in self._src:
            rows[n] = self._row(key, s)
            weights[n] = (1.0 - beta) * w
            n += 1
        rows[n] = self._row(active, s)
        weights[n] = beta
        return n + 1

    def _start_blend(self, new: int, s: int) -> None:
        """Freeze the mixture that step s would have had as the blend source, then switch."""
        old, blend = self._active, self.config.blend_steps
        source: dict[int, float] = {}
        if blend > 0 and old is None and self._has_hold:
            np.copyto(self._anchor, self._hold)  # coming out of a hold: fade from the held action
            source[_ANCHOR] = 1.0
        elif blend > 0 and old is not None:
            j = s - self._s_switch
            beta = (j + 1) / (blend + 1) if self._src and j < blend else 1.0
            for key, w in self._src:
                source[key] = source.get(key, 0.0) + (1.0 - beta) * w
            source[old] = source.get(old, 0.0) + beta
        self._src = self._normalised(source)
        self._switch_to(new, s)

    @staticmethod
    def _normalised(source: dict[int, float]) -> list[tuple[int, float]]:
        kept = {key: w for key, w in source.items() if w > _MIN_BLEND_WEIGHT}
        total = sum(kept.values())
        return [(key, w / total) for key, w in kept.items()]

    def _row(self, key: int, s: int) -> int:
        """Row of a blend-source entry at step s; a chunk past its end holds its last action."""
        if key == _ANCHOR:
            return self._anchor_row
        i = min(max(s - self._s0[key], 0), self._k - 1)
        return key * self._k + i
