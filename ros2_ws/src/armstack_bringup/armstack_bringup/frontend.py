"""Read a YAML launch file (ROS 2 `launch_yaml` format) into typed, not yet evaluated entities.

The file is the one `ros2 launch` runs: a `launch:` root holding a list of one-key mappings,
`- <tag>: {attributes}`. Attribute types are checked as `launch_yaml` checks them, so a file
accepted here also loads under ros2 launch: text attributes must be YAML strings (write
`default: '30'`, `respawn: 'true'`), timeouts and delays must be YAML floats (`2.0`, not `2`).

Unlike ros2 launch, which ignores unknown attributes, every tag and attribute outside the
supported subset is an error naming the file, the entity and the attribute. The subset is listed
in TAGS below and in LAUNCHER.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from armstack_bringup.errors import LaunchError
from armstack_bringup.substitutions import Subst
from armstack_bringup.substitutions import literal
from armstack_bringup.substitutions import parse_substitution
from armstack_bringup.substitutions import split_command_line
from armstack_bringup.substitutions import unescape


@dataclass(frozen=True)
class Condition:
    """`if:` (negate False) or `unless:` (negate True) with its expression."""

    negate: bool
    expression: Subst


@dataclass(frozen=True)
class ArgDecl:
    where: str
    condition: Condition | None
    name: str
    default: Subst | None
    default_text: str | None  # as written, for --show-args
    description: str
    choices: tuple[str, ...] | None


@dataclass(frozen=True)
class Let:
    where: str
    condition: Condition | None
    name: Subst
    value: Subst


@dataclass(frozen=True)
class SetEnv:
    where: str
    condition: Condition | None
    name: Subst
    value: Subst


@dataclass(frozen=True)
class PushNamespace:
    where: str
    condition: Condition | None
    namespace: Subst


@dataclass(frozen=True)
class Group:
    where: str
    condition: Condition | None
    scoped: bool
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class Include:
    where: str
    condition: Condition | None
    file: Subst
    arguments: tuple[tuple[Subst, Subst], ...]


@dataclass(frozen=True)
class ProcessOptions:
    """Attributes shared by `node` and `executable` (launch's ExecuteProcess)."""

    cwd: Subst | None
    env: tuple[tuple[Subst, Subst], ...]
    output: Subst | None
    respawn: Subst | None
    respawn_delay: float | None
    respawn_max_retries: int | None
    shutdown_on_exit: bool
    sigterm_timeout: float | None
    sigkill_timeout: float | None


@dataclass(frozen=True)
class Executable:
    where: str
    condition: Condition | None
    cmd: tuple[Subst, ...]
    name: Subst | None
    options: ProcessOptions


@dataclass(frozen=True)
class Substituted:
    """A parameter value string holding substitutions: its result is read by YAML rules."""

    subst: Subst


ScalarValue = str | int | float | bool
ParamValue = ScalarValue | Substituted | list[ScalarValue | Substituted]


@dataclass(frozen=True)
class ParamDict:
    """One `param` entity with a name: its (possibly nested, then flattened) values."""

    items: tuple[tuple[Subst, ParamValue], ...]


@dataclass(frozen=True)
class ParamFile:
    path: Subst


@dataclass(frozen=True)
class Node:
    where: str
    condition: Condition | None
    package: Subst | None
    executable: Subst
    name: Subst | None
    namespace: Subst | None
    exec_name: Subst | None
    args: tuple[Subst, ...]
    ros_args: tuple[Subst, ...] | None
    params: tuple[ParamDict | ParamFile, ...]
    remaps: tuple[tuple[Subst, Subst], ...]
    options: ProcessOptions


Entity = ArgDecl | Let | SetEnv | PushNamespace | Group | Include | Executable | Node

# Tags and attributes ros2 launch knows but this launcher deliberately does not implement;
# named in errors so a reader knows the file is valid ROS 2, just outside the subset.
UNSUPPORTED_TAGS = frozenset({
    "append_env", "composable_node", "load_composable_node", "log", "node_container", "reset",
    "reset_env", "ros_timer", "set_parameter", "set_parameters_from_file", "set_remap",
    "set_ros_log_dir", "set_use_sim_time", "shutdown", "timer", "unset_env",
})
_UNSUPPORTED_PROCESS_ATTRS = frozenset({"launch-prefix", "shell", "emulate_tty"})
_UNSUPPORTED_ATTRS = {
    "node": _UNSUPPORTED_PROCESS_ATTRS | {"node-name"},
    "executable": _UNSUPPORTED_PROCESS_ATTRS,
    "group": frozenset({"forwarding", "keep"}),
    "param": frozenset({"allow_substs", "type"}),
    "launch": frozenset({"deprecated"}),
}
_HINTS = {
    ("arg", "choices"): "ros2 launch spells it 'choice: [{value: a}, {value: b}]'",
    ("node", "required"): "use on_exit: shutdown to end the launch when this node exits",
    ("executable", "required"): "use on_exit: shutdown to end the launch when it exits",
    ("executable", "args"): "put the arguments in 'cmd'",
    ("node", "package"): "the attribute is 'pkg'",
    ("node", "executable"): "the attribute is 'exec'",
    ("node", "parameters"): "use 'param: [{name: ..., value: ...}, {from: file.yaml}]'",
    ("node", "remappings"): "use 'remap: [{from: a, to: b}]'",
}

_TYPE_NAMES = {str: "a string", float: "a float", int: "an integer", bool: "a boolean"}


class _Element:
    """One mapping of the YAML tree, with its attributes read once each and checked at the end."""

    def __init__(self, tag: str, data: Any, where: str) -> None:
        self.tag = tag
        self.data = data
        self.where = where
        self.read: set[str] = set()

    def error(self, message: str) -> LaunchError:
        return LaunchError(message, self.where)

    def attrs(self) -> dict[str, Any]:
        return self.data if isinstance(self.data, dict) else {}

    def get(self, name: str, kind: type = str, *, required: bool = False) -> Any:
        attrs = self.attrs()
        if name not in attrs:
            if required:
                raise self.error(f"'{self.tag}' needs the attribute '{name}'")
            return None
        self.read.add(name)
        value = attrs[name]
        # bool is an int in Python; YAML `true` must not pass as an integer.
        wrong_bool = kind in (int, float) and isinstance(value, bool)
        if not isinstance(value, kind) or wrong_bool:
            hint = " (quote it)" if kind is str else ""
            raise self.error(
                f"attribute '{name}' of '{self.tag}' must be {_TYPE_NAMES[kind]}{hint}, "
                f"as ros2 launch requires; got {value!r}")
        return value

    def subst(self, name: str, *, required: bool = False) -> Subst | None:
        value = self.get(name, str, required=required)
        return None if value is None else self.located(parse_substitution, value)

    def located(self, function: Callable[[Any], Any], *args: Any) -> Any:
        try:
            return function(*args)
        except LaunchError as exc:
            raise exc.at(self.where) from None

    def non_negative(self, name: str) -> float | None:
        value = self.get(name, float)
        if value is not None and value < 0.0:
            raise self.error(f"attribute '{name}' of '{self.tag}' must be >= 0.0, got {value}")
        return value

    def entities(self, name: str) -> list[_Element]:
        attrs = self.attrs()
        if name not in attrs:
            return []
        self.read.add(name)
        items = attrs[name]
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items) or not items:
            raise self.error(f"attribute '{name}' of '{self.tag}' must be a list of mappings")
        return [_Element(name, item, f"{self.where}/{name}#{index}")
                for index, item in enumerate(items, 1)]

    def children(self) -> list[_Element]:
        if isinstance(self.data, list):
            items = self.data
        elif isinstance(self.data, dict) and "children" in self.data:
            self.read.add("children")
            items = self.data["children"]
        else:
            raise self.error(f"'{self.tag}' needs a list of entities (or a 'children' list)")
        if not isinstance(items, list):
            raise self.error(f"the entities of '{self.tag}' must be a list")
        result = []
        for index, item in enumerate(items, 1):
            if not isinstance(item, dict) or len(item) != 1:
                raise LaunchError(
                    f"entity #{index} of '{self.tag}' must be a mapping with exactly one key, the "
                    f"tag (e.g. '- node: {{...}}'); got {item!r}", self.where)
            tag, data = next(iter(item.items()))
            result.append(_Element(str(tag), data, f"{self.where}/{tag}#{index}"))
        return result

    def finish(self) -> None:
        """Reject attributes nobody read: never skip part of a launch file silently."""
        for name in self.attrs():
            if name in self.read:
                continue
            if name in _UNSUPPORTED_ATTRS.get(self.tag, ()):
                raise self.error(
                    f"attribute '{name}' of '{self.tag}' is part of ros2 launch but not "
                    "supported by armstack's launcher")
            hint = _HINTS.get((self.tag, name))
            raise self.error(
                f"unknown attribute '{name}' of '{self.tag}'" + (f"; {hint}" if hint else ""))


