"""The launch file of an evaluation: launch/demo.launch.yaml against the simulator. Plain module.

The evaluation runs the graph users launch themselves (`ros2 launch armstack_bringup
demo.launch.yaml`, or `armstack launch launch/demo.launch.yaml`): sim (camera topics + the servo
bus on a pty) -> perception (detector, localization) -> controller (policy node, or teleop's
scripted expert) -> motion (IK, driver over the pty, state publisher). What an evaluation sets
beyond demo.launch.yaml's arguments (cube colours, policy parameters, the expert's settings)
goes into an overrides parameter file. Both files are written into the report directory, so a
run can be repeated by hand (`armstack launch <dir>/graph.launch.yaml`). The policy sees only
what the real robot would: its inputs are joint_states and the perception's `objects`; the
simulator's ground truth (`sim/ground_truth`, `sim/task_status`) reaches only the expert and
the episode runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CONTROLLERS = ("policy", "expert")
LAUNCH_FILE = "graph.launch.yaml"
OVERRIDES_FILE = "graph_overrides.yaml"


@dataclass(frozen=True)
class GraphConfig:
    """What runs in the evaluation graph."""

    launch_dir: Path  # armstack's launch/ (demo.launch.yaml)
    servo_port_link: str  # the simulator's pty link, the driver's port
    controller: str = "policy"  # one of CONTROLLERS
    policy_model: str = "policy/act_pick/policy.onnx"  # a path, or one under models/
    chunk_mode: str = "receding_horizon"  # armstack_policy.chunk_buffer.MODES
    # Further policy node parameters (name, value) over config/policy.yaml's, e.g.
    # ("min_inference_period", 0.5); the node checks names and ranges at start.
    policy_params: tuple[tuple[str, object], ...] = ()
    perception: bool = True  # detector + localization (a policy that takes objects needs them)
    detector_model: str = "detector/detector.onnx"  # a path, or one under models/
    seed: int = 0  # of the first scene; the simulator adds one per reset
    objects: tuple[str, ...] = ("red", "green", "blue")  # cube colours
    expert_time_limit: float = 60.0  # s per expert take

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"GraphConfig.controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if not self.objects:
            raise ValueError("GraphConfig.objects must name at least one cube colour")
        if not self.servo_port_link:
            raise ValueError("GraphConfig.servo_port_link must not be empty")
        if not self.expert_time_limit > 0.0:
            raise ValueError(f"GraphConfig.expert_time_limit must be > 0, got {self.expert_time_limit}")
        if self.seed < 0:
            raise ValueError(f"GraphConfig.seed must be >= 0, got {self.seed}")


def graph_overrides(cfg: GraphConfig) -> dict[str, object]:
    """The overrides parameter file's content (keys as in config/*.yaml)."""
    params: dict[str, dict[str, object]] = {"/**/sim": {"objects": list(cfg.objects)}}
    if cfg.controller == "policy":
        params["/**/policy"] = dict(cfg.policy_params)
    else:
        # The expert resets the scene itself between takes; the runner follows teleop/episode.
        params["/**/teleop"] = {"num_episodes": 0, "exit_on_end": False,
                                "keyboard_episode_keys": False,
                                "expert_time_limit": cfg.expert_time_limit}
    return {key: {"ros__parameters": values} for key, values in params.items() if values}


def graph_launch(cfg: GraphConfig, overrides: Path) -> dict[str, object]:
    """The launch file's structure (launch_yaml): demo.launch.yaml with this run's arguments."""
    policy = cfg.controller == "policy"
    args = {"sim": "true", "seed": cfg.seed, "servo_port": cfg.servo_port_link,
            "servo_port_link": cfg.servo_port_link, "perception": str(cfg.perception).lower(),
            "detector_model": cfg.detector_model, "policy": str(policy).lower(),
            "policy_model": cfg.policy_model, "chunk_mode": cfg.chunk_mode,
            "teleop": "none" if policy else "expert", "overrides": overrides}
    return {"launch": [{"include": {
        "file": str(cfg.launch_dir / "demo.launch.yaml"),
        "arg": [{"name": name, "value": str(value)} for name, value in args.items()]}}]}


def write_graph_launch(cfg: GraphConfig, directory: Path) -> Path:
    """Write the launch file and its overrides into `directory`; the launch file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    overrides = directory / OVERRIDES_FILE
    overrides.write_text("# Parameters of this evaluation over config/*.yaml (armstack_eval).\n"
                         + yaml.safe_dump(graph_overrides(cfg), sort_keys=False))
    launch_file = directory / LAUNCH_FILE
    launch_file.write_text(
        f"# Evaluation graph written by armstack_eval ({cfg.controller} controller).\n"
        "# Run it again with: armstack launch <this file>\n"
        + yaml.safe_dump(graph_launch(cfg, overrides.resolve()), sort_keys=False, width=100))
    return launch_file
