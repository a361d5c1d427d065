"""Reading YAML launch files into entities: tags, attribute types, strictness."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from armstack_bringup.errors import LaunchError
from armstack_bringup.frontend import ArgDecl
from armstack_bringup.frontend import Condition
from armstack_bringup.frontend import Executable
from armstack_bringup.frontend import Group
from armstack_bringup.frontend import Include
from armstack_bringup.frontend import Let
from armstack_bringup.frontend import Node
from armstack_bringup.frontend import ParamDict
from armstack_bringup.frontend import ParamFile
from armstack_bringup.frontend import PushNamespace
from armstack_bringup.frontend import SetEnv
from armstack_bringup.frontend import Substituted
from armstack_bringup.frontend import load_launch_file
from armstack_bringup.frontend import parse_launch_text
from armstack_bringup.substitutions import Call
from armstack_bringup.substitutions import parse_substitution as ps


def parse(text: str):
    return parse_launch_text(textwrap.dedent(text), "f.yaml")


def test_all_tags() -> None:
    entities = parse("""
        launch:
        - arg: {name: mode, default: sim, description: which world,
                choice: [{value: sim}, {value: real}]}
        - let: {name: rate, value: '30'}
        - set_env: {name: FOO, value: $(var rate)}
        - push-ros-namespace: {namespace: r1}
        - group:
          - push_ros_namespace: {namespace: arm}
        - group: {scoped: false, children: [{let: {name: a, value: b}}]}
        - include: {file: other.launch.yaml, arg: [{name: x, value: '1'}]}
        - executable: {cmd: echo hi, name: greeter}
        - node: {pkg: demo_pkg, exec: talker}
    """)
    kinds = [type(e) for e in entities]
    assert kinds == [ArgDecl, Let, SetEnv, PushNamespace, Group, Group, Include, Executable, Node]
    arg = entities[0]
    assert (arg.name, arg.default, arg.description, arg.choices) == (
        "mode", ("sim",), "which world", ("sim", "real"))
    assert entities[4].scoped and isinstance(entities[4].entities[0], PushNamespace)
    assert not entities[5].scoped and isinstance(entities[5].entities[0], Let)
    assert entities[6].arguments == ((("x",), ("1",)),)
    assert entities[7].cmd == (("echo",), ("hi",))
    assert entities[2].value == (Call("var", (("rate",),)),)


def test_node_attributes() -> None:
    (node,) = parse("""
        launch:
        - node:
            pkg: demo_pkg
            exec: talker
            name: talker
            namespace: ns
            exec_name: speaker
            args: --a 1
            ros_args: --log-level debug
            output: screen
            respawn: 'true'
            respawn_delay: 2.0
            respawn_max_retries: 3
            on_exit: shutdown
            sigterm_timeout: 1.0
            sigkill_timeout: 0.5
            cwd: /tmp
            param:
            - {name: plain, value: text}
            - {name: number, value: 1.5}
            - {name: subst, value: $(var r)}
            - {name: items, value: [1, 2, 3]}
            - {name: group, param: [{name: inner, param: [{name: leaf, value: true}]}]}
            - {from: $(var f)}
            remap: [{from: a, to: b}]
            env: [{name: K, value: V}]
            if: 'true'
    """)
    assert isinstance(node, Node)
    assert node.args == (("--a",), ("1",))
    assert node.ros_args == (("--log-level",), ("debug",))
    assert node.condition == Condition(False, ("true",))
    opts = node.options
    assert (opts.respawn, opts.respawn_delay, opts.respawn_max_retries) == (("true",), 2.0, 3)
    assert (opts.shutdown_on_exit, opts.sigterm_timeout, opts.sigkill_timeout) == (True, 1.0, 0.5)
    assert opts.env == ((("K",), ("V",)),) and opts.cwd == ("/tmp",)
    items = [p.items for p in node.params[:5]]
    assert items[0] == ((("plain",), "text"),)  # literal string stays a string
    assert items[1] == ((("number",), 1.5),)
    assert items[2] == ((("subst",), Substituted(ps("$(var r)"))),)
    assert items[3] == ((("items",), [1, 2, 3]),)
    assert items[4] == ((("group", ".", "inner", ".", "leaf"), True),)  # nested names flatten
    assert node.params[5] == ParamFile(ps("$(var f)"))
    assert isinstance(node.params[0], ParamDict)
    assert node.remaps == ((("a",), ("b",)),)


def error_of(text: str) -> str:
    with pytest.raises(LaunchError) as info:
        parse(text)
    return str(info.value)


@pytest.mark.parametrize("body, where, message", [
    # unsupported or unknown tags, named with their place in the file
    ("- timer: {period: 1.0}", "launch/timer#1",
     "tag 'timer' is part of ros2 launch but not supported"),
    ("- nodes: {}", "launch/nodes#1", "unknown tag 'nodes'"),
    # unsupported or unknown attributes
    ("- node: {exec: t, launch-prefix: gdb}", "launch/node#1",
     "attribute 'launch-prefix' of 'node' is part of ros2 launch but not supported"),
    ("- node: {exec: t, required: 'true'}", "launch/node#1",
     "unknown attribute 'required' of 'node'; use on_exit: shutdown"),
    ("- arg: {name: a, choices: [a]}", "launch/arg#1", "ros2 launch spells it 'choice"),
    ("- group: {forwarding: false, children: []}", "launch/group#1",
     "'forwarding' of 'group' is part of ros2 launch but not supported"),
    ("- node: {exec: t, param: [{name: p, value: 1, type: int}]}", "launch/node#1/param#1",
     "attribute 'type' of 'param' is part of ros2 launch"),
    ("- node: {exec: t, remap: [{from: a, to: b, if: 'true'}]}", "launch/node#1/remap#1",
     "unknown attribute 'if' of 'remap'"),
    # attribute types as launch_yaml checks them
    ("- arg: {name: a, default: 30}", "launch/arg#1",
     "'default' of 'arg' must be a string (quote it)"),
    ("- node: {exec: t, respawn: true}", "launch/node#1", "'respawn' of 'node' must be a string"),
    ("- node: {exec: t, respawn_delay: 2}", "launch/node#1",
     "'respawn_delay' of 'node' must be a float"),
    ("- node: {exec: t, respawn_delay: -1.0}", "launch/node#1", "must be >= 0.0"),
    ("- node: {exec: t, respawn_max_retries: true}", "launch/node#1", "must be an integer"),
    ("- group: {scoped: 'yes', children: []}", "launch/group#1",
     "'scoped' of 'group' must be a boolean"),
    # structure
    ("- node: {pkg: p}", "launch/node#1", "'node' needs the attribute 'exec'"),
    ("- node: {exec: t, on_exit: restart}", "launch/node#1", "on_exit must be 'shutdown'"),
    ("- node: {exec: t, if: 'true', unless: 'false'}", "launch/node#1", "cannot be used together"),
    ("- node: {exec: t, param: [{name: p}]}", "launch/node#1/param#1", "either 'value' or nested"),
    ("- node: {exec: t, param: [{name: p, from: f}]}", "launch/node#1/param#1",
     "mutually exclusive"),
    ("- node: {exec: t, param: [{name: p, value: [1, a]}]}", "launch/node#1/param#1",
     "mixes types"),
    ("- node: {exec: t, param: [{name: p, value: {a: 1}}]}", "launch/node#1/param#1",
     "must be a scalar or a list"),
    ("- node: {exec: t, remap: {from: a, to: b}}", "launch/node#1", "must be a list of mappings"),
    ("- node: {exec: t}\n  let: {name: a, value: b}", "launch", "exactly one key"),
    ("- executable: {cmd: ''}", "launch/executable#1", "'cmd' of 'executable' is empty"),
    ("- let: {name: a, value: $(eval 1)}", "launch/let#1", "$(eval) is part of ros2 launch"),
])
def test_errors_name_file_entity_and_cause(body: str, where: str, message: str) -> None:
    text = error_of("launch:\n" + textwrap.indent(body, ""))
    assert text.startswith(f"f.yaml: {where}: "), text
    assert re.search(re.escape(message), text), text


@pytest.mark.parametrize("text, message", [
    ("node: {exec: t}", "exactly one root key, 'launch'"),
    ("launch: [", "not valid YAML"),
    ("launch: {deprecated: old, children: []}", "'deprecated' of 'launch' is part of ros2 launch"),
])
def test_root_errors(text: str, message: str) -> None:
    assert message in error_of(text)


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="only YAML launch files"):
        load_launch_file(tmp_path / "x.launch.py")
    with pytest.raises(LaunchError, match="cannot read launch file"):
        load_launch_file(tmp_path / "missing.launch.yaml")


def test_escaped_arg_text_is_literal() -> None:
    (arg,) = parse(r"""
        launch:
        - arg: {name: a, description: 'costs \$(var x)'}
    """)
    assert arg.description == "costs $(var x)"
    assert arg.default is None