def _condition(element: _Element) -> Condition | None:
    when = element.subst("if")
    unless = element.subst("unless")
    if when is not None and unless is not None:
        raise element.error("'if' and 'unless' cannot be used together")
    if when is not None:
        return Condition(False, when)
    return None if unless is None else Condition(True, unless)


def _pairs(element: _Element, name: str, first: str,
           second: str) -> tuple[tuple[Subst, Subst], ...]:
    pairs = []
    for item in element.entities(name):
        pairs.append((item.subst(first, required=True), item.subst(second, required=True)))
        item.finish()
    return tuple(pairs)


def _parse_arg(element: _Element) -> ArgDecl:
    # Name, description and choices are plain text with escapes, not substitutions.
    name = unescape(element.get("name", required=True))
    choices = None
    choice_elements = element.entities("choice")
    if choice_elements:
        choices = []
        for choice in choice_elements:
            choices.append(unescape(choice.get("value", required=True)))
            choice.finish()
    return ArgDecl(
        element.where, _condition(element), name, element.subst("default"), element.get("default"),
        unescape(element.get("description") or ""), None if choices is None else tuple(choices))


def _parse_let(element: _Element) -> Let:
    return Let(element.where, _condition(element), element.subst("name", required=True),
               element.subst("value", required=True))


