"""Namespaces, names, executable lookup, parameter values and the node command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from armstack_bringup.errors import LaunchError
from armstack_bringup.frontend import Substituted
from armstack_bringup.node_command import evaluate_param_value
from armstack_bringup.node_command import fully_qualified_name
from armstack_bringup.node_command import make_namespace_absolute
from armstack_bringup.node_command import node_command
from armstack_bringup.node_command import params_file_text
from armstack_bringup.node_command import prefix_namespace
from armstack_bringup.node_command import resolve_node_executable
from armstack_bringup.node_command import validate_namespace
from armstack_bringup.node_command import validate_node_name
from armstack_bringup.substitutions import Scope
from armstack_bringup.substitutions import parse_substitution


@pytest.mark.parametrize("base, namespace, expected", [
    (None, None, None),
    ("/robot", None, "/robot"),
    (None, "arm", "arm"),
    ("/robot", "arm", "/robot/arm"),
    ("/robot", "/abs", "/abs"),
    ("/", "arm", "/arm"),
    ("/robot", "arm/", "/robot/arm"),  # trailing "/" dropped
    ("", "arm", "arm"),
    ("/", None, "/"),
])
def test_prefix_namespace(base, namespace, expected) -> None:
    assert prefix_namespace(base, namespace) == expected


@pytest.mark.parametrize("namespace, expected", [
    (None, None), ("a", "/a"), ("/a", "/a"), ("", "/")])
def test_make_namespace_absolute(namespace, expected) -> None:
    assert make_namespace_absolute(namespace) == expected


@pytest.mark.parametrize("name, valid", [
    ("talker", True), ("_t2", True), ("2t", False), ("a-b", False), ("a/b", False), ("", False)])
def test_validate_node_name(name: str, valid: bool) -> None:
    if valid:
        validate_node_name(name)
    else:
        with pytest.raises(LaunchError, match="invalid node name"):
            validate_node_name(name)


@pytest.mark.parametrize("namespace, valid", [
    ("/", True), ("/a", True), ("/a/b_2", True), ("/a/", False), ("//a", False), ("/1a", False),
    ("a", False), ("/a b", False)])
def test_validate_namespace(namespace: str, valid: bool) -> None:
    if valid:
        validate_namespace(namespace)
    else:
        with pytest.raises(LaunchError, match="invalid namespace"):
            validate_namespace(namespace)


@pytest.mark.parametrize("namespace, name, expected", [("/", "n", "/n"), ("/a/b", "n", "/a/b/n")])
def test_fully_qualified_name(namespace: str, name: str, expected: str) -> None:
    assert fully_qualified_name(namespace, name) == expected


def test_resolve_node_executable(ament_prefix: Path) -> None:
    expected = str(ament_prefix / "lib/demo_pkg/talker")
    assert resolve_node_executable("demo_pkg", "talker") == expected


@pytest.mark.parametrize("package, executable, message", [
    ("nope", "talker", "package 'nope' not found in the ament index"),
    ("no_lib_pkg", "talker", "libexec directory"),
    ("demo_pkg", "missing", "executable 'missing' not found"),
    ("demo_pkg", "not_executable", "executable 'not_executable' not found"),
])
def test_resolve_node_executable_errors(ament_prefix: Path, package: str, executable: str,
                                        message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        resolve_node_executable(package, executable)


SCOPE = Scope({"int": "30", "float": "0.5", "word": "base_link", "bool": "True", "list": "[1, 2]",
               "empty": "", "quoted": "'30'", "map": "{a: 1}", "mixed": "[1, a]", "bad": "[1"},
              {})


@pytest.mark.parametrize("value, expected", [
    ("30", "30"),  # a literal string stays a string
    (30, 30),
    (True, True),
    ([1.0, 2.0], [1.0, 2.0]),
    (Substituted(parse_substitution("$(var int)")), 30),  # substituted: read as YAML
    (Substituted(parse_substitution("$(var float)")), 0.5),
    (Substituted(parse_substitution("$(var word)")), "base_link"),
    (Substituted(parse_substitution("$(var bool)")), True),
    (Substituted(parse_substitution("$(var list)")), [1, 2]),
    (Substituted(parse_substitution("$(var empty)")), ""),
    (Substituted(parse_substitution("$(var quoted)")), "30"),
    (["a", Substituted(parse_substitution("$(var word)"))], ["a", "base_link"]),
])
def test_evaluate_param_value(value, expected) -> None:
    result = evaluate_param_value(value, SCOPE, "p")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value, message", [
    (Substituted(parse_substitution("$(var map)")), "not a scalar"),
    (Substituted(parse_substitution("$(var mixed)")), "not a scalar"),
    (Substituted(parse_substitution("$(var bad)")), "cannot read"),
    ([1, Substituted(parse_substitution("$(var word)"))], "mix types"),
    ([Substituted(parse_substitution("$(var list)"))], "cannot be a list"),
])
def test_evaluate_param_value_errors(value, message: str) -> None:
    with pytest.raises(LaunchError, match=f"parameter 'p': .*{message}"):
        evaluate_param_value(value, SCOPE, "p")


def test_params_file_text_is_ros_parameter_yaml() -> None:
    text = params_file_text("/ns/node", {"rate": 30, "gains.p": 1.5, "frame": "30"})
    assert yaml.safe_load(text) == {
        "/ns/node": {"ros__parameters": {"rate": 30, "gains.p": 1.5, "frame": "30"}}}


def test_node_command_order() -> None:
    cmd = node_command("/x/talker", ["--a"], ["--log-level", "debug"], "talker", "/ns",
                       ["/p1.yaml", "/p2.yaml"], [("in", "out"), ("a", "/b")])
    assert cmd == ["/x/talker", "--a", "--ros-args", "--log-level", "debug", "--ros-args",
                   "-r", "__node:=talker", "-r", "__ns:=/ns", "--params-file", "/p1.yaml",
                   "--params-file", "/p2.yaml", "-r", "in:=out", "-r", "a:=/b"]


def test_node_command_minimal() -> None:
    assert node_command("/x/t", [], None, None, None, [], []) == ["/x/t", "--ros-args"]
