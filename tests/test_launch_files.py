"""The repository's launch files as the launcher plans them (`--print`: nothing is started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from armstack_bringup.cli import main

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def plan(capsys, file: str, *args: str) -> dict[str, str]:
    """{process name without its index: its command line and attribute lines}."""
    assert main(["launch", str(LAUNCH_DIR / file), "--print", *args]) == 0
    out = capsys.readouterr().out
    blocks = re.split(r"^\[", out, flags=re.M)[1:]
    return {re.sub(r"-\d+$", "", b.split("]", 1)[0]): b for b in blocks}


def test_demo_runs_the_whole_graph_with_respawn_but_not_for_the_bus_owners(capsys):
    nodes = plan(capsys, "demo.launch.yaml")
    assert set(nodes) == {"sim_node", "detector_node", "localization_node", "driver_node",
                          "ik_node", "state_publisher", "policy_node"}
    for name in ("detector_node", "localization_node", "ik_node", "state_publisher",
                 "policy_node"):
        assert "respawn (delay 0.5 s)" in nodes[name], name
    for name in ("sim_node", "driver_node"):
        assert "respawn" not in nodes[name], name
    assert "'reply_margin_ms': 100.0" in nodes["driver_node"]  # the emulated bus's settings
    assert "'model_path': 'policy/act_pick/policy.onnx'" in nodes["policy_node"]


def test_demo_on_hardware_with_teleop_recorder_and_a_namespace(capsys):
    nodes = plan(capsys, "demo.launch.yaml", "sim:=false", "camera:=realsense",
                 "servo_port:=/dev/ttyUSB0", "policy:=false", "teleop:=keyboard",
                 "recorder:=true", "dataset:=/data/set1", "namespace:=arm_left", "respawn:=false")
    assert set(nodes) == {"camera_node", "detector_node", "localization_node", "driver_node",
                          "ik_node", "state_publisher", "teleop_node", "recorder_node"}
    assert all("__ns:=/arm_left" in block for block in nodes.values())
    assert not any("respawn" in block for block in nodes.values())
    assert "'port': '/dev/ttyUSB0'" in nodes["driver_node"]
    assert "'reply_margin_ms': 20.0" in nodes["driver_node"]  # a real bus: the defaults
    assert "'source': 'keyboard'" in nodes["teleop_node"]
    assert "'dataset_root': '/data/set1'" in nodes["recorder_node"]


@pytest.mark.parametrize("file", sorted(p.name for p in LAUNCH_DIR.glob("*.launch.yaml")))
def test_every_launch_file_plans_with_its_defaults(capsys, file):
    assert plan(capsys, file)


def test_record_passes_its_seed_and_miss_rate_to_the_expert_and_can_skip_video(capsys):
    nodes = plan(capsys, "record.launch.yaml", "seed:=601", "expert_miss_rate:=0.3",
                 "expert_start_at_miss:=true", "record_images:=false")
    assert "'expert_miss_rate': 0.3" in nodes["teleop_node"]
    assert "'expert_start_at_miss': True" in nodes["teleop_node"]
    assert "'expert_seed': 601" in nodes["teleop_node"]  # the misses follow the layouts' seed
    assert "'record_images': False" in nodes["recorder_node"]
    defaults = plan(capsys, "record.launch.yaml")
    assert "'expert_miss_rate': 0.0" in defaults["teleop_node"]
    assert "'expert_start_at_miss': False" in defaults["teleop_node"]
    assert "'record_images': True" in defaults["recorder_node"]
    assert "'expert_noise_std': 0.0" in defaults["teleop_node"]
    assert "'expert_noise_quiet_phases': ''" in defaults["teleop_node"]
    assert "'action_source': 'joint_command'" in defaults["recorder_node"]


def test_record_with_expert_noise_keeps_the_clean_command_as_the_action(capsys):
    nodes = plan(capsys, "record.launch.yaml", "expert_noise_std:=0.004",
                 "action_source:=ee_command", "ee_action_topic:=expert/clean_ee_command",
                 "expert_noise_quiet_phases:=descend,close")
    assert "'expert_noise_std': 0.004" in nodes["teleop_node"]
    assert "'expert_noise_quiet_phases': 'descend,close'" in nodes["teleop_node"]
    assert "'action_source': 'ee_command'" in nodes["recorder_node"]
    assert "-r ee_command:=expert/clean_ee_command" in nodes["recorder_node"]
    assert "ee_command:=" not in nodes["teleop_node"]  # the arm still executes ee_command
