"""Aggregate episode results and write the report directory. Plain module: no rclpy.

    <out>/summary.json     meta, aggregate statistics, one entry per episode
    <out>/summary.md       the same for people
    <out>/latency.png      per-stage latency histograms (camera -> ... -> bus write)
    <out>/episodes.png     success and time to completion per episode
    <out>/traces_NNN.png   commanded vs measured joints, ee target, jerk (first episodes)
    <out>/traces/NNN.npz   the traces as arrays
    <out>/camera.mp4       annotated camera view (written by the runner, see video.py)

Statistics are median / p99 over the pooled samples of all episodes. Values that the nodes
report only as window summaries in `diagnostics` (the policy's control-loop jitter and
inference time, the driver's loop jitter) are aggregated as the median of the episodes'
medians and the largest of their p99s (conservative: no pooled samples exist).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a headless machine
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from armstack_common.robot_names import ARM_JOINTS, GRIPPER_JOINT  # noqa: E402

from armstack_eval.episode import EpisodeResult, Traces  # noqa: E402
from armstack_eval.metrics import STAGES, describe  # noqa: E402

logger = logging.getLogger(__name__)

# (diagnostics status, key) reported per node as window summaries; "median" keys aggregate as
# the median over episodes, the others as the maximum.
DIAGNOSTIC_FIELDS: dict[str, tuple[str, str]] = {
    "policy_control_jitter_ms_median": ("policy: policy", "control_jitter_ms_median"),
    "policy_control_jitter_ms_p99": ("policy: policy", "control_jitter_ms_p99"),
    "policy_control_jitter_ms_max": ("policy: policy", "control_jitter_ms_max"),
    "policy_inference_ms_median": ("policy: policy", "inference_ms_median"),
    "policy_inference_ms_p99": ("policy: policy", "inference_ms_p99"),
    "driver_loop_jitter_ms_median": ("driver: loop", "jitter_ms_median"),
    "driver_loop_jitter_ms_p99": ("driver: loop", "jitter_ms_p99"),
    "detector_inference_ms_median": ("detector: detection", "detect_median_ms"),
    "detector_inference_ms_p99": ("detector: detection", "detect_p99_ms"),
}
TRACE_PLOTS = 3  # episodes whose traces are plotted
FAULT_CHARS = 160  # a fault's length in the printed summary (summary.json keeps it whole)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _diagnostic_summary(episodes: Sequence[EpisodeResult]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for field, (status, key) in DIAGNOSTIC_FIELDS.items():
        values = [v for ep in episodes if (v := _number(ep.diagnostics.get(status, {}).get(key))) is not None]
        if not values:
            result[field] = None
        elif field.endswith("_median"):
            result[field] = float(np.median(values))
        else:
            result[field] = float(max(values))
    return result


def _missed_periods(episodes: Sequence[EpisodeResult]) -> dict[str, float | None]:
    """The policy node's missed control periods summed over the episodes, and per minute of
    the time its reports span."""
    counted = [ep.policy_missed_periods for ep in episodes if ep.policy_missed_periods]
    count = sum(c["count"] for c in counted)
    minutes = sum(c["span_s"] for c in counted) / 60.0
    return {"count": count if counted else None, "minutes": minutes if counted else None,
            "per_minute": count / minutes if minutes > 0 else None}


def aggregate(episodes: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Success rate, time to completion, jerk, per-stage latency and jitter over all episodes."""
    n = len(episodes)
    successes = sum(ep.success for ep in episodes)
    latency = {stage: describe(s for ep in episodes for s in ep.latency_ms.get(stage, ())) for stage in STAGES}
    faults = sorted({f"episode {ep.index}: {fault}" for ep in episodes for fault in ep.faults})
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "end_reasons": dict(Counter(ep.end_reason for ep in episodes)),
        "time_to_completion_s": describe(ep.time_to_success_s for ep in episodes if ep.success),
        "episode_duration_s": describe(ep.duration_s for ep in episodes),
        "jerk_rms_rad_s3": describe(ep.jerk.get("rms") for ep in episodes),
        "jerk_max_rad_s3": max((ep.jerk["max"] for ep in episodes if ep.jerk.get("max") is not None),
                               default=None),
        "latency_ms": latency,
        "command_jitter_ms": describe(s for ep in episodes for s in ep.command_jitter_ms),
        "diagnostics": _diagnostic_summary(episodes),
        "policy_missed_periods": _missed_periods(episodes),
        "faults": faults,
    }


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The short text summary printed at the end of a run."""
    rate = summary["success_rate"]
    ttc = summary["time_to_completion_s"]
    lines = [
        f"success rate: {summary['successes']}/{summary['episodes']}"
        + (f" = {100 * rate:.0f} %" if rate is not None else ""),
        f"time to completion: median {_fmt(ttc['median'])} s, p99 {_fmt(ttc['p99'])} s",
        "latency (ms, median / p99 / samples):",
    ]
    for stage in STAGES:
        stats = summary["latency_ms"][stage]
        label = "camera -> bus write" if stage == "total" else stage
        lines.append(f"  {label:<20} {_fmt(stats['median'])} / {_fmt(stats['p99'])} / {stats['count']}")
    diag = summary["diagnostics"]
    jitter = summary["command_jitter_ms"]
    lines.append(f"command stream jitter (ms): median {_fmt(jitter['median'], 2)}, p99 {_fmt(jitter['p99'], 2)}")
    if diag["policy_control_jitter_ms_median"] is not None:
        lines.append(f"policy control-loop jitter (ms): median {_fmt(diag['policy_control_jitter_ms_median'], 2)}, "
                     f"p99 {_fmt(diag['policy_control_jitter_ms_p99'], 2)}; inference median "
                     f"{_fmt(diag['policy_inference_ms_median'])} ms, p99 {_fmt(diag['policy_inference_ms_p99'])} ms")
    missed = summary["policy_missed_periods"]
    if missed["per_minute"] is not None:
        lines.append(f"policy missed control periods: {_fmt(missed['per_minute'])} per minute "
                     f"({missed['count']:.0f} in {_fmt(missed['minutes'])} min)")
    if diag["driver_loop_jitter_ms_median"] is not None:
        lines.append(f"driver loop jitter (ms): median {_fmt(diag['driver_loop_jitter_ms_median'], 2)}, "
                     f"p99 {_fmt(diag['driver_loop_jitter_ms_p99'], 2)}")
    jerk = summary["jerk_rms_rad_s3"]
    lines.append(f"joint_command jerk (rad/s^3): rms median {_fmt(jerk['median'])}, "
                 f"max {_fmt(summary['jerk_max_rad_s3'])}")
    for fault in summary["faults"]:
        lines.append(f"fault: {fault}" if len(fault) <= FAULT_CHARS else f"fault: {fault[:FAULT_CHARS - 3]}...")
    return lines


def _markdown(meta: dict[str, Any], summary: dict[str, Any], episodes: Sequence[EpisodeResult]) -> str:
    out = ["# Evaluation report", ""]
    out += [f"- {key}: {value}" for key, value in meta.items()]
    out += ["", "## Summary", "", "```", *summary_lines(summary), "```", "", "## Episodes", "",
            "| # | seed | success | end | time to success (s) | duration (s) | jerk rms (rad/s^3) "
            "| camera->bus median (ms) | faults |",
            "|---|---|---|---|---|---|---|---|---|"]
    for ep in episodes:
        total = describe(ep.latency_ms.get("total", ()))["median"]
        out.append(f"| {ep.index} | {_fmt(ep.seed)} | {'yes' if ep.success else 'no'} | {ep.end_reason} "
                   f"| {_fmt(ep.time_to_success_s)} | {_fmt(ep.duration_s)} | {_fmt(ep.jerk.get('rms'))} "
                   f"| {_fmt(total)} | {len(ep.faults)} |")
    out += ["", "Plots: latency.png, episodes.png, traces_*.png; video: camera.mp4 (if recorded).", ""]
    return "\n".join(out)


def _plot_latency(path: Path, episodes: Sequence[EpisodeResult]) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), constrained_layout=True)
    for ax, stage in zip(axes.ravel(), STAGES, strict=True):
        samples = [s for ep in episodes for s in ep.latency_ms.get(stage, ())]
        title = "camera -> bus write" if stage == "total" else stage
        if samples:
            ax.hist(samples, bins=40, color="tab:blue")
            stats = describe(samples)
            ax.axvline(stats["median"], color="k", lw=1)
            ax.axvline(stats["p99"], color="tab:red", lw=1, ls="--")
            title += f"\nmedian {stats['median']:.1f} ms, p99 {stats['p99']:.1f} ms"
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_episodes(path: Path, episodes: Sequence[EpisodeResult]) -> None:
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(episodes) + 2), 3), constrained_layout=True)
    index = [ep.index for ep in episodes]
    heights = [ep.time_to_success_s if ep.success else ep.duration_s for ep in episodes]
    colors = ["tab:green" if ep.success else "tab:red" for ep in episodes]
    ax.bar(index, heights, color=colors)
    ax.set_xlabel("episode (green: success, bar = time to completion; red: failure, bar = duration)")
    ax.set_ylabel("s")
    ax.set_xticks(index)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_traces(path: Path, episode: EpisodeResult, traces: Traces) -> None:
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True, constrained_layout=True)
    for j, name in enumerate(ARM_JOINTS):
        line, = axes[0].plot(traces.command_t, traces.command_q[:, j], lw=1, label=name)
        axes[0].plot(traces.state_t, traces.state_q[:, j], lw=1, ls="--", color=line.get_color())
    axes[0].set_ylabel("rad")
    axes[0].set_title(f"episode {episode.index}: joint_command (solid) and joint_states (dashed)", fontsize=9)
    axes[0].legend(fontsize=7, ncol=6)
    axes[1].plot(traces.command_t, traces.command_q[:, -1] * 1e3, lw=1, label=f"{GRIPPER_JOINT} command")
    axes[1].plot(traces.state_t, traces.state_q[:, -1] * 1e3, lw=1, ls="--", label="measured")
    axes[1].set_ylabel("gripper mm")
    axes[1].legend(fontsize=7)
    for k, axis in enumerate("xyz"):
        axes[2].plot(traces.ee_target_t, traces.ee_target[:, k], lw=1, label=axis)
    axes[2].set_ylabel("ee target m")
    axes[2].legend(fontsize=7)
    axes[3].plot(traces.jerk_t, traces.jerk, lw=0.8)
    axes[3].set_ylabel("jerk rad/s^3")
    axes[3].set_xlabel("s since the controller started")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: str | Path, episodes: Sequence[EpisodeResult], traces: Sequence[Traces],
                 meta: dict[str, Any]) -> dict[str, Any]:
    """Write every report file into `out_dir`; returns the aggregate summary."""
    out = Path(out_dir)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    summary = aggregate(episodes)
    document = {"meta": meta, "summary": summary, "episodes": [ep.to_json() for ep in episodes]}
    (out / "summary.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "summary.md").write_text(_markdown(meta, summary, episodes))
    _plot_latency(out / "latency.png", episodes)
    _plot_episodes(out / "episodes.png", episodes)
    for episode, trace in zip(episodes, traces, strict=True):
        trace.save(str(out / "traces" / f"{episode.index:03d}.npz"))
        if episode.index < TRACE_PLOTS:
            _plot_traces(out / f"traces_{episode.index:03d}.png", episode, trace)
    return summary
