"""Evaluating launch files into process specs: scoping, includes, arguments, node commands."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from armstack_bringup.errors import LaunchError
from armstack_bringup.planner import LaunchPlan
from armstack_bringup.planner import plan_launch

ENV = {"PATH": "/usr/bin", "HOME": "/home/u"}


@pytest.fixture
def plan(tmp_path: Path, write_launch):
    """plan(text, **arguments) -> LaunchPlan of a launch file with that text."""
    params_dir = tmp_path / "params"
    params_dir.mkdir()

    def run(text: str, **arguments: str) -> LaunchPlan:
        return plan_launch(write_launch(text), arguments, ENV, params_dir)
    return run


def params_of(spec) -> list[dict]:
    return [yaml.safe_load(Path(path).read_text()) for path in spec.generated_params]


def ros_part(cmd: tuple[str, ...]) -> list[str]:
    """The arguments after the last --ros-args."""
    index = len(cmd) - 1 - list(reversed(cmd)).index("--ros-args")
    return list(cmd[index + 1:])


def test_node_full_command(plan, ament_prefix: Path) -> None:
    result = plan("""
        launch:
        - set_env: {name: FROM_LAUNCH, value: '1'}
        - node:
            pkg: demo_pkg
            exec: talker
            name: talker
            namespace: /robot
            args: --flag value
            param:
            - {name: rate, value: 30}
            - {from: $(find-pkg-share demo_pkg)/config/params.yaml}
            - {name: frame, value: base_link}
            remap: [{from: image, to: /camera/image}]
            env: [{name: NODE_ONLY, value: $(env FROM_LAUNCH)}]
    """)
    (spec,) = result.processes
    generated = spec.generated_params
    assert spec.cmd == (
        str(ament_prefix / "lib/demo_pkg/talker"), "--flag", "value", "--ros-args",
        "-r", "__node:=talker", "-r", "__ns:=/robot",
        "--params-file", generated[0],
        "--params-file", str(ament_prefix / "share/demo_pkg/config/params.yaml"),
        "--params-file", generated[1],
        "-r", "image:=/camera/image")
    assert params_of(spec) == [{"/robot/talker": {"ros__parameters": {"rate": 30}}},
                               {"/robot/talker": {"ros__parameters": {"frame": "base_link"}}}]
    assert spec.label == "talker-1" and spec.node_name == "/robot/talker"
    assert spec.env == {**ENV, "FROM_LAUNCH": "1", "NODE_ONLY": "1"}
    assert (spec.output, spec.respawn, spec.shutdown_on_exit) == ("log", False, False)
    assert (spec.sigterm_timeout_s, spec.sigkill_timeout_s) == (5.0, 5.0)


@pytest.mark.parametrize("pushes, node_ns, name, expected_ns, params_key", [
    ([], None, "n", None, "/**"),  # no namespace known: wildcard key, no __ns
    ([], None, None, None, "/**"),
    ([], "rel", "n", "/rel", "/rel/n"),
    (["r1"], None, "n", "/r1", "/r1/n"),
    (["r1"], "arm", "n", "/r1/arm", "/r1/arm/n"),
    (["r1", "arm"], None, "n", "/r1/arm", "/r1/arm/n"),  # pushes compose
    (["r1", "/top"], "x", "n", "/top/x", "/top/x/n"),  # absolute push resets
    (["r1"], "/abs", "n", "/abs", "/abs/n"),  # absolute node namespace ignores pushes
    (["r1"], "arm", None, "/r1/arm", "/**"),  # no name: wildcard key
    ([], "/", "n", "/", "/n"),
])
def test_namespaces(plan, ament_prefix, pushes, node_ns, name, expected_ns, params_key) -> None:
    lines = ["launch:"] + [f"- push_ros_namespace: {{namespace: '{ns}'}}" for ns in pushes]
    node = "- node: {pkg: demo_pkg, exec: talker, param: [{name: p, value: 1}]"
    node += "" if node_ns is None else f", namespace: '{node_ns}'"
    node += "" if name is None else f", name: {name}"
    (spec,) = plan("\n".join([*lines, node + "}"])).processes
    ros_args = ros_part(spec.cmd)
    assert (f"__ns:={expected_ns}" in ros_args) == (expected_ns is not None)
    if expected_ns is None:
        assert not any(arg.startswith("__ns:=") for arg in ros_args)
    assert list(params_of(spec)[0]) == [params_key]


def test_group_scopes_configuration_environment_and_namespace(plan, ament_prefix) -> None:
    result = plan("""
        launch:
        - let: {name: who, value: outer}
        - group:
          - let: {name: who, value: inner}
          - set_env: {name: SCOPED, value: '1'}
          - push_ros_namespace: {namespace: g}
          - executable: {cmd: echo $(var who) $(env SCOPED)}
          - node: {pkg: demo_pkg, exec: talker}
        - executable: {cmd: echo $(var who) $(env SCOPED none)}
        - node: {pkg: demo_pkg, exec: talker}
        - group: {scoped: false, children: [{let: {name: who, value: leaked}}]}
        - executable: {cmd: echo $(var who)}
    """)
    echo_in, node_in, echo_out, node_out, echo_leak = result.processes
    assert echo_in.cmd == ("echo", "inner", "1") and echo_in.env["SCOPED"] == "1"
    assert "__ns:=/g" in node_in.cmd
    assert echo_out.cmd == ("echo", "outer", "none") and "SCOPED" not in echo_out.env
    assert not any(arg.startswith("__ns:=") for arg in node_out.cmd)
    assert echo_leak.cmd == ("echo", "leaked")
    assert [s.label for s in result.processes] == [
        "echo-1", "talker-2", "echo-3", "talker-4", "echo-5"]


def test_entities_apply_in_file_order(plan) -> None:
    result = plan("""
        launch:
        - let: {name: v, value: first}
        - executable: {cmd: echo $(var v)}
        - let: {name: v, value: second}
        - executable: {cmd: echo $(var v), name: again}
    """)
    assert [s.cmd for s in result.processes] == [("echo", "first"), ("echo", "second")]
    assert result.processes[1].label == "again-2"


def test_include_passes_arguments_and_leaks_like_ros2_launch(plan, write_launch) -> None:
    write_launch("""
        launch:
        - arg: {name: greeting}
        - arg: {name: target, default: world}
        - let: {name: set_inside, value: 'yes'}
        - executable: {cmd: echo $(var greeting) $(var target) $(filename)}
    """, "sub/child.launch.yaml")
    result = plan("""
        launch:
        - include:
            file: $(dirname)/sub/child.launch.yaml
            arg: [{name: greeting, value: hello}, {name: target, value: $(var greeting)!}]
        - executable: {cmd: echo $(var set_inside) $(var greeting)}
    """)
    child, after = result.processes
    assert child.cmd[:3] == ("echo", "hello", "hello!")
    assert child.cmd[3].endswith("sub/child.launch.yaml")
    # ros2 launch does not scope includes: what the child set is still set after it.
    assert after.cmd == ("echo", "yes", "hello")


def test_included_required_argument_names_file(plan, write_launch) -> None:
    write_launch("launch:\n- arg: {name: robot, description: robot model}\n", "child.launch.yaml")
    with pytest.raises(LaunchError) as info:
        plan("launch:\n- include: {file: $(dirname)/child.launch.yaml}\n")
    text = str(info.value)
    assert "child.launch.yaml: launch/arg#1" in text
    assert "required launch argument 'robot' (robot model) was not provided" in text


def test_include_cycle(plan, write_launch) -> None:
    write_launch("launch:\n- include: {file: $(dirname)/test.launch.yaml}\n", "b.launch.yaml")
    with pytest.raises(LaunchError, match="include cycle"):
        plan("launch:\n- include: {file: $(dirname)/b.launch.yaml}\n")


ARGS = """
    launch:
    - arg: {name: mode, default: sim, choice: [{value: sim}, {value: real}]}
    - arg: {name: rate, default: '$(var base_rate 10)'}
    - executable: {cmd: echo $(var mode) $(var rate)}
