"""The sim node's parameters, config/sim.yaml, and the diagnostics thresholds they set."""

from __future__ import annotations

import pytest
import yaml
from armstack_common.diagnostics import Level
from armstack_common.params import file_section_problems
from armstack_common.paths import config_file
from armstack_sim.node_config import PARAMS, SimReportLimits, camera_report, physics_report

DEFAULTS = {spec.name: spec.default for spec in PARAMS}
SPECS = {spec.name: spec for spec in PARAMS}
THRESHOLDS = ("rtf_warn_fraction", "rtf_error_fraction", "render_warn_ms", "render_error_ms")
STEP_US = {"median": 300.0, "p99": 900.0}


def limits(**changes) -> SimReportLimits:
    """What the node's validator builds from its parameter values."""
    return SimReportLimits.from_params(DEFAULTS | changes)


def test_sim_yaml_shows_the_live_thresholds_at_their_defaults():
    params = yaml.safe_load(config_file("sim.yaml").read_text())["/**/sim"]["ros__parameters"]
    assert file_section_problems(PARAMS, params) == []
    for name in THRESHOLDS:
        assert params[name] == SPECS[name].default, name  # the spec is the one source
        assert not SPECS[name].read_only, name  # live
        assert SPECS[name].range is not None and SPECS[name].check(SPECS[name].default) is None


def test_default_thresholds_are_the_former_fixed_ones():
    default = limits()
    assert (default.rtf_warn_fraction, default.rtf_error_fraction) == (0.9, 0.5)
    assert default.render_error_ms == 4 * default.render_warn_ms


@pytest.mark.parametrize(("ratio", "factor", "changes", "level"), [
    (0.95, 1.0, {}, Level.OK),
    (0.7, 1.0, {}, Level.WARN),
    (0.4, 1.0, {}, Level.ERROR),
    (0.95, 1.0, {"rtf_warn_fraction": 0.98}, Level.WARN),
    (0.7, 1.0, {"rtf_warn_fraction": 0.6, "rtf_error_fraction": 0.3}, Level.OK),
    (1.5, 2.0, {"rtf_error_fraction": 0.8}, Level.ERROR),  # fractions of real_time_factor
])
def test_real_time_ratio_thresholds_come_from_the_parameters(ratio, factor, changes, level):
    report = physics_report(ratio, factor, STEP_US, limits(**changes))
    assert report.level == level, report.message
    assert ("real_time_ratio" in report.message) is (level != Level.OK)
    assert report.values["step_us_p99"] == "900.000"


@pytest.mark.parametrize(("median_ms", "changes", "level"), [
    (30.0, {}, Level.OK),
    (100.0, {}, Level.WARN),
    (170.0, {}, Level.ERROR),
    (30.0, {"render_warn_ms": 20.0}, Level.WARN),
    (100.0, {"render_error_ms": 80.0}, Level.ERROR),
])
def test_render_thresholds_come_from_the_parameters(median_ms, changes, level):
    report = camera_report("camera_color_optical_frame", 30.0, {"median": median_ms, "p99": 200.0},
                           False, limits(**changes))
    assert report.level == level, report.message
    assert ("render_ms_median" in report.message) is (level != Level.OK)


def test_a_paused_camera_warns():
    report = camera_report("cam", 0.0, {"median": 30.0, "p99": 40.0}, True, limits())
    assert report.level == Level.WARN and "camera_paused" in report.message


@pytest.mark.parametrize(("changes", "message"), [
    ({"rtf_error_fraction": 0.95}, "rtf_error_fraction must be <= rtf_warn_fraction"),
    ({"rtf_warn_fraction": 0.4}, "rtf_error_fraction must be <= rtf_warn_fraction"),
    ({"render_error_ms": 30.0}, "render_error_ms must be >= render_warn_ms"),
    ({"render_warn_ms": 200.0}, "render_error_ms must be >= render_warn_ms"),
])
def test_an_error_threshold_on_the_wrong_side_of_the_warning_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        limits(**changes)
