"""IKStats: the diagnostics status of the ik node."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.diagnostics import Level
from armstack_common.kinematics import IKConfig
from armstack_common.paths import urdf_path
from armstack_ik.controller import ControllerConfig, IKController, Issue, Outcome, Submission
from armstack_ik.ik_stats import IKStats
from armstack_ik.node_config import IK_NODE_PARAMS, ik_node_config

START = np.array([0.0, -0.3, 0.4, 0.0, 0.5, 0.0, 0.01])
DEFAULTS = {s.name: s.default for s in IK_NODE_PARAMS}


def limits(**changes):
    """The SolveLimits the node builds from its parameters (defaults plus `changes`)."""
    return ik_node_config(DEFAULTS | changes).solve_limits


def tracking_controller() -> IKController:
    controller = IKController(urdf_path(), IKConfig(max_restarts=1), ControllerConfig())
    controller.set_measured(controller.joint_names, START, 0.0)
    return controller


def test_report_warns_without_joint_states_then_on_held_commands_once():
    controller = IKController(urdf_path(), IKConfig(max_restarts=1), ControllerConfig())
    stats = IKStats(limits())
    report = stats.report(controller, 0.0, "ik: ik")
    assert report.level is Level.WARN and "no joint_states" in report.message

    controller.set_measured(controller.joint_names, START, 0.0)
    for k in range(10):
        stats.record(
            Submission(Outcome.TRACKING, solve_time=2e-4, position_error=1e-5), 0.02 * k, 0.02 * k - 0.01
        )
        stats.record_latency(3e-4)
    report = stats.report(controller, 0.2, "ik: ik")
    assert report.level is Level.OK, report.message
    assert report.values["tracking"] == "10" and report.values["solve_ms_median"] == "0.200"
    assert report.values["command_age_ms_median"] == "10.000"
    assert float(report.values["command_rate_hz"]) == 50.0

    stats.record(Submission(Outcome.HELD, Issue.UNREACHABLE, "unreachable: far", solve_time=1e-3), 0.3, 0.3)
    report = stats.report(controller, 0.3, "ik: ik")
    assert report.level is Level.WARN and "unreachable: far" in report.message
    assert report.values["count_unreachable"] == "1"
    assert stats.report(controller, 1.3, "ik: ik").level is Level.OK  # reported once


def test_slow_solves_raise_the_level():
    controller = tracking_controller()
    stats = IKStats(limits())
    for k in range(50):
        stats.record(Submission(Outcome.TRACKING, solve_time=0.025), 0.02 * k, 0.02 * k)
    report = stats.report(controller, 1.0, "ik: ik")
    assert report.level is Level.ERROR and "solve_ms_p99" in report.message


@pytest.mark.parametrize(
    "changes, level",
    [
        ({}, Level.OK),  # 3 ms is well inside the 10 / 20 ms defaults
        ({"solve_warn_ms": 2.0}, Level.WARN),
        ({"solve_warn_ms": 1.0, "solve_error_ms": 2.5}, Level.ERROR),
    ],
)
def test_solve_thresholds_come_from_the_parameters(changes, level):
    controller = tracking_controller()
    stats = IKStats(limits())
    for k in range(50):
        stats.record(Submission(Outcome.TRACKING, solve_time=0.003), 0.02 * k, 0.02 * k)
    stats.limits = limits(**changes)  # as the node does on a live parameter update
    report = stats.report(controller, 1.0, "ik: ik")
    assert report.level is level, report.message
    assert ("solve_ms_p99" in report.message) is (level is not Level.OK)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"solve_warn_ms": 30.0}, "solve_error_ms must be >= solve_warn_ms"),
        ({"solve_error_ms": 5.0}, "solve_error_ms must be >= solve_warn_ms"),
    ],
)
def test_an_error_threshold_below_the_warning_is_refused(changes, field):
    with pytest.raises(ValueError, match=field):
        limits(**changes)
