#!/usr/bin/env python3
"""Soak run: the whole graph against the simulator, episode after episode, for a long time.

sim -> detector -> localization -> policy (or the scripted expert) -> IK -> driver, the same
graph as tools/evaluate_policy.py (armstack_eval.graph_launch), started with armstack's
launcher; armstack_eval's episode runner resets the scene and runs one episode after another
until --minutes have passed. Meanwhile every node process is sampled through /proc (resident
memory, CPU). The report says whether the stack holds up over time:

- memory: RSS of each node process over time and its growth (MB/hour, fitted after the
  warm-up), restarts (a respawned or replaced process);
- missed control periods: the policy's 50 Hz timer and the driver's bus loop, per episode,
  from their diagnostics counters;
- success rate and missed periods per --window-minutes window.

    source .venv/armstack_env.sh
    python tools/soak.py --minutes 30 --policy-model policy/act_pick/policy.onnx --out out/soak-act
    python tools/soak.py --minutes 30 --controller expert --no-perception   # no trained policy

Writes <out>/soak.md (the summary, also printed), soak.json (samples, episodes, summary),
samples.jsonl (written as it goes: an interrupted run keeps its samples), soak.png (plots),
graph.launch.yaml and graph.log. Ctrl-C ends the run early and still reports.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import rclpy
from armstack_common import paths
from armstack_eval.episode import EpisodeLog
from armstack_eval.episodes import EpisodeSequence, RunnerConfig, RunnerError, sim_start_pose
from armstack_eval.evaluate import LaunchedGraph
from armstack_eval.graph_launch import CONTROLLERS, GraphConfig, write_graph_launch
from armstack_eval.metrics import CAMERA, COMMAND, JOINT_COMMAND, OBJECTS
from armstack_eval.runner_node import EpisodeRunnerNode
from armstack_policy.chunk_buffer import MODES
from armstack_policy.onnx_policy import PolicyCard, find_card

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_analysis import (EpisodeRow, Sample, memory_trends, missed_per_episode,  # noqa: E402
                           report_lines, sample_tree, windows)

EXIT_OK, EXIT_GRAPH, EXIT_INVALID = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="how long episodes keep starting")
    parser.add_argument("--controller", choices=CONTROLLERS, default="policy")
    parser.add_argument("--policy-model", default="policy/act_pick/policy.onnx",
                        help="ONNX policy (model_card.json beside it): a path or one under models/")
    parser.add_argument("--mode", choices=MODES, default="async_latency_compensated",
                        help="chunk buffer mode of the policy node")
    parser.add_argument("--detector-model", default="detector/detector.onnx",
                        help="ONNX detector: a path, or one under models/")
    parser.add_argument("--no-perception", action="store_true",
                        help="no detector and localization (the expert needs neither)")
    parser.add_argument("--episode-timeout", type=float, default=60.0, help="seconds per episode")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the first scene (+1 per episode)")
    parser.add_argument("--sample-period", type=float, default=10.0,
                        help="seconds between looks at the node processes")
    parser.add_argument("--warmup-minutes", type=float, default=2.0,
                        help="memory growth is fitted on the samples after this")
    parser.add_argument("--window-minutes", type=float, default=5.0,
                        help="success rate and missed periods are grouped by windows this long")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds for the graph to come up")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory (default out/soak-<time>)")
    return parser


def runner_config(args: argparse.Namespace) -> RunnerConfig:
    """What the episode runner listens to, from the policy's card; ValueError names a missing
    model or an impossible choice."""
    topic, needs_objects = COMMAND, False
    if args.controller == "policy":
        model = paths.model_location(args.policy_model)
        if not model.is_file():
            raise ValueError(f"policy model {model} not found (tools/train_policy.py, then "
                             "tools/export_policy.py make it; or --controller expert)")
        card = PolicyCard.from_dict(find_card(model), str(model))
        topic = JOINT_COMMAND if card.action_kind == "joint" else COMMAND
        needs_objects = bool(card.object_classes)
        if needs_objects and args.no_perception:
            raise ValueError(f"the policy takes objects {list(card.object_classes)}: it needs "
                             "perception (drop --no-perception)")
    detector_model = paths.model_location(args.detector_model)
    if not args.no_perception and not detector_model.is_file():
        raise ValueError(f"detector model {detector_model} not found "
                         "(tools/train_detector.py makes it; or --no-perception)")
    # An upper bound: the run ends on time, between episodes (SoakView.alive).
    bound = int(args.minutes * 60.0 / 2.0) + 1
    return RunnerConfig(controller=args.controller, episodes=bound, timeout=args.episode_timeout,
                        command_topic=topic, controller_input=OBJECTS if needs_objects else CAMERA,
                        **(sim_start_pose() if args.controller == "policy" else {}))


class SoakView:
    """The episode runner node as the sequence's GraphView, ended by the clock: after the
    deadline it reports the graph as stopped between episodes (never during one), so the
    sequence finishes its episode and stops. Records when each episode ended."""

    def __init__(self, node: EpisodeRunnerNode, deadline: float) -> None:
        self._node, self._deadline = node, deadline
        self._in_episode = False
        self.ended: list[float] = []  # wall time of each episode's end
        self.stop_requested = False

    def __getattr__(self, name: str):
        return getattr(self._node, name)

    def alive(self) -> bool:
        on_time = time.monotonic() < self._deadline and not self.stop_requested
        return self._node.alive() and (self._in_episode or on_time)

    def episode_started(self, index: int, seed: int | None) -> None:
        self._in_episode = True
        self._node.episode_started(index, seed)

    def episode_ended(self) -> None:
        self._node.episode_ended()
        self.ended.append(time.time())
        self._in_episode = False


class Sampler:
    """A thread sampling the launcher's process tree every `period` s (samples.jsonl too)."""

    def __init__(self, root_pid: int, period: float, jsonl: Path, say) -> None:
        self.samples: list[Sample] = []
        self._root, self._period, self._jsonl, self._say = root_pid, period, jsonl, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.time()
        with open(self._jsonl, "a") as out:
            while not self._stop.is_set():
                sample = sample_tree(self._root, time.time())
                self.samples.append(sample)
                out.write(json.dumps({"t": sample.t, "processes": {
                    k: asdict(v) for k, v in sample.processes.items()}}) + "\n")
                out.flush()
                if len(self.samples) % max(1, round(60.0 / self._period)) == 0:
                    rss = ", ".join(f"{k} {v.rss_mb:.0f}"
                                    for k, v in sorted(sample.processes.items()))
                    self._say(f"[{(sample.t - started) / 60:.1f} min] RSS MB: {rss}")
                self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)


