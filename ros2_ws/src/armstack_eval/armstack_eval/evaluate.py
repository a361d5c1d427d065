"""Evaluate a controller through the whole graph against the simulator; `armstack demo`.

    python tools/evaluate_policy.py --policy-model policy/act_pick/policy.onnx --episodes 20 --out out/eval
    python tools/evaluate_policy.py --controller expert --episodes 5       # the scripted expert
    ./armstack demo [--episodes 5]                                          # committed models

Launches launch/demo.launch.yaml (graph_launch.py) with armstack's launcher, runs N randomized episodes
(episodes.py), writes the report (report.py; camera.mp4 by video.py) and prints the summary:
success rate, time to completion, per-stage latency median / p99, control-loop jitter, jerk.
With --attach it uses a graph that is already running (e.g. under ros2 launch) instead.
Exit codes: 0 when every episode ran (whatever their outcome), 1 when the graph failed or
was not ready, 2 for invalid arguments or a missing model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
import yaml
from armstack_common import paths
from armstack_common.params import comma_separated
from armstack_policy.chunk_buffer import MODES
from armstack_policy.onnx_policy import PolicyCard, find_card, is_vla_card
from armstack_policy.vla_decode import VLACard

from armstack_eval.episode import EpisodeLog
from armstack_eval.episodes import (
    EpisodeSequence,
    RunnerConfig,
    RunnerError,
    sim_start_pose,
    start_pose_arg,
)
from armstack_eval.graph_launch import CONTROLLERS, GraphConfig, write_graph_launch
from armstack_eval.metrics import CAMERA, COMMAND, JOINT_COMMAND, OBJECTS
from armstack_eval.report import summary_lines, write_report
from armstack_eval.runner_node import EpisodeRunnerNode
from armstack_eval.video import AnnotatedVideo, Projector

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_GRAPH, EXIT_INVALID = 0, 1, 2
LOG_TAIL = 40  # lines of the graph's log shown when it fails
_DETECTOR_MAKER = "tools/train_detector.py"
_POLICY_MAKER = "tools/train_policy.py, then tools/export_policy.py"


def build_parser(prog: str, episodes: int, controller: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--controller", choices=(*CONTROLLERS, "auto"), default=controller,
                        help="what drives the arm: the policy node, the scripted expert (teleop), or auto "
                             "(the policy when its model exists, else the expert)")
    parser.add_argument("--policy-model", default="policy/act_pick/policy.onnx",
                        help="ONNX policy (model_card.json beside it): a path or one under models/")
    parser.add_argument("--instruction", default=None, metavar="TEMPLATE",
                        help="VLA policies: each episode names one cube in this instruction, "
                             "{color} its colour (default: \"%s\"); success is that cube alone in "
                             "the bin" % DEFAULT_INSTRUCTION)
    parser.add_argument("--mode", choices=MODES, default="receding_horizon",
                        help="chunk buffer mode of the policy node")
    parser.add_argument("--episodes", type=int, default=episodes, help="number of episodes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per episode")
    parser.add_argument("--policy-param", type=policy_param_arg, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a policy node parameter over config/policy.yaml's (repeatable; YAML "
                             "value), e.g. min_inference_period=0.5 or blend_steps=10")
    parser.add_argument("--start-pose", type=start_pose_arg, default=None, metavar="Q1,...,Q7",
                        help="joint positions every policy episode starts from, in the simulator's "
                             "joint order (default: the scripted expert's rest pose, where its "
                             "recorded demonstrations start)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first scene (+1 per episode)")
    parser.add_argument("--objects", default="red,green,blue", help="comma-separated cube colours")
    parser.add_argument("--detector-model", default="detector/detector.onnx",
                        help="ONNX detector: a path, or one under models/")
    parser.add_argument("--no-perception", action="store_true",
                        help="no detector and localization (the expert and image policies need neither; "
                             "a policy that takes objects does)")
    parser.add_argument("--video-episodes", type=int, default=1,
                        help="episodes filmed into camera.mp4, from the first (0: no video)")
    parser.add_argument("--ready-timeout", type=float, default=90.0,
                        help="seconds for the graph to come up")
    parser.add_argument("--attach", action="store_true",
                        help="use the graph already running (same ROS_DOMAIN_ID) instead of launching one")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory (default out/<prog>-<time>)")
    return parser


DEFAULT_INSTRUCTION = "put the {color} cube in the bin"


def _resolve_choices(args: argparse.Namespace, say) -> None:
    """auto controller and missing models: decide, or raise ValueError naming the fix. Sets
    args.command_topic and args.needs_objects from the policy's model card."""
    if args.controller == "auto":
        policy_model = paths.model_location(args.policy_model)
        args.controller = "policy" if policy_model.is_file() else "expert"
        if args.controller == "expert":
            say(f"no policy model at {policy_model} ({_POLICY_MAKER} make one): "
                "the scripted expert drives the arm")
    args.command_topic, args.needs_objects = COMMAND, False
    instruction, args.instruction = args.instruction, ""
    if args.controller == "policy":
        model = paths.model_location(args.policy_model)
        if not model.is_file():
            raise ValueError(f"policy model {model} not found: make it with {_POLICY_MAKER}, "
                             "or pass --controller expert")
        raw = find_card(model)
        if is_vla_card(raw):
            card = VLACard.from_dict(raw, str(model))
            args.instruction = instruction or DEFAULT_INSTRUCTION
        else:
            card = PolicyCard.from_dict(raw, str(model))
        if instruction and not args.instruction:
            raise ValueError(f"--instruction: the {card.kind} policy {model} takes no instruction")
        args.command_topic = JOINT_COMMAND if card.action_kind == "joint" else COMMAND
        args.needs_objects = bool(card.object_classes)
        if args.needs_objects and args.no_perception:
            raise ValueError(f"--no-perception: the policy takes objects {list(card.object_classes)} "
                             "from the detector and localization")
    detector_model = paths.model_location(args.detector_model)
    if not args.no_perception and not detector_model.is_file():
        if args.needs_objects or not args.auto_perception:
            raise ValueError(f"detector model {detector_model} not found: make it with "
                             f"{_DETECTOR_MAKER}, or pass --no-perception (when the controller needs no objects)")
        say(f"no detector at {detector_model}: running without perception")
        args.no_perception = True