"""


@pytest.mark.parametrize("arguments, expected", [
    ({}, ("echo", "sim", "10")),
    ({"mode": "real"}, ("echo", "real", "10")),
    ({"base_rate": "20"}, ("echo", "sim", "20")),  # defaults are substituted
    ({"rate": "5"}, ("echo", "sim", "5")),
])
def test_arguments(plan, arguments, expected) -> None:
    assert plan(ARGS, **arguments).processes[0].cmd == expected


def test_argument_errors_and_undeclared(plan) -> None:
    with pytest.raises(LaunchError, match=r"launch/arg#1: launch argument 'mode' is 'fake', "
                                          r"not one of \['sim', 'real'\]"):
        plan(ARGS, mode="fake")
    with pytest.raises(LaunchError,
                       match="required launch argument 'x' was not provided; pass x:="):
        plan("launch:\n- arg: {name: x}\n")
    result = plan(ARGS, typo="1", base_rate="3", sigterm_timeout="1.0")
    assert result.undeclared_arguments == ["base_rate", "typo"]
    assert result.declared_arguments == ["mode", "rate"]


@pytest.mark.parametrize("attr, value, runs", [
    ("if", "true", True), ("if", "True", True), ("if", "1", True), ("if", "false", False),
    ("if", "0", False), ("unless", "true", False), ("unless", "FALSE", True),
    ("if", " true ", True),
])
def test_conditions(plan, attr: str, value: str, runs: bool) -> None:
    result = plan(f"""
        launch:
        - let: {{name: c, value: '{value}'}}
        - group:
          - executable: {{cmd: echo, {attr}: $(var c)}}
    """)
    assert len(result.processes) == int(runs)


def test_condition_on_arg_and_include(plan) -> None:
    result = plan("""
        launch:
        - arg: {name: x, if: 'false'}
        - include: {file: missing.launch.yaml, unless: 'true'}
        - executable: {cmd: echo}
    """)
    assert result.declared_arguments == [] and len(result.processes) == 1


def test_invalid_condition(plan) -> None:
    with pytest.raises(LaunchError, match="launch/group#1/executable#1: 'if' condition must be "
                                          "true, false, 1 or 0, got 'yes'"):
        plan("launch:\n- group:\n  - executable: {cmd: echo, if: 'yes'}\n")


def test_process_options(plan) -> None:
    result = plan("""
        launch:
        - executable:
            cmd: sleep 1
            cwd: /tmp
            output: $(var out screen)
            respawn: $(var respawn)
            respawn_delay: 0.5
            respawn_max_retries: 2
            on_exit: shutdown
            sigterm_timeout: 1.5
        - executable: {cmd: echo}
    """, respawn="1", sigkill_timeout="0.25")
    first, second = result.processes
    assert (first.cwd, first.output) == ("/tmp", "screen")
    assert (first.respawn, first.respawn_delay_s) == (True, 0.5)
    assert (first.respawn_max_retries, first.shutdown_on_exit) == (2, True)
    # explicit attribute wins; otherwise the sigterm_timeout/sigkill_timeout configurations
    assert (first.sigterm_timeout_s, first.sigkill_timeout_s) == (1.5, 0.25)
    assert (second.respawn_max_retries, second.sigterm_timeout_s) == (-1, 5.0)


@pytest.mark.parametrize("attrs, message", [
    ("output: both_ways", "output must be one of"),
    ("respawn: maybe", "respawn must be true, false, 1 or 0"),
])
def test_process_option_errors(plan, attrs: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        plan(f"launch:\n- executable: {{cmd: echo, {attrs}}}\n")


@pytest.mark.parametrize("node, message", [
    ("{pkg: nope, exec: talker}", "launch/node#1: package 'nope' not found in the ament index"),
    ("{pkg: demo_pkg, exec: missing}", "executable 'missing' not found"),
    ("{pkg: demo_pkg, exec: talker, name: 'bad-name'}", "invalid node name 'bad-name'"),
    ("{pkg: demo_pkg, exec: talker, namespace: '1x'}", "invalid namespace '/1x'"),
    ("{pkg: demo_pkg, exec: talker, param: [{name: p, value: $(var nope)}]}",
     "launch configuration 'nope' does not exist"),
])
def test_node_errors(plan, ament_prefix, node: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        plan(f"launch:\n- node: {node}\n")


def test_missing_parameter_file_is_skipped_with_warning(plan, ament_prefix, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        (spec,) = plan("""
            launch:
            - node: {pkg: demo_pkg, exec: talker, param: [{from: /does/not/exist.yaml}]}
        """).processes
    assert "--params-file" not in spec.cmd
    assert "parameter file is not a file, skipped: /does/not/exist.yaml" in caplog.text


def test_node_without_package_runs_exec_as_given(plan) -> None:
    (spec,) = plan("""
        launch:
        - node: {exec: /opt/bin/tool, exec_name: tool_proc, ros_args: --log-level warn}
    """).processes
    assert spec.cmd == ("/opt/bin/tool", "--ros-args", "--log-level", "warn", "--ros-args")
    assert spec.label == "tool_proc-1"
