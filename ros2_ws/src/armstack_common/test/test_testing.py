"""The node-test helpers: process runner, domain ids, and the probe's spin/raise contract."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from armstack_common.testing import NodeProcess, Probe, node_command, ros_domain_env, unique_domain_id


def python(code: str, log: Path, **kwargs: Any) -> NodeProcess:
    return NodeProcess([sys.executable, "-c", code], [], log, **kwargs)


def wait_for_log(proc: NodeProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)


def waits_for_sigint(on_sigint: str) -> str:
    """Code that prints 'ready', then sleeps; `on_sigint` is its SIGINT handler."""
    return ("import signal, sys, time\n"
            f"signal.signal(signal.SIGINT, {on_sigint})\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")


def test_unique_domain_id_stays_in_range_and_separates_modules():
    ids = {unique_domain_id(f"test_module_{i}") for i in range(200)}
    assert ids <= set(range(1, 101))
    assert len(ids) > 50  # the module's hash spreads them
    assert unique_domain_id("a") == unique_domain_id("a")
    assert {unique_domain_id(f"m{i}", base=100) for i in range(50)} <= set(range(100, 200))


def test_node_command_falls_back_to_the_module():
    assert node_command("not_a_package_xyz", "some_node") == [
        sys.executable, "-m", "not_a_package_xyz.some_node"]


def test_runner_logs_output_and_returns_the_exit_code(tmp_path):
    proc = python("print('hello'); raise SystemExit(7)", tmp_path / "out.log")
    assert proc.wait(10.0) == 7
    assert not proc.alive()
    assert proc.stop() == 7
    assert proc.log() == "hello\n"  # still readable once stop closed the file


def test_stop_sends_sigint_first(tmp_path):
    proc = python(waits_for_sigint("lambda *_: sys.exit(3)"), tmp_path / "out.log")
    wait_for_log(proc, "ready")
    assert proc.stop() == 3


def test_stop_kills_a_process_that_ignores_sigint(tmp_path):
    proc = python(waits_for_sigint("signal.SIG_IGN"), tmp_path / "out.log", stop_timeout=0.5)
    wait_for_log(proc, "ready")
    assert proc.stop() == -signal.SIGKILL


def test_log_mode_append_keeps_earlier_output(tmp_path):
    log = tmp_path / "out.log"
    python("print('one')", log).wait(10.0)
    appended = python("print('two')", log, log_mode="a")
    appended.wait(10.0)
    assert appended.log() == "one\ntwo\n"


@pytest.fixture
def probe() -> Iterator[Probe]:
    pytest.importorskip("rclpy")
    probe = Probe("armstack_common_test_probe", domain_id=unique_domain_id(__name__))
    yield probe
    probe.close()


def test_spin_until_raises_with_the_log_of_an_exited_node(probe, tmp_path):
    proc = python("print('boom'); raise SystemExit(2)", tmp_path / "out.log", name="crasher")
    proc.wait(10.0)
    with pytest.raises(RuntimeError, match=r"crasher exited \(2\) while waiting for never(.|\n)*boom"):
        probe.spin_until(lambda: False, 5.0, "never", watch=proc)
    proc.stop()


def test_spin_until_times_out_and_returns_once_the_predicate_holds(probe):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="waiting for never"):
        probe.spin_until(lambda: False, 0.3, "never")
    assert time.monotonic() - start >= 0.3
    probe.spin_until(lambda: time.monotonic() - start > 0.5, 5.0, "half a second")
    assert not probe.poll_until(lambda: False, 0.1)


def test_ros_domain_env_sets_and_restores(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    with ros_domain_env(7) as domain:
        assert domain == 7 and os.environ["ROS_DOMAIN_ID"] == "7"
    assert os.environ["ROS_DOMAIN_ID"] == "42"
    monkeypatch.delenv("ROS_DOMAIN_ID")
    with ros_domain_env(8):
        assert os.environ["ROS_DOMAIN_ID"] == "8"
    assert "ROS_DOMAIN_ID" not in os.environ
