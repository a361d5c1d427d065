"""The soak run's plain parts (no ROS): node processes from /proc, memory growth, missed
control periods and success rate over time, and the report. tools/soak.py runs the graph.

Linux only: processes are found and measured through /proc (no psutil dependency).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROC = Path("/proc")
# Diagnostics keys holding a node's cumulative count of control periods it missed: the policy's
# 50 Hz timer (armstack_policy.runtime) and the driver's bus loop (armstack_driver.reports).
MISSED_KEYS = ("missed_periods", "missed_cycles")
_INTERPRETERS = ("python", "python3")


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    rss_mb: float  # resident set size, MiB
    cpu_s: float  # user + system CPU time since the process started


@dataclass
class Sample:
    """One look at every node process: name -> ProcessSample, at wall time t (s)."""

    t: float
    processes: dict[str, ProcessSample] = field(default_factory=dict)


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...): /proc/<pid>/task/*/children."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in (proc / str(parent) / "task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue  # the task ended meanwhile
            found += children
            frontier += children
    return found


def process_name(cmdline: Sequence[str]) -> str:
    """The program a command line runs: its first word that is not a Python interpreter (node
    executables are Python scripts; `python -m pkg.mod` gives the module's last part)."""
    words = list(cmdline)
    while words and Path(words[0]).name.startswith(_INTERPRETERS):
        words = words[1:]
        if words[:1] == ["-m"] and len(words) > 1:
            return words[1].rsplit(".", 1)[-1]
    return Path(words[0]).name if words else "?"


def read_process(pid: int, proc: Path = PROC) -> tuple[str, ProcessSample] | None:
    """(name, sample) of a live process, or None if it is gone (or a zombie)."""
    base = proc / str(pid)
    try:
        cmdline = (base / "cmdline").read_bytes().split(b"\0")
        status = (base / "status").read_text()
        stat = (base / "stat").read_text()
    except OSError:
        return None
    rss_kb = next((int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:")), None)
    if rss_kb is None:  # kernel threads and zombies have no resident set
        return None
    # Fields after the command name (which may hold spaces) in parentheses; utime and stime
    # are fields 14 and 15 of stat(5), in clock ticks.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    name = process_name([w.decode(errors="replace") for w in cmdline if w])
    return name, ProcessSample(pid, rss_kb / 1024.0, cpu)


def sample_tree(root: int, t: float, proc: Path = PROC) -> Sample:
    """Every process under `root` (the launcher), by name; a name seen twice (two processes of
    one program) gets a #2, #3 suffix in pid order."""
    sample = Sample(t)
    for pid in sorted(descendants(root, proc)):
        read = read_process(pid, proc)
        if read is None:
            continue
        name, ps = read
        key, n = name, 1
        while key in sample.processes:
            n += 1
            key = f"{name}#{n}"
        sample.processes[key] = ps
    return sample


# ---------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryTrend:
    """A node's resident memory over the run; growth from the last process (after restarts)."""

    name: str
    rss_start_mb: float  # at the end of the warm-up (or the first sample, if none after it)
    rss_last_mb: float
    rss_max_mb: float
    growth_mb_per_h: float  # least-squares slope after the warm-up; nan with too few samples
    restarts: int  # pid changes
    cpu_percent: float  # mean CPU use of the last process over the run, % of one core


def memory_trends(samples: Sequence[Sample], warmup_s: float) -> list[MemoryTrend]:
    """Per node name, its RSS series; the growth is fitted on the samples of its last process
    that come `warmup_s` after the first sample (imports, caches and DDS discovery settle)."""
    if not samples:
        return []
    t0 = samples[0].t
    names = sorted({name for s in samples for name in s.processes})
    trends = []
    for name in names:
        series = [(s.t, s.processes[name]) for s in samples if name in s.processes]
        pids = [ps.pid for _, ps in series]
        restarts = sum(a != b for a, b in zip(pids, pids[1:], strict=False))
        last = [(t, ps) for t, ps in series if ps.pid == pids[-1]]
        fit = [(t, ps.rss_mb) for t, ps in last if t - t0 >= warmup_s]
        growth = math.nan
        if len(fit) >= 3 and fit[-1][0] > fit[0][0]:
            t, rss = np.array(fit).T
            growth = float(np.polyfit((t - t[0]) / 3600.0, rss, 1)[0])
        span = last[-1][0] - last[0][0]
        cpu = 100.0 * (last[-1][1].cpu_s - last[0][1].cpu_s) / span if span > 0 else math.nan
        rss = [ps.rss_mb for _, ps in series]
        start = next((ps.rss_mb for t, ps in series if t - t0 >= warmup_s), rss[0])
        trends.append(MemoryTrend(name, start, rss[-1], max(rss), growth, restarts, cpu))
    return trends


# ---------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeRow:
    """What the soak keeps of one episode (armstack_eval's EpisodeResult, reduced)."""

    index: int
    end: float  # wall time (s) the episode ended
    duration_s: float
    success: bool
    end_reason: str
    missed: dict[str, int]  # "<status>/<key>" -> control periods missed during the episode


def missed_per_episode(diagnostics: Iterable[dict[str, dict[str, str]]]) -> list[dict[str, int]]:
    """From each episode's last diagnostics (status -> values), the MISSED_KEYS counters'
    increase over the episode. A counter that went down restarted with its node: its value
    then is what the new process missed."""
    previous: dict[str, int] = {}
    rows = []
    for statuses in diagnostics:
        row = {}
        for status, values in statuses.items():
            for key in MISSED_KEYS:
                if key not in values:
                    continue
                name, count = f"{status}/{key}", int(float(values[key]))
                before = previous.get(name, 0)
                row[name] = count - before if count >= before else count
                previous[name] = count
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Window:
    start_min: float  # minutes from the soak's start
    episodes: int
    successes: int
    missed: dict[str, int]

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan


def windows(rows: Sequence[EpisodeRow], t0: float, minutes: float) -> list[Window]:
    """Episodes grouped by the `minutes`-long window their end falls in (from t0)."""
    if not rows:
        return []
    span = minutes * 60.0
    count = int((max(r.end for r in rows) - t0) // span) + 1
    out = []
    for w in range(count):
        inside = [r for r in rows if w * span <= r.end - t0 < (w + 1) * span]
        missed: dict[str, int] = {}
        for r in inside:
            for key, value in r.missed.items():
                missed[key] = missed.get(key, 0) + value
        out.append(Window(w * minutes, len(inside), sum(r.success for r in inside), missed))
    return out


# ---------------------------------------------------------------------------- report


def report_lines(trends: Sequence[MemoryTrend], rows: Sequence[EpisodeRow],
                 groups: Sequence[Window], duration_s: float) -> list[str]:
    """The soak summary as Markdown lines."""
    hours = duration_s / 3600.0
    lines = [f"# Soak: {duration_s / 60:.1f} min, {len(rows)} episodes, "
             f"{sum(r.success for r in rows)} successful", "",
             "## Memory (resident set) per node process", "",
             "| process | RSS after warm-up MB | last MB | max MB | growth MB/h | restarts "
             "| CPU % |",
             "|---|---|---|---|---|---|---|"]
    for m in trends:
        lines.append(f"| {m.name} | {m.rss_start_mb:.1f} | {m.rss_last_mb:.1f} | "
                     f"{m.rss_max_mb:.1f} | {m.growth_mb_per_h:+.2f} | {m.restarts} | "
                     f"{m.cpu_percent:.1f} |")
    keys = sorted({k for r in rows for k in r.missed})
    lines += ["", "## Missed control periods", ""]
    for key in keys:
        total = sum(r.missed.get(key, 0) for r in rows)
        per_hour = total / hours if hours > 0 else math.nan
        lines.append(f"- {key}: {total} in all ({per_hour:.1f} per hour)")
    if not keys:
        lines.append("- no node reported a missed-period counter")
    lines += ["", "## Over time", "",
              "| from min | episodes | success rate | " + " | ".join(keys) + " |",
              "|---|---|---|" + "---|" * len(keys)]
    for w in groups:
        rate = f"{w.success_rate:.0%}" if w.episodes else "-"
        lines.append(f"| {w.start_min:.0f} | {w.episodes} | {rate} | "
                     + " | ".join(str(w.missed.get(k, 0)) for k in keys) + " |")
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r.end_reason] = reasons.get(r.end_reason, 0) + 1
    lines += ["", "Episode ends: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))]
    return lines