def _wait_ready(node: EpisodeRunnerNode, cfg: RunnerConfig, graph: LaunchedGraph,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = node.joint_states_seen() >= 10 and node.task_status() is not None and (
            node.teleop_status() is not None if cfg.controller == "expert"
            else node.service_ready("policy/start"))
        if ready:
            return
        if not graph.alive():
            raise RunnerError("the graph exited while starting")
        if time.monotonic() > deadline:
            raise RunnerError(f"graph not ready after {timeout:g} s")
        time.sleep(0.2)


def _episodes(args: argparse.Namespace, cfg: RunnerConfig, graph: LaunchedGraph,
              say) -> tuple[list, list[float], int]:
    """Run episodes until the deadline; (results, end times, exit code)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    log = EpisodeLog()
    node = EpisodeRunnerNode(context, log, None, 0, graph_alive=graph.alive)
    code = EXIT_OK
    view = None
    sequence = None
    try:
        _wait_ready(node, cfg, graph, args.ready_timeout)
        view = SoakView(node, time.monotonic() + args.minutes * 60.0)
        say(f"graph ready; episodes for {args.minutes:g} min")
        sequence = EpisodeSequence(view, log, cfg, progress=say)
        sequence.run()
        if not graph.alive():
            say("the graph stopped before the soak's end")
            code = EXIT_GRAPH
    except RunnerError as exc:
        say(f"error: {exc}")
        code = EXIT_GRAPH
    except KeyboardInterrupt:
        say("interrupted: reporting the finished episodes")
    finally:
        node.close()
        rclpy.try_shutdown(context=context)
    results = sequence.results if sequence is not None else []
    return results, (view.ended if view is not None else []), code


def _plot(path: Path, samples: list[Sample], rows: list[EpisodeRow], t0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, eps) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name in sorted({n for s in samples for n in s.processes}):
        points = [((s.t - t0) / 60, s.processes[name].rss_mb)
                  for s in samples if name in s.processes]
        mem.plot(*zip(*points, strict=True), label=name)
    mem.set_ylabel("RSS [MB]")
    mem.legend(fontsize="small", ncol=2)
    ends = [(r.end - t0) / 60 for r in rows]
    eps.scatter(ends, [int(r.success) for r in rows], marker="|", label="success (1) / failure (0)")
    for key in sorted({k for r in rows for k in r.missed}):
        eps.plot(ends, [r.missed.get(key, 0) for r in rows], ".-", label=f"missed: {key}")
    eps.set_xlabel("minutes")
    eps.set_ylabel("per episode")
    eps.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report(args: argparse.Namespace, samples: list[Sample], results: list, ended: list[float],
            t0: float, say) -> None:
    missed = missed_per_episode(r.diagnostics for r in results)
    rows = [EpisodeRow(r.index, end, r.duration_s, r.success, r.end_reason, m)
            for r, end, m in zip(results, ended, missed, strict=False)]
    duration = (samples[-1].t if samples else time.time()) - t0
    trends = memory_trends(samples, args.warmup_minutes * 60.0)
    groups = windows(rows, t0, args.window_minutes)
    lines = report_lines(trends, rows, groups, duration)
    (args.out / "soak.md").write_text("\n".join(lines) + "\n")
    (args.out / "soak.json").write_text(json.dumps({
        "meta": {key: str(value) for key, value in vars(args).items()},
        "memory": [asdict(m) for m in trends],
        "episodes": [asdict(r) for r in rows],
        "windows": [{**asdict(w), "success_rate": w.success_rate} for w in groups],
    }, indent=1, default=str))
    if samples:
        _plot(args.out / "soak.png", samples, rows, t0)
    for line in lines:
        say(line)
    say(f"report: {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.sample_period <= 0 or args.episode_timeout <= 0:
        print("soak: --minutes, --sample-period and --episode-timeout must be > 0", file=sys.stderr)
        return EXIT_INVALID
    try:
        cfg = runner_config(args)
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.out is None:
        args.out = Path("out") / f"soak-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    args.out.mkdir(parents=True, exist_ok=True)
    say = functools.partial(print, flush=True)  # progress shows as it happens, even in a log
    link = str(Path(tempfile.mkdtemp(prefix="armstack_soak_")) / "servo_bus")
    graph_cfg = GraphConfig(
        launch_dir=paths.launch_dir(),
        servo_port_link=link, controller=args.controller, policy_model=args.policy_model,
        chunk_mode=args.mode, perception=not args.no_perception,
        detector_model=args.detector_model, seed=args.seed - 1,
        expert_time_limit=args.episode_timeout)
    launch_file = write_graph_launch(graph_cfg, args.out)
    say(f"launching the graph ({args.controller}): log in {args.out / 'graph.log'}")
    t0 = time.time()
    graph = LaunchedGraph(launch_file, args.out / "graph.log")
    sampler = Sampler(graph.proc.pid, args.sample_period, args.out / "samples.jsonl", say).start()
    code = EXIT_GRAPH
    try:
        results, ended, code = _episodes(args, cfg, graph, say)
    finally:
        sampler.stop()
        if code != EXIT_OK:
            say(f"--- last lines of {graph.log_path} ---\n{graph.tail()}")
        graph.stop()
    _report(args, sampler.samples, results, ended, t0, say)
    return code


if __name__ == "__main__":
    sys.exit(main())