def _parse_set_env(element: _Element) -> SetEnv:
    return SetEnv(element.where, _condition(element), element.subst("name", required=True),
                  element.subst("value", required=True))


def _parse_push_namespace(element: _Element) -> PushNamespace:
    return PushNamespace(element.where, _condition(element),
                         element.subst("namespace", required=True))


def _parse_group(element: _Element) -> Group:
    scoped = element.get("scoped", bool)
    condition = _condition(element)
    entities = tuple(_parse_entity(child) for child in element.children())
    return Group(element.where, condition, True if scoped is None else scoped, entities)


def _parse_include(element: _Element) -> Include:
    return Include(element.where, _condition(element), element.subst("file", required=True),
                   _pairs(element, "arg", "name", "value"))


def _parse_process_options(element: _Element) -> ProcessOptions:
    on_exit = element.get("on_exit")
    if on_exit not in (None, "shutdown"):
        raise element.error(f"on_exit must be 'shutdown' (the only action ros2 launch accepts "
                            f"there), got {on_exit!r}")
    return ProcessOptions(
        cwd=element.subst("cwd"),
        env=_pairs(element, "env", "name", "value"),
        output=element.subst("output"),
        respawn=element.subst("respawn"),
        respawn_delay=element.non_negative("respawn_delay"),
        respawn_max_retries=element.get("respawn_max_retries", int),
        shutdown_on_exit=on_exit == "shutdown",
        sigterm_timeout=element.non_negative("sigterm_timeout"),
        sigkill_timeout=element.non_negative("sigkill_timeout"),
    )


def _parse_executable(element: _Element) -> Executable:
    cmd = element.located(split_command_line, element.get("cmd", required=True))
    if not cmd:
        raise element.error("'cmd' of 'executable' is empty")
    return Executable(element.where, _condition(element), tuple(cmd), element.subst("name"),
                      _parse_process_options(element))


def _param_scalar(element: _Element, value: Any) -> ScalarValue | Substituted:
    if isinstance(value, str):
        subst = element.located(parse_substitution, value)
        text = literal(subst)
        # A string without substitutions stays a string; one with substitutions is read by
        # YAML rules after substitution, as launch_ros does.
        return text if text is not None else Substituted(subst)
    if isinstance(value, (bool, int, float)):
        return value
    raise element.error(f"parameter value must be a scalar or a list of scalars, got {value!r}")


