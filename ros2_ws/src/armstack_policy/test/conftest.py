"""Fixtures of the node test: a private ROS domain, policy_node as its own process, and an
rclpy probe node in the test process that talks to it over DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _node_command() -> list[str]:
    """The installed console script when the package is built, else its module."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        prefix = Path(get_package_prefix("armstack_policy"))
        script = prefix / "lib" / "armstack_policy" / "policy_node"
        if script.is_file():
            return [str(script)]
    except (ImportError, PackageNotFoundError):
        pass
    return [sys.executable, "-m", "armstack_policy.policy_node"]


class NodeProcess:
    """policy_node as a subprocess in its own session, stopped with SIGINT."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([*_node_command(), "--ros-args", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Probe:
    """An rclpy node in the test process, in its own context."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str,
                   node: NodeProcess) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if node.proc.poll() is not None:
                raise RuntimeError(f"node exited ({node.proc.returncode}) while waiting for "
                                   f"{what}:\n{node.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}; node log:\n"
                                   f"{node.log()}")
            self._executor.spin_once(timeout_sec=0.005)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=0.005)

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def ros_domain() -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's run, for the launched node and the probe alike."""
    pytest.importorskip("rclpy")
    patch = pytest.MonkeyPatch()
    domain = 1 + os.getpid() % 100
    patch.setenv("ROS_DOMAIN_ID", str(domain))
    yield domain
    patch.undo()


@pytest.fixture(scope="module")
def launch_node(ros_domain: int, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[..., NodeProcess]]:
    """launch_node(*ros_args) -> NodeProcess, stopped at the module's end."""
    started: list[NodeProcess] = []

    def launch(*args: str) -> NodeProcess:
        node = NodeProcess(list(args), tmp_path_factory.mktemp("log") / "policy_node.log")
        started.append(node)
        return node

    yield launch
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def probe(ros_domain: int) -> Iterator[Probe]:
    probe = Probe("armstack_policy_test_probe")
    yield probe
    probe.close()
