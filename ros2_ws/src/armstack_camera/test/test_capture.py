"""CaptureLoop with scripted sources: stalls, errors, backoff, end of stream; the clock mapper."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from armstack_camera.capture import CaptureConfig, CaptureLoop
from armstack_camera.clock import ClockMapperConfig, DeviceClockMapper
from armstack_camera.config import PARAMS, CameraNodeConfig
from armstack_camera.source import EndOfStream, Frame, SourceError, SourceInfo
from armstack_common import paths
from armstack_common.params import file_section_problems

FAST = CaptureConfig(stall_timeout_s=0.1, backoff_initial_s=0.02, backoff_max_s=0.08)
INFO = SourceInfo("scripted", "hw0", 4, 3, False, None)


class ScriptedSource:
    """Plays a script of steps: 'frame', 'stall', 'error', 'end'; logs open/close."""

    def __init__(self, script: list[str], log: list[str]) -> None:
        self.script, self.log = list(script), log

    def open(self) -> SourceInfo:
        self.log.append("open")
        if self.script and self.script[0] == "open_error":
            self.script.pop(0)
            raise SourceError("device not found")
        return INFO

    def read(self, timeout_s: float) -> Frame | None:
        step = self.script.pop(0) if self.script else "end"
        if step == "frame":
            return Frame(np.zeros((3, 4, 3), np.uint8), None, time.time(), 0)
        if step == "stall":
            time.sleep(timeout_s)
            return None
        if step == "error":
            raise SourceError("usb transfer failed")
        raise EndOfStream("done")

    def close(self) -> None:
        self.log.append("close")


def run_until_finished(scripts: list[list[str]], on_frame=None, timeout=5.0):
    log: list[str] = []
    frames: list[Frame] = []
    remaining = list(scripts)
    loop = CaptureLoop(
        lambda: ScriptedSource(remaining.pop(0), log), on_frame or frames.append, FAST
    )
    loop.start()
    deadline = time.monotonic() + timeout
    while loop.status().state != "finished" and time.monotonic() < deadline:
        time.sleep(0.01)
    status = loop.status()
    assert loop.stop()
    return status, log, frames


def test_frames_are_handed_on_until_the_end_of_a_finite_source():
    status, log, frames = run_until_finished([["frame", "frame", "frame", "end"]])
    assert status.state == "finished"
    assert (status.frames, status.reconnects, len(frames)) == (3, 0, 3)
    assert log == ["open", "close"]
    assert status.info == INFO and status.last_frame_age_s is not None


@pytest.mark.parametrize(
    "fault, message",
    [("stall", "no frame within 0.1 s"), ("error", "usb transfer failed")],
)
def test_a_stall_or_an_error_reconnects_to_a_fresh_source(fault, message):
    status, log, frames = run_until_finished([["frame", fault], ["frame", "frame", "end"]])
    assert status.state == "finished"
    assert (status.frames, status.reconnects) == (3, 1)
    assert message in status.last_error
    assert log == ["open", "close", "open", "close"]


def test_backoff_doubles_up_to_its_maximum_while_the_device_is_absent():
    t0 = time.monotonic()
    status, log, _ = run_until_finished([["open_error"]] * 5 + [["frame", "end"]])
    elapsed = time.monotonic() - t0
    # Waits 0.02 + 0.04 + 0.08 + 0.08 + 0.08 = 0.30 s before the sixth open.
    assert 0.28 <= elapsed < 1.5
    assert status.reconnects == 5 and "device not found" in status.last_error
    assert log.count("open") == 6 and log.count("close") == 6


def test_a_failing_frame_handler_does_not_reconnect_the_camera():
    def explode(frame):
        raise RuntimeError("publisher gone")

    status, log, _ = run_until_finished([["frame", "frame", "end"]], on_frame=explode)
    assert (status.frames, status.reconnects, status.last_error) == (2, 0, "")


def test_stop_interrupts_the_backoff_and_reports_stuck_threads():
    release = threading.Event()

    class Stuck(ScriptedSource):
        def read(self, timeout_s):
            release.wait()
            return None

    loop = CaptureLoop(
        lambda: ScriptedSource(["open_error"], []), lambda f: None, CaptureConfig(0.1, 30.0, 30.0)
    )
    loop.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    assert loop.stop() and time.monotonic() - t0 < 1.0  # did not sit out the 30 s backoff
    assert loop.status().state == "stopped"

    stuck = CaptureLoop(lambda: Stuck([], []), lambda f: None, FAST)
    stuck.start()
    time.sleep(0.1)
    assert stuck.stop(timeout_s=0.2) is False  # a driver call that never returns
    release.set()


@pytest.mark.parametrize(
    "field, value", [("stall_timeout_s", 0.0), ("backoff_initial_s", -1.0), ("backoff_max_s", 0.01)]
)
def test_capture_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        CaptureConfig(**{field: value})


# ------------------------------------------------------------------------------ clock mapper


def test_offset_converges_to_the_fastest_frame_and_keeps_device_intervals():
    rng = np.random.default_rng(3)
    mapper = DeviceClockMapper()
    true_offset = 1_700_000_000.0
    device = np.arange(200) / 30.0 + 12.5  # 30 fps device clock, s
    latency = 0.004 + rng.exponential(0.003, size=device.size)
    latency[50] = 0.004  # the fastest frame
    arrivals = device + true_offset + latency
    mapped = np.array([mapper.to_host(d, a) for d, a in zip(device, arrivals, strict=True)])
    # After the fastest frame, every stamp is its capture time plus that frame's latency,
    # plus at most the drift allowance accumulated since (1e-4 s per s).
    error = mapped[50:] - (device[50:] + true_offset)
    allowance = 1e-4 * (device[50:] - device[50])
    # 1e-6: epoch seconds in float64 resolve ~0.2 us.
    assert np.all(error >= 0.004 - 1e-6) and np.all(error <= 0.004 + allowance + 1e-6)
    assert np.all(mapped <= device + true_offset + latency + 1e-6)  # never after arrival
    # Intervals stay the device's, up to the allowance a faster frame takes back.
    np.testing.assert_allclose(np.diff(mapped[50:]), 1 / 30.0, atol=allowance[-1] + 1e-6)


def test_device_clock_reset_or_jump_restarts_the_mapping():
    mapper = DeviceClockMapper(ClockMapperConfig(max_latency_s=0.5))
    host = 1000.0
    assert mapper.to_host(50.0, host) == pytest.approx(host)
    assert mapper.to_host(50.1, host + 0.1) == pytest.approx(host + 0.1)
    # The device rebooted: its clock starts again near 0.
    assert mapper.to_host(0.2, host + 5.0) == pytest.approx(host + 5.0)
    # The device clock jumped back in a way that would imply 3 s of latency.
    assert mapper.to_host(1.0, host + 9.0) == pytest.approx(host + 9.0)
    assert mapper.resets == 2


def test_a_slow_device_clock_is_followed_through_the_drift_allowance():
    mapper = DeviceClockMapper(ClockMapperConfig(drift_rate=1e-4))
    # Device runs 50 ppm slow: host time grows 1.00005 s per device second.
    stamps = [mapper.to_host(d, 100.0 + d * 1.00005 + 0.002) for d in np.arange(0, 600, 1.0)]
    errors = np.array(stamps) - (100.0 + np.arange(0, 600, 1.0) * 1.00005)
    assert np.max(np.abs(errors)) < 0.0025


def test_perception_yaml_section_configures_the_node():
    """config/perception.yaml: declared names only, the declared types, valid values."""
    raw = yaml.safe_load(paths.config_file("perception.yaml").read_text())
    section = raw["/**/camera"]["ros__parameters"]
    assert file_section_problems(PARAMS, section) == []
    CameraNodeConfig.from_params({spec.name: spec.default for spec in PARAMS} | section)