def _param_value(element: _Element, value: Any) -> ParamValue:
    if not isinstance(value, list):
        return _param_scalar(element, value)
    items = [_param_scalar(element, item) for item in value]
    literal_types = {type(item) for item in items if not isinstance(item, Substituted)}
    if len(literal_types) > 1:
        raise element.error(f"parameter list {value!r} mixes types; ros2 launch rejects it")
    return items


def _param_items(element: _Element, prefix: Subst | None) -> list[tuple[Subst, ParamValue]]:
    name = element.subst("name", required=True)
    full_name = name if prefix is None else (*prefix, ".", *name)
    nested = element.entities("param")
    has_value = "value" in element.attrs()
    if has_value == bool(nested):
        raise element.error("a parameter needs either 'value' or nested 'param' entries")
    if nested:
        items = [item for child in nested for item in _param_items(child, full_name)]
    else:
        element.read.add("value")
        items = [(full_name, _param_value(element, element.attrs()["value"]))]
    element.finish()
    return items


def _parse_param(element: _Element) -> ParamDict | ParamFile:
    if "from" in element.attrs():
        if "name" in element.attrs():
            raise element.error("'name' and 'from' of a parameter are mutually exclusive")
        path = element.subst("from")
        element.finish()
        return ParamFile(path)
    return ParamDict(tuple(_param_items(element, None)))


def _parse_node(element: _Element) -> Node:
    args = element.get("args")
    ros_args = element.get("ros_args")
    params = tuple(_parse_param(param) for param in element.entities("param"))
    split = split_command_line
    return Node(
        where=element.where,
        condition=_condition(element),
        package=element.subst("pkg"),
        executable=element.subst("exec", required=True),
        name=element.subst("name"),
        namespace=element.subst("namespace"),
        exec_name=element.subst("exec_name"),
        args=() if args is None else tuple(element.located(split, args)),
        ros_args=None if ros_args is None else tuple(element.located(split, ros_args)),
        params=params,
        remaps=_pairs(element, "remap", "from", "to"),
        options=_parse_process_options(element),
    )


TAGS: dict[str, Callable[[_Element], Entity]] = {
    "arg": _parse_arg,
    "let": _parse_let,
    "set_env": _parse_set_env,
    "push_ros_namespace": _parse_push_namespace,
    "push-ros-namespace": _parse_push_namespace,
    "group": _parse_group,
    "include": _parse_include,
    "executable": _parse_executable,
    "node": _parse_node,
}


def _parse_entity(element: _Element) -> Entity:
    parse = TAGS.get(element.tag)
    if parse is None:
        if element.tag in UNSUPPORTED_TAGS:
            raise element.error(
                f"tag '{element.tag}' is part of ros2 launch but not supported by armstack's "
                f"launcher (supported: {', '.join(sorted(TAGS))})")
        raise element.error(f"unknown tag '{element.tag}' (supported: {', '.join(sorted(TAGS))})")
    if element.tag != "group" and not isinstance(element.data, dict):
        raise element.error(f"'{element.tag}' must be a mapping of attributes")
    entity = parse(element)
    element.finish()
    return entity


def parse_launch_text(text: str, name: str) -> tuple[Entity, ...]:
    """Parse the text of a launch file; `name` labels errors."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LaunchError(f"not valid YAML: {exc}", name) from None
    if not isinstance(tree, dict) or list(tree) != ["launch"]:
        raise LaunchError("a YAML launch file has exactly one root key, 'launch'", name)
    root = _Element("launch", tree["launch"], f"{name}: launch")
    entities = tuple(_parse_entity(child) for child in root.children())
    root.finish()
    return entities


def load_launch_file(path: Path) -> tuple[Entity, ...]:
    """Read and parse a YAML launch file."""
    if path.suffix in (".py", ".xml"):
        raise LaunchError(f"only YAML launch files are supported, not {path.suffix}", str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchError(f"cannot read launch file: {exc.strerror}", str(path)) from None
    return parse_launch_text(text, str(path))
