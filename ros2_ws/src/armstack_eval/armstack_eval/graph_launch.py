"""The launch file of an evaluation: the whole graph against the simulator. Plain module.

sim (camera topics + the servo bus on a pty) -> perception.launch.yaml (detector,
localization) -> controller (policy node, or teleop's scripted expert) -> motion.launch.yaml
(IK, driver over the pty, state publisher). The file is written into the report directory and
run by armstack's launcher, so a run can be repeated by hand (`armstack launch <file>`), and
it works under `ros2 launch` too. The policy sees only what the real robot would: its inputs
are joint_states and the perception's `objects`; the simulator's ground truth
(`sim/ground_truth`, `sim/task_status`) reaches only the expert and the episode runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CONTROLLERS = ("policy", "expert")


# Driver settings for the simulated bus: its replies come from a Python thread on a shared
# CPU (p99 17-33 ms at load 7-14 measured), so the driver waits longer and retries more
# before it stops motion than on a real bus.
SIM_REPLY_MARGIN_MS = 100.0
SIM_READ_RETRIES = 10

@dataclass(frozen=True)
class GraphConfig:
    """What runs in the evaluation graph."""

    launch_dir: Path  # armstack's launch/ (motion and perception launch files)
    config_dir: Path  # armstack's config/ (parameter files)
    servo_port_link: str  # the simulator's pty link, the driver's port
    controller: str = "policy"  # one of CONTROLLERS
    policy_model: str = "policy/act_pick/policy.onnx"  # relative to models/, or absolute
    chunk_mode: str = "receding_horizon"  # armstack_policy.chunk_buffer.MODES
    # Further policy node parameters (name, value) over config/policy.yaml's, e.g.
    # ("min_inference_period", 0.5); the node checks names and ranges at start.
    policy_params: tuple[tuple[str, object], ...] = ()
    perception: bool = True  # detector + localization (a policy that takes objects needs them)
    detector_model: str = "detector/detector.onnx"  # relative to models/, or absolute
    seed: int = 0  # of the first scene; the simulator adds one per reset
    objects: tuple[str, ...] = ("red", "green", "blue")  # cube colours
    camera_rate: float = 30.0  # Hz
    driver_rate: float = 200.0  # Hz
    expert_time_limit: float = 60.0  # s per expert take

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"GraphConfig.controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if not self.objects:
            raise ValueError("GraphConfig.objects must name at least one cube colour")
        if not self.servo_port_link:
            raise ValueError("GraphConfig.servo_port_link must not be empty")
        for name in ("camera_rate", "driver_rate", "expert_time_limit"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"GraphConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"GraphConfig.seed must be >= 0, got {self.seed}")


def _params(**values: object) -> list[dict[str, object]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def _args(**values: object) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in values.items()]


def _controller_node(cfg: GraphConfig) -> dict[str, object]:
    if cfg.controller == "policy":
        return {"node": {
            "pkg": "armstack_policy", "exec": "policy_node", "name": "policy", "output": "screen",
            "param": [{"from": str(cfg.config_dir / "policy.yaml")},
                      *_params(model_path=cfg.policy_model, chunk_mode=cfg.chunk_mode,
                               start_running=False, **dict(cfg.policy_params))],
        }}
    # The expert resets the scene itself between takes; the runner follows teleop/episode.
    return {"node": {
        "pkg": "armstack_teleop", "exec": "teleop_node", "name": "teleop", "output": "screen",
        "param": [{"from": str(cfg.config_dir / "teleop.yaml")},
                  *_params(source="expert", num_episodes=0, exit_on_end=False,
                           keyboard_episode_keys=False, expert_time_limit=cfg.expert_time_limit)],
    }}


def graph_entities(cfg: GraphConfig) -> list[dict[str, object]]:
    """The launch file's entities (launch_yaml structure)."""
    entities: list[dict[str, object]] = [
        {"node": {
            "pkg": "armstack_sim", "exec": "sim_node", "name": "sim", "output": "screen",
            "param": _params(seed=cfg.seed, camera_rate=float(cfg.camera_rate),
                             servo_port_link=cfg.servo_port_link, objects=list(cfg.objects)),
        }},
        {"include": {"file": str(cfg.launch_dir / "motion.launch.yaml"),
                     "arg": _args(servo_port=cfg.servo_port_link, driver_rate=float(cfg.driver_rate),
                                  # The emulated bus answers from a shared CPU: see motion.launch.yaml.
                                  driver_reply_margin_ms=SIM_REPLY_MARGIN_MS,
                                  driver_read_retries=SIM_READ_RETRIES)}},
    ]
    if cfg.perception:
        entities.append({"include": {
            "file": str(cfg.launch_dir / "perception.launch.yaml"),
            "arg": _args(camera="sim", detector_model=cfg.detector_model)}})
    entities.append(_controller_node(cfg))
    return entities


def graph_launch_text(cfg: GraphConfig) -> str:
    """The evaluation graph as a YAML launch file."""
    head = (f"# Evaluation graph written by armstack_eval ({cfg.controller} controller).\n"
            "# Run it again with: armstack launch <this file>\n")
    return head + yaml.safe_dump({"launch": graph_entities(cfg)}, sort_keys=False, width=100)