class LaunchedGraph:
    """The launcher running the evaluation graph, output to a log file."""

    def __init__(self, launch_file: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "armstack_bringup.cli", "launch", str(launch_file)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = LOG_TAIL) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT, as Ctrl-C: the launcher stops every node (SIGTERM/SIGKILL after its timeouts).
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _wait_ready(node: EpisodeRunnerNode, cfg: RunnerConfig, graph: LaunchedGraph | None, timeout: float) -> None:
    """joint_states from the driver, the simulator's task status, and the controller."""
    def ready() -> bool:
        if node.joint_states_seen() < 10 or node.task_status() is None:
            return False
        if cfg.controller == "expert":
            return node.teleop_status() is not None
        return node.service_ready("policy/start")

    deadline = time.monotonic() + timeout
    while not ready():
        if graph is not None and not graph.alive():
            raise RunnerError("the graph exited while starting")
        if time.monotonic() > deadline:
            missing = [what for what, ok in (
                ("joint_states", node.joint_states_seen() >= 10), ("sim/task_status", node.task_status() is not None),
                ("the controller", cfg.controller == "policy" or node.teleop_status() is not None)) if not ok]
            raise RunnerError(f"graph not ready after {timeout:g} s; missing: {', '.join(missing) or 'policy/start'}")
        time.sleep(0.1)


def _graph_config(args: argparse.Namespace, link: str) -> GraphConfig:
    return GraphConfig(
        launch_dir=paths.launch_dir(),
        servo_port_link=link, controller=args.controller, policy_model=args.policy_model,
        chunk_mode=args.mode, policy_params=tuple(args.policy_param),
        perception=not args.no_perception, detector_model=args.detector_model,
        # Both controllers reset the scene before their first episode (seed + 1).
        seed=args.seed - 1,
        objects=comma_separated(args.objects),
        expert_time_limit=args.timeout)


