"""Declare a node's parameters once: type, default, description, units, range, choices.

Every armstack node lists its parameters as `ParamSpec`s and hands them to
`NodeParameters`, which declares them with descriptors (so rqt_reconfigure shows
the description and range, and rclpy enforces the range), validates the whole
set through the node's config dataclass at start and on every live update, and
rejects a bad update with the validator's message (Nav2's ParameterHandler
habit). A bad value at start is a ValueError naming the parameter and the
parameter file (or -p) that set it. Only this module and the node files touch
rclpy; configs stay plain.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default fixes the type (bool, int, float, str or lists of them)."""

    name: str
    default: Any
    description: str
    units: str = ""
    range: tuple[float, float] | None = None  # inclusive
    choices: tuple[str, ...] | None = None
    read_only: bool = False  # takes effect only at start (e.g. a device path)

    def check(self, value: Any) -> str | None:
        """A reason the value is unacceptable, or None."""
        if self.choices is not None and value not in self.choices:
            return f"{self.name}={value!r} is not one of {list(self.choices)}"
        if self.range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = self.range
            if not lo <= value <= hi:
                return f"{self.name}={value!r} is outside [{lo}, {hi}]"
        return None

    def full_description(self) -> str:
        text = self.description
        if self.units:
            text += f" [{self.units}]"
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        return text


def comma_separated(text: str) -> tuple[str, ...]:
    """The names in "a, b,c" (a string parameter or argument that lists names): stripped,
    empty ones dropped, so "" is none."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def check_values(specs: Sequence[ParamSpec], values: dict[str, Any]) -> list[str]:
    """Every reason the given values violate their specs (empty when all are fine)."""
    by_name = {s.name: s for s in specs}
    problems = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is not None and (reason := spec.check(value)) is not None:
            problems.append(reason)
    return problems


def file_section_problems(specs: Sequence[ParamSpec], section: dict[str, Any]) -> list[str]:
    """Every reason a parameter file's `ros__parameters` for a node declaring `specs` would not
    load: names the node does not declare, values of another type than the default's (rclpy
    refuses them, e.g. 1 for a double) and values out of range or choices."""
    by_name = {s.name: s for s in specs}
    problems = [f"{name} is not a parameter of the node" for name in section if name not in by_name]
    for name, value in section.items():
        if name in by_name and type(value) is not type(by_name[name].default):
            problems.append(f"{name}={value!r} has type {type(value).__name__}, the "
                            f"parameter's is {type(by_name[name].default).__name__}")
    return problems + check_values(specs, section)


def _node_key_matches(key: str, node_name: str) -> bool:
    """Whether a parameter file's top-level key (`/**`, `/**/policy`, `policy`, `/ns/*`)
    applies to the fully qualified node name (`/policy`, `/ns/policy`)."""
    pattern = re.escape("/" + key.lstrip("/"))
    pattern = pattern.replace(re.escape("/**"), "(/[^/]+)*").replace(re.escape("*"), "[^/]*")
    return re.fullmatch(pattern, node_name) is not None


def _flatten(params: Any, prefix: str = "") -> set[str]:
    """Dotted names of a ros__parameters mapping (nested mappings are dotted names)."""
    if not isinstance(params, dict):
        return {prefix} if prefix else set()
    names: set[str] = set()
    for key, value in params.items():
        names |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return names


def parameter_sources(argv: Sequence[str], node_name: str, name: str) -> list[str]:
    """Where a ROS command line sets parameter `name` of node `node_name` (fully qualified):
    each `--params-file` that sets it for that node, and `-p name:=value` ("-p on the
    command line"), in command-line order (the last one wins). Unreadable files are skipped."""
    import yaml

    sources = []
    tokens = list(argv)
    for flag, value in zip(tokens, tokens[1:], strict=False):
        if flag == "--params-file":
            try:
                data = yaml.safe_load(Path(value).read_text())
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(data, dict):
                continue
            for key, entry in data.items():
                if (isinstance(entry, dict) and _node_key_matches(str(key), node_name)
                        and name in _flatten(entry.get("ros__parameters"))):
                    sources.append(value)
                    break
        elif flag in ("-p", "--param") and value.split(":=", 1)[0].split(":")[-1] == name:
            sources.append("-p on the command line")
    return sources


class NodeParameters:
    """Declares `specs` on `node`; `values` always holds the accepted set.

    `validate(values)` builds the node's config from a full set of values and
    raises ValueError naming the field when the set is inconsistent; it runs at
    start (raising, so a bad YAML stops the node with the key named) and on
    each live update (rejecting the update, keeping the old values).
    `on_update(values)` is called after an accepted live update.
    """

    def __init__(
        self,
        node: Any,
        specs: Sequence[ParamSpec],
        validate: Callable[[dict[str, Any]], Any] | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from rcl_interfaces.msg import (
            FloatingPointRange,
            IntegerRange,
            ParameterDescriptor,
        )
        from rclpy.exceptions import ParameterException

        self._node = node
        self._specs = {s.name: s for s in specs}
        self._validate = validate
        self._on_update = on_update
        for spec in specs:
            descriptor = ParameterDescriptor(
                description=spec.full_description(), read_only=spec.read_only
            )
            if spec.range is not None and not isinstance(spec.default, bool):
                lo, hi = spec.range
                if isinstance(spec.default, int):
                    descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
                elif isinstance(spec.default, float):
                    descriptor.floating_point_range = [
                        FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
                    ]
            if spec.choices:
                descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
            try:
                node.declare_parameter(spec.name, spec.default, descriptor)
            except ParameterException as exc:  # out of its range, or of the wrong type
                raise ValueError(f"invalid parameter {spec.name}: {exc}"
                                 f"{self._where([spec.name])}") from exc
        self.values = {name: node.get_parameter(name).value for name in self._specs}
        problems = check_values(specs, self.values)
        if problems:
            bad = [s.name for s in specs if s.check(self.values[s.name]) is not None]
            raise ValueError(f"{node.get_name()}: invalid parameters: {'; '.join(problems)}"
                             f"{self._where(bad)}")
        try:
            self.config = validate(self.values) if validate else None
        except ValueError as exc:
            named = [n for n in self._specs if re.search(rf"\b{re.escape(n)}\b", str(exc))]
            raise ValueError(f"{exc}{self._where(named)}") from exc
        node.add_on_set_parameters_callback(self._on_set)

    def _where(self, names: Sequence[str]) -> str:
        """' (x from FILE; ...)' for the parameters a start-up error names, so the message
        points at the file to fix; empty when only defaults were involved."""
        node_name = self._node.get_fully_qualified_name()
        parts = [f"{n} from {', '.join(src)}" for n in names
                 if (src := parameter_sources(sys.argv, node_name, n))]
        return f" ({'; '.join(parts)})" if parts else ""

    def _on_set(self, params: list[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        proposed = dict(self.values)
        for p in params:
            if p.name in self._specs:
                proposed[p.name] = p.value
        problems = check_values(list(self._specs.values()), proposed)
        config = None
        if not problems and self._validate is not None:
            try:
                config = self._validate(proposed)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            reason = "; ".join(problems)
            self._node.get_logger().warning(f"rejected parameter update: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        self.values = proposed
        if config is not None:
            self.config = config
        if self._on_update is not None:
            self._on_update(proposed)
        return SetParametersResult(successful=True)
