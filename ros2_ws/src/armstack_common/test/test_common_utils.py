import math

import numpy as np
import pytest

from armstack_common.diagnostics import DiagnosticReport, Level
from armstack_common.params import ParamSpec, check_values, comma_separated, file_section_problems
from armstack_common.stats import RateMeter, RollingStats
from armstack_common.timeutil import sec_to_stamp_fields


def test_rolling_stats_window_keeps_only_recent_samples():
    stats = RollingStats(window=10)
    for v in range(100):
        stats.add(float(v))
    s = stats.summary()
    assert len(stats) == 10
    assert s["max"] == 99.0
    assert s["median"] == pytest.approx(np.median(np.arange(90, 100)))


def test_rolling_stats_empty_is_nan():
    assert math.isnan(RollingStats(3).summary()["median"])
    with pytest.raises(ValueError, match="window"):
        RollingStats(0)


def test_rate_meter_measures_period():
    meter = RateMeter()
    for i in range(51):
        meter.tick(i * 0.02)
    assert meter.rate_hz() == pytest.approx(50.0)


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"rate": 50.0, "mode": "a"}, []),
        ({"rate": 500.0}, ["rate=500.0 is outside [1.0, 200.0]"]),
        ({"mode": "c"}, ["mode='c' is not one of ['a', 'b']"]),
    ],
)
def test_param_spec_checks_range_and_choices(values, expected):
    specs = [
        ParamSpec("rate", 50.0, "loop rate", "Hz", range=(1.0, 200.0)),
        ParamSpec("mode", "a", "mode", choices=("a", "b")),
    ]
    assert check_values(specs, values) == expected


def test_file_section_problems_name_unknown_keys_wrong_types_and_bad_values():
    specs = [ParamSpec("rate", 50.0, "loop rate", "Hz", range=(1.0, 200.0)),
             ParamSpec("mode", "a", "mode", choices=("a", "b"))]
    assert file_section_problems(specs, {"rate": 20.0}) == []
    assert file_section_problems(specs, {"rte": 20.0, "rate": 20, "mode": "c"}) == [
        "rte is not a parameter of the node",
        "rate=20 has type int, the parameter's is float",
        "mode='c' is not one of ['a', 'b']",
    ]


def test_comma_separated_names_are_stripped_and_empty_ones_dropped():
    assert comma_separated(" descend, close,,") == ("descend", "close")
    assert comma_separated("") == ()


def test_diagnostic_report_worst_level_wins():
    report = DiagnosticReport("driver")
    report.check_max("latency_ms", 3.0, warn=2.0, error=5.0, units="ms")
    report.check_min("rate_hz", 10.0, warn=45.0, error=20.0)
    assert report.level == Level.ERROR
    assert "latency_ms 3ms > 2ms" in report.message and "rate_hz 10 < 20" in report.message


def test_latency_check_holds_the_median_to_the_thresholds_and_records_the_p99():
    report = DiagnosticReport("detector")
    report.check_latency({"median": 40.0, "p99": 900.0, "max": 950.0, "mean": 60.0}, 100.0, 300.0)
    assert report.level == Level.OK
    assert report.values == {"latency_median_ms": "40.000", "latency_p99_ms": "900.000"}
    report.check_latency({"median": 150.0, "p99": 160.0, "max": 170.0, "mean": 150.0}, 100.0, 300.0)
    assert report.level == Level.WARN and "latency_median_ms 150ms > 100ms" in report.message


@pytest.mark.parametrize("t", [0.0, 1.5, 1.999999999, 1700000000.123456789])
def test_stamp_fields_are_normalized(t):
    sec, nsec = sec_to_stamp_fields(t)
    assert 0 <= nsec < 1_000_000_000
    assert sec + nsec * 1e-9 == pytest.approx(t, abs=1e-6)
