"""The parameter specs of both nodes, config/ik.yaml, and their validation."""

from __future__ import annotations

import pytest
import yaml
from armstack_common.kinematics import IKConfig
from armstack_common.params import check_values
from armstack_common.paths import config_file
from armstack_ik.controller import ControllerConfig
from armstack_ik.node_config import (
    IK_NODE_PARAMS,
    STATE_PUBLISHER_PARAMS,
    ik_node_config,
    state_publisher_config,
)

DEFAULTS = {s.name: s.default for s in IK_NODE_PARAMS}


@pytest.fixture(scope="module")
def ik_yaml() -> dict:
    return yaml.safe_load(config_file("ik.yaml").read_text())


def test_spec_defaults_are_the_dataclass_defaults():
    cfg = ik_node_config(DEFAULTS)
    assert cfg.controller == ControllerConfig()
    # Only the restart budget differs from the library default: a 50 Hz loop cannot
    # afford 30 restarts on an unreachable target.
    assert cfg.ik == IKConfig(max_restarts=4)


@pytest.mark.parametrize(
    "section, specs, build",
    [
        ("/**/ik", IK_NODE_PARAMS, ik_node_config),
        ("/**/state_publisher", STATE_PUBLISHER_PARAMS, state_publisher_config),
    ],
)
def test_yaml_sections_use_declared_names_and_valid_values(ik_yaml, section, specs, build):
    params = ik_yaml[section]["ros__parameters"]
    names = {s.name for s in specs}
    assert set(params) <= names, f"undeclared keys: {set(params) - names}"
    for spec in specs:
        if spec.name in params:
            assert type(params[spec.name]) is type(spec.default), spec.name  # the declared type
    values = {s.name: s.default for s in specs} | params
    assert check_values(specs, values) == []
    build(values)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"publish_mode": "sometimes"}, "publish_mode"),
        ({"position_weight": 0.0, "orientation_weights": [0.0, 0.0, 0.0]}, "all zero"),
        ({"orientation_weights": [1.0, 1.0]}, "orientation_weights"),
        ({"arm_acceleration": [8.0, 0.0, 8.0, 8.0, 8.0, 8.0]}, "arm_acceleration"),
        ({"velocity_scale": 0.0}, "velocity_scale"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ik_node_config(DEFAULTS | changes)


def test_yaml_shows_the_diagnostics_thresholds_at_their_defaults(ik_yaml):
    params = ik_yaml["/**/ik"]["ros__parameters"]
    specs = {s.name: s for s in IK_NODE_PARAMS}
    for name in ("solve_warn_ms", "solve_error_ms"):
        assert params[name] == specs[name].default, name  # the spec is the one source
        assert not specs[name].read_only, name  # live: takes effect at the next report


def test_ranges_are_declared_for_numeric_scalars():
    for spec in (*IK_NODE_PARAMS, *STATE_PUBLISHER_PARAMS):
        assert spec.description
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.range is not None, spec.name
            assert spec.check(spec.default) is None, spec.name
