"""The node's plain parts: parameters and config, joint_states layout, diagnostics reports."""

import dataclasses

import numpy as np
import pytest
import yaml

from armstack_common import paths
from armstack_common.diagnostics import Level
from armstack_driver.config import PARAMS, DriverConfig
from armstack_driver.joint_state import JointStateLayout, MimicJoint, urdf_mimic_joints
from armstack_driver.loop import LoopStatus
from armstack_driver.reports import DriverReporter

SUMMARY = {"median": 1.0, "p99": 2.0, "max": 3.0, "mean": 1.1}


def _status(**changes) -> LoopStatus:
    base = LoopStatus(
        mode="active", hold_reason="", faults=(), servo_problems={}, last_read_failure="",
        torque_on=True, cycles=1000, missed_cycles=0, read_failures=0, reads_recovered=0,
        commands_taken=10, commands_ignored=0, clipped_goals=0, read_ms=SUMMARY, write_ms=SUMMARY,
        cycle_ms=SUMMARY, period_ms={"median": 5.0, "p99": 5.5, "max": 6.0, "mean": 5.0},
        jitter_ms=SUMMARY, latency_ms=SUMMARY, last_sample_age_s=0.004,
    )
    return dataclasses.replace(base, **changes)


def test_params_and_config_defaults_agree():
    defaults = {spec.name: spec.default for spec in PARAMS}
    assert DriverConfig.from_params(defaults) == DriverConfig()


def test_driver_yaml_sets_only_declared_parameters_with_their_types():
    values = yaml.safe_load((paths.config_dir() / "driver.yaml").read_text())["driver"]["ros__parameters"]
    specs = {spec.name: spec for spec in PARAMS}
    for name, value in values.items():
        assert name in specs, name
        assert type(value) is type(specs[name].default), name
        assert specs[name].check(value) is None
    DriverConfig.from_params({**{s.name: s.default for s in PARAMS}, **values})
    for name in ("rate_warn_fraction", "rate_error_fraction"):  # shown at the spec's default
        assert values[name] == specs[name].default and not specs[name].read_only, name


@pytest.mark.parametrize(("changes", "field"), [
    ({"command_timeout_s": 0.005}, "command_timeout_s"),
    ({"bus_watchdog_ms": 50}, "bus_watchdog_ms"),
    ({"rate_hz": 50.0, "bus_watchdog_ms": 40}, "bus_watchdog_ms"),
    ({"max_step_rad": 0.0}, "max_step_rad"),
    ({"servo_config": ""}, "servo_config"),
    ({"rate_warn_fraction": 0.4}, "rate_error_fraction must be <= rate_warn_fraction"),
    ({"rate_error_fraction": 0.95}, "rate_error_fraction must be <= rate_warn_fraction"),
])
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        DriverConfig(**changes)


def test_mimic_joints_of_the_urdf():
    assert urdf_mimic_joints(paths.urdf_path()) == [MimicJoint("right_finger", "left_finger", 1.0, 0.0)]


def test_layout_appends_mimic_joints():
    layout = JointStateLayout(["a", "finger"], [MimicJoint("twin", "finger", -2.0, 0.1),
                                                MimicJoint("orphan", "elsewhere", 1.0, 0.0)])
    assert layout.names == ["a", "finger", "twin"] and layout.mimic_names == ["twin"]
    np.testing.assert_allclose(layout.positions(np.array([0.3, 0.02])), [0.3, 0.02, 0.06])
    np.testing.assert_allclose(layout.rates(np.array([1.0, 0.5])), [1.0, 0.5, -1.0])


def _by_name(reports):
    return {r.name.split(": ")[1]: r for r in reports}


def test_report_of_an_unconfigured_driver_names_the_setup_error():
    reporter = DriverReporter("driver", "/dev/ttyUSB0", DriverConfig(), setup_error="servo 4: no ping")
    reports = _by_name(reporter.reports(None))
    assert all(r.level == Level.ERROR for r in reports.values())
    assert reports["motion"].message == "not configured: servo 4: no ping"


def test_report_of_a_healthy_loop_is_ok():
    reports = _by_name(DriverReporter("driver", "/dev/pts/3", DriverConfig()).reports(_status()))
    assert {name: r.level for name, r in reports.items()} == {"bus": Level.OK, "loop": Level.OK,
                                                              "motion": Level.OK}
    assert reports["loop"].values["rate_hz"] == "200.000"
    assert reports["bus"].values["sync_read_ms_p99"] == "2.000"


def test_report_of_a_fault_lists_servo_and_reason():
    status = _status(mode="fault", faults=("servo 3 (elbow: hardware error 0x20 (overload))",),
                     servo_problems={3: "elbow: hardware error 0x20 (overload)"})
    reports = _by_name(DriverReporter("driver", "p", DriverConfig()).reports(status))
    assert reports["motion"].level == Level.ERROR
    assert "motion stopped: servo 3 (elbow: hardware error 0x20 (overload))" in reports["motion"].message
    assert reports["bus"].level == Level.ERROR and "servo 3" in reports["bus"].message


def test_rejections_and_missed_cycles_warn_once():
    reporter = DriverReporter("driver", "p", DriverConfig())
    reporter.rejections.add("elbow = nan is not a finite number")
    first = _by_name(reporter.reports(_status(missed_cycles=4)))
    assert first["motion"].level == Level.WARN and "1 joint_command(s) rejected" in first["motion"].message
    assert "4 cycles missed" in first["loop"].message
    second = _by_name(reporter.reports(_status(missed_cycles=4)))
    assert second["motion"].level == Level.OK and second["loop"].level == Level.OK
    assert second["motion"].values["commands_rejected"] == "1"


def test_slow_loop_is_an_error():
    slow = _status(period_ms={"median": 12.0, "p99": 15.0, "max": 20.0, "mean": 12.0})
    reports = _by_name(DriverReporter("driver", "p", DriverConfig()).reports(slow))
    assert reports["loop"].level == Level.ERROR


@pytest.mark.parametrize(("changes", "level"), [
    ({}, Level.OK),  # 190 Hz of 200 is above the default 0.9 floor (180 Hz)
    ({"rate_warn_fraction": 0.98}, Level.WARN),  # below 196 Hz
    ({"rate_warn_fraction": 0.99, "rate_error_fraction": 0.97}, Level.ERROR),  # below 194 Hz
])
def test_rate_thresholds_come_from_the_parameters(changes, level):
    defaults = {spec.name: spec.default for spec in PARAMS}
    reporter = DriverReporter("driver", "p", DriverConfig.from_params(defaults))
    status = _status(period_ms={"median": 1000.0 / 190.0, "p99": 5.5, "max": 6.0, "mean": 5.3})
    reporter.config = DriverConfig.from_params(defaults | changes)  # as on a live update
    loop = _by_name(reporter.reports(status))["loop"]
    assert loop.level == level, loop.message
    assert ("rate_hz" in loop.message) is (level != Level.OK)


def test_a_failed_enable_is_an_error_until_motion_is_enabled():
    reporter = DriverReporter("driver", "p", DriverConfig(),
                              enable_error="cannot enable: servo 4 (forearm_roll): x")
    inactive = _by_name(reporter.reports(_status(mode="inactive")))["motion"]
    assert inactive.level == Level.ERROR and "cannot enable: servo 4" in inactive.message
    assert _by_name(reporter.reports(_status()))["motion"].level == Level.OK
