"""The node's parameters: defaults valid, errors naming the field, config/teleop.yaml in step."""

from __future__ import annotations

import pytest
import yaml

from armstack_common.params import check_values
from armstack_common.paths import config_file
from armstack_teleop.node_config import SOURCES, TELEOP_PARAMS, default_values, teleop_config


@pytest.mark.parametrize("source", SOURCES)
def test_defaults_are_valid_for_every_source(source: str) -> None:
    values = default_values() | {"source": source}
    assert check_values(TELEOP_PARAMS, values) == []
    config = teleop_config(values)
    assert config.source == source
    assert (config.expert is not None) is (source == "expert")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"workspace_min": [0.5, 0.0, 0.0]}, "workspace_min"),
        ({"workspace_max": [0.4, 0.4]}, "workspace_max"),
        ({"gripper_closed": 0.05}, "gripper_closed"),
        ({"task": "   "}, "task"),
        ({"base_frame": ""}, "base_frame"),
        ({"source": "expert", "bin_center": [0.1]}, "bin_center"),
        ({"source": "expert", "expert_linear_speed": 0.0}, "linear_speed"),
        ({"source": "expert", "expert_miss_rate": 1.5}, "miss_rate"),
        ({"source": "expert", "expert_noise_quiet_phases": "descend,grasp"},
         r"quiet_phases \['grasp'\] are not expert phases"),
    ],
)
def test_inconsistent_values_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        teleop_config(default_values() | changes)


@pytest.mark.parametrize(
    ("name", "value"), [("source", "joystick"), ("rate", 0.5), ("max_lead", 0.0), ("expert_ee_source", "tf")]
)
def test_out_of_range_values_are_reported_by_name(name: str, value) -> None:
    problems = check_values(TELEOP_PARAMS, default_values() | {name: value})
    assert len(problems) == 1 and problems[0].startswith(name)


def test_parameter_file_sets_exactly_the_declared_parameters() -> None:
    raw = yaml.safe_load(config_file("teleop.yaml").read_text())
    values = raw["/**/teleop"]["ros__parameters"]
    assert set(values) == {spec.name for spec in TELEOP_PARAMS}
    # The file restates the defaults (a change belongs in both places).
    assert values == default_values()


def test_every_parameter_is_described() -> None:
    for spec in TELEOP_PARAMS:
        assert spec.description.strip(), spec.name


def test_pick_orders_grasp_yaws_and_phases_match_the_expert() -> None:
    from armstack_sim.expert import GRASP_YAWS as EXPERT_YAWS
    from armstack_sim.expert import PICK_ORDERS as EXPERT_ORDERS
    from armstack_sim.expert import Phase

    from armstack_teleop.node_config import EXPERT_PHASES, GRASP_YAWS, PICK_ORDERS

    assert (PICK_ORDERS, GRASP_YAWS) == (EXPERT_ORDERS, EXPERT_YAWS)
    assert EXPERT_PHASES == tuple(p.value for p in Phase if p is not Phase.DONE)
    config = teleop_config(default_values() | {"source": "expert", "expert_pick_order": "nearest",
                                               "expert_grasp_yaw": "cube"})
    assert config.expert.expert.pick_order == "nearest"
    assert config.expert.expert.grasp_yaw == "cube"
    assert teleop_config(default_values() | {"source": "expert"}).expert.expert.grasp_yaw == "azimuth"


def test_deliberate_miss_parameters_reach_the_expert() -> None:
    from armstack_sim.expert import ExpertConfig

    config = teleop_config(default_values() | {"source": "expert", "expert_miss_rate": 0.3,
                                               "expert_miss_offset": 0.02, "expert_seed": 601,
                                               "expert_max_grasp_offset": 0.015})
    expert = config.expert.expert
    assert (expert.miss_rate, expert.miss_offset, expert.max_grasp_offset) == (0.3, 0.02, 0.015)
    assert config.expert.seed == 601
    # record.launch.yaml passes the simulator's seed, where -1 means "draw one".
    assert check_values(TELEOP_PARAMS, default_values() | {"expert_seed": -1}) == []
    # No misses unless asked, and the node's default offset is the expert's.
    default = teleop_config(default_values() | {"source": "expert"}).expert.expert
    assert (default.miss_rate, default.miss_offset, default.max_grasp_offset) == \
        (0.0, ExpertConfig.miss_offset, ExpertConfig.max_grasp_offset)
