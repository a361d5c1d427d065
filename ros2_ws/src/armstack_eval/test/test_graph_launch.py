"""The evaluation graph's launch file: valid for armstack's launcher, with the right nodes."""

from __future__ import annotations

import os

import pytest
import yaml

from armstack_bringup.planner import plan_launch
from armstack_common import paths
from armstack_eval.graph_launch import GraphConfig, write_graph_launch


def _config(**overrides) -> GraphConfig:
    return GraphConfig(launch_dir=paths.launch_dir(),
                       servo_port_link="/tmp/test_eval/servo_bus", **overrides)


def _plan(tmp_path, cfg: GraphConfig):
    launch_file = write_graph_launch(cfg, tmp_path / "report")
    # the graph users launch themselves, with this run's arguments and overrides
    assert "demo.launch.yaml" in launch_file.read_text()
    params = tmp_path / "params"
    params.mkdir()
    plan = plan_launch(launch_file, {}, os.environ, params)
    return {spec.label.rsplit("-", 1)[0]: spec for spec in plan.processes}, params


def _parameters(spec, params_dir) -> dict:
    """Every parameter the launcher passes to a process (later files override earlier)."""
    values: dict = {}
    for arg in spec.cmd:
        if arg.startswith(str(params_dir)) or arg.endswith(".yaml"):
            for node in (yaml.safe_load(open(arg)) or {}).values():
                values.update(node.get("ros__parameters", {}))
    return values


def test_policy_graph_runs_perception_policy_and_motion(tmp_path):
    processes, params = _plan(tmp_path, _config(controller="policy", policy_model="/m/p.onnx",
                                                chunk_mode="temporal_ensemble", seed=4, objects=("red",),
                                                policy_params=(("min_inference_period", 0.5),)))
    assert set(processes) == {"sim_node", "driver_node", "ik_node", "state_publisher", "detector_node",
                              "localization_node", "policy_node"}
    sim = _parameters(processes["sim_node"], params)
    assert sim["seed"] == 4 and sim["objects"] == ["red"]
    assert sim["servo_port_link"] == "/tmp/test_eval/servo_bus"
    driver = _parameters(processes["driver_node"], params)
    assert driver["port"] == "/tmp/test_eval/servo_bus"
    assert driver["reply_margin_ms"] == 100.0 and driver["read_retries"] == 10  # the sim's bus
    policy = _parameters(processes["policy_node"], params)
    assert policy["model_path"] == "/m/p.onnx" and policy["chunk_mode"] == "temporal_ensemble"
    assert policy["start_running"] is False and policy["min_inference_period"] == 0.5
    # The policy never gets the simulator's ground truth: no remaps onto sim/ topics.
    assert not any("sim/" in arg for arg in processes["policy_node"].cmd)


def test_expert_graph_without_perception(tmp_path):
    processes, params = _plan(tmp_path, _config(controller="expert", perception=False))
    assert set(processes) == {"sim_node", "driver_node", "ik_node", "state_publisher", "teleop_node"}
    teleop = _parameters(processes["teleop_node"], params)
    assert teleop["source"] == "expert" and teleop["exit_on_end"] is False
    assert teleop["keyboard_episode_keys"] is False


@pytest.mark.parametrize("overrides, field", [
    ({"controller": "human"}, "controller"),
    ({"objects": ()}, "objects"),
    ({"expert_time_limit": 0.0}, "expert_time_limit"),
    ({"seed": -1}, "seed"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        _config(**overrides)


def test_policy_param_arguments_parse_yaml_values():
    import argparse

    from armstack_eval.evaluate import policy_param_arg

    assert policy_param_arg("min_inference_period=0.5") == ("min_inference_period", 0.5)
    assert policy_param_arg("ensemble_favour=newest") == ("ensemble_favour", "newest")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        policy_param_arg("blend_steps")
