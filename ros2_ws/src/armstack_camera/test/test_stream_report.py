"""The camera node's stream checks: frame age and rate thresholds from its live parameters."""

from __future__ import annotations

import pytest
import yaml

from armstack_camera.capture import CaptureStatus
from armstack_camera.config import PARAMS, CameraNodeConfig
from armstack_camera.stream_report import check_stream
from armstack_common import paths
from armstack_common.diagnostics import DiagnosticReport, Level

DEFAULTS = {spec.name: spec.default for spec in PARAMS}
THRESHOLDS = ("frame_age_warn_s", "min_rate_warn_fraction", "min_rate_error_fraction")


def config(**changes) -> CameraNodeConfig:
    """The node's config from its parameter values (defaults plus `changes`)."""
    return CameraNodeConfig.from_params(DEFAULTS | changes)


def checked(age_s: float | None, rate_hz: float, cfg: CameraNodeConfig, state="streaming"):
    status = CaptureStatus(state, frames=100, reconnects=0, last_error="", last_frame_age_s=age_s,
                           info=None)
    report = DiagnosticReport("camera: capture")
    check_stream(report, status, rate_hz, cfg)
    return report


def test_default_thresholds_are_the_former_derived_ones():
    cfg = config()
    assert cfg.frame_age_warn_s == cfg.stall_timeout_s / 2
    assert cfg.min_rate_error_fraction == cfg.min_rate_warn_fraction / 2


def test_perception_yaml_shows_the_live_thresholds_at_their_defaults():
    section = yaml.safe_load(paths.config_file("perception.yaml").read_text())["/**/camera"]
    specs = {spec.name: spec for spec in PARAMS}
    for name in THRESHOLDS:
        value = section["ros__parameters"][name]
        assert value == specs[name].default and type(value) is float, name  # the spec is the source
        assert not specs[name].read_only, name


@pytest.mark.parametrize(("age_s", "changes", "level"), [
    (0.03, {}, Level.OK),
    (0.7, {}, Level.WARN),  # past the default 0.5 s
    (1.2, {}, Level.ERROR),  # past stall_timeout_s
    (0.3, {"frame_age_warn_s": 0.2}, Level.WARN),
    (0.7, {"frame_age_warn_s": 0.9}, Level.OK),
    (0.7, {"stall_timeout_s": 0.6, "frame_age_warn_s": 0.3}, Level.ERROR),
])
def test_frame_age_thresholds_come_from_the_parameters(age_s, changes, level):
    report = checked(age_s, 30.0, config(**changes))
    assert report.level == level, report.message
    assert ("last_frame_age_s" in report.message) is (level != Level.OK)


@pytest.mark.parametrize(("rate_hz", "changes", "level"), [
    (29.0, {}, Level.OK),
    (20.0, {}, Level.WARN),  # below 0.8 * 30 Hz
    (10.0, {}, Level.ERROR),  # below 0.4 * 30 Hz
    (29.0, {"min_rate_warn_fraction": 0.99}, Level.WARN),
    (20.0, {"min_rate_error_fraction": 0.7}, Level.ERROR),
    (10.0, {"min_rate_warn_fraction": 0.3, "min_rate_error_fraction": 0.1}, Level.OK),
])
def test_rate_thresholds_come_from_the_parameters(rate_hz, changes, level):
    report = checked(0.03, rate_hz, config(**changes))
    assert report.level == level, report.message
    assert ("rate_hz" in report.message) is (level != Level.OK)


def test_rate_is_not_judged_while_not_streaming_or_stalled():
    assert checked(1.5, 0.0, config()).message.count("rate_hz") == 0  # stalled: the age says it
    assert checked(0.03, 0.0, config(), state="finished").level == Level.WARN


@pytest.mark.parametrize(("changes", "message"), [
    ({"frame_age_warn_s": 2.0}, "frame_age_warn_s must be <= stall_timeout_s"),
    ({"stall_timeout_s": 0.3}, "frame_age_warn_s must be <= stall_timeout_s"),
    ({"min_rate_error_fraction": 0.9}, "min_rate_error_fraction must be <= min_rate_warn_fraction"),
    ({"min_rate_warn_fraction": 0.2}, "min_rate_error_fraction must be <= min_rate_warn_fraction"),
])
def test_an_error_threshold_inside_the_warning_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)