def _run_episodes(args: argparse.Namespace, runner_cfg: RunnerConfig, graph: LaunchedGraph | None,
                  say) -> tuple[EpisodeSequence, int, AnnotatedVideo | None, int]:
    """Runner node up, wait for the graph, run the episodes; (sequence, exit code, video, frames)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    video = None
    if args.video_episodes > 0:
        projector = Projector.from_calibration(paths.config_file("camera/calibration.yaml"))
        video = AnnotatedVideo(args.out / "camera.mp4", projector)
    log = EpisodeLog()
    node = EpisodeRunnerNode(context, log, video, args.video_episodes,
                             graph_alive=graph.alive if graph is not None else None)
    sequence = EpisodeSequence(node, log, runner_cfg, progress=say)
    code = EXIT_OK
    try:
        _wait_ready(node, runner_cfg, graph, args.ready_timeout)
        say(f"graph ready; running {args.episodes} episode(s)")
        sequence.run()
        if len(sequence.results) < args.episodes:
            code = EXIT_GRAPH
    except RunnerError as exc:
        say(f"error: {exc}")
        code = EXIT_GRAPH
    except KeyboardInterrupt:
        say("interrupted: reporting the finished episodes")
    finally:
        node.close()
        rclpy.try_shutdown(context=context)
        frames = video.close() if video is not None else 0
    return sequence, code, video, frames


def run(args: argparse.Namespace, say=print) -> int:
    """Launch (unless attached), run the episodes, write the report, print the summary."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    bus_dir = Path(tempfile.mkdtemp(prefix="armstack_eval_"))  # for the simulator's pty link
    link = str(bus_dir / "servo_bus")
    graph_cfg = _graph_config(args, link)
    runner_cfg = RunnerConfig(controller=args.controller, episodes=args.episodes, timeout=args.timeout,
                              command_topic=args.command_topic,
                              controller_input=OBJECTS if args.needs_objects else CAMERA,
                              instruction_template=args.instruction,
                              **(sim_start_pose(args.start_pose) if args.controller == "policy" else {}))
    graph = None
    if not args.attach:
        launch_file = write_graph_launch(graph_cfg, out)
        say(f"launching the graph ({args.controller}): log in {out / 'graph.log'}")
        graph = LaunchedGraph(launch_file, out / "graph.log")
    code = EXIT_GRAPH
    try:
        sequence, code, video, frames = _run_episodes(args, runner_cfg, graph, say)
    finally:
        # Whatever failed, the launched graph must not outlive this run.
        if graph is not None:
            if code != EXIT_OK:
                say(f"--- last lines of {graph.log_path} ---\n{graph.tail()}")
            graph.stop()
        shutil.rmtree(bus_dir, ignore_errors=True)
    meta = {"controller": args.controller, "policy_model": args.policy_model if args.controller == "policy" else None,
            "chunk_mode": args.mode if args.controller == "policy" else None,
            "policy_params": dict(args.policy_param) if args.controller == "policy" else None,
            "episodes_requested": args.episodes,
            "first_seed": args.seed, "objects": list(graph_cfg.objects), "perception": not args.no_perception,
            "timeout_s": args.timeout, "video_frames": frames, "video_frames_dropped": video.dropped if video else 0,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if sequence.results:
        summary = write_report(out, sequence.results, sequence.traces, meta)
        for line in summary_lines(summary):
            say(line)
    else:
        (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": None, "episodes": []}, indent=2))
    say(f"report: {out}")
    return code


def main(argv: list[str] | None = None, prog: str = "evaluate_policy", episodes: int = 10,
         controller: str = "policy", auto_perception: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    args = build_parser(prog, episodes, controller).parse_args(argv)
    args.auto_perception = auto_perception
    if args.episodes < 1 or args.timeout <= 0 or args.video_episodes < 0 or args.seed < 1:
        print(f"{prog}: --episodes >= 1, --timeout > 0, --video-episodes >= 0, --seed >= 1", file=sys.stderr)
        return EXIT_INVALID
    try:
        _resolve_choices(args, print)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = Path("out") / f"{prog.replace(' ', '-')}-{stamp}"
    return run(args)


def policy_param_arg(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), yaml.safe_load(value)


def demo_main(argv: list[str]) -> int:
    """`armstack demo`: the whole graph with the committed models, 5 episodes, then the summary."""
    return main(argv, prog="armstack demo", episodes=5, controller="auto", auto_perception=True)


if __name__ == "__main__":
    sys.exit(main())
