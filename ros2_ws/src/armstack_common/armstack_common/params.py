"""Declare a node's parameters once: type, default, description, units, range, choices.

Every armstack node lists its parameters as `ParamSpec`s and hands them to
`NodeParameters`, which declares them with descriptors (so rqt_reconfigure shows
the description and range, and rclpy enforces the range), validates the whole
set through the node's config dataclass at start and on every live update, and
rejects a bad update with the validator's message (Nav2's ParameterHandler
habit). Only this module and the node files touch rclpy; configs stay plain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def check_values(specs: Sequence[ParamSpec], values: dict[str, Any]) -> list[str]:
    """Every reason the given values violate their specs (empty when all are fine)."""
    by_name = {s.name: s for s in specs}
    problems = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is not None and (reason := spec.check(value)) is not None:
            problems.append(reason)
    return problems


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
            node.declare_parameter(spec.name, spec.default, descriptor)
        self.values = {name: node.get_parameter(name).value for name in self._specs}
        problems = check_values(specs, self.values)
        if problems:
            raise ValueError(f"{node.get_name()}: invalid parameters: {'; '.join(problems)}")
        self.config = validate(self.values) if validate else None
        node.add_on_set_parameters_callback(self._on_set)

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
