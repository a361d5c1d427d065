"""Fixtures of the teleop tests: a private ROS domain per module, the teleop node launched as its
own process, and an rclpy probe node in the test process that plays the rest of the graph."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _domain_id(module: str) -> int:
    # 1 + pid % 100 keeps parallel runs apart; the module's hash keeps the modules of one run
    # apart (ids 1..100 are safe with Fast DDS's default ports).
    return 1 + (os.getpid() + zlib.crc32(module.encode())) % 100


def _node_command(executable: str) -> list[str]:
    """The installed console script when the package is built, else its module."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        script = Path(get_package_prefix("armstack_teleop")) / "lib" / "armstack_teleop" / executable
        if script.is_file():
            return [str(script)]
    except (ImportError, PackageNotFoundError):
        pass
    return [sys.executable, "-m", f"armstack_teleop.{executable}"]


class NodeProcess:
    """One node executable as a subprocess (own session), stopped with SIGINT."""

    def __init__(self, executable: str, args: list[str], log_path: Path, stdin: Any = subprocess.DEVNULL) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [*_node_command(executable), "--ros-args", *args],
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        self.proc.wait(timeout)
        return self.proc.returncode

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

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str, node: NodeProcess) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if node.proc.poll() is not None and not predicate():
                raise RuntimeError(f"node exited ({node.proc.returncode}) while waiting for {what}:\n{node.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}; node log:\n{node.log()}")
            self._executor.spin_once(timeout_sec=0.005)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=0.005)

    def call(self, client: Any, request: Any, node: NodeProcess, timeout: float = 5.0) -> Any:
        """A service call answered within `timeout` seconds."""
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f"an answer from {client.srv_name}", node)
        return future.result()

    def now_msg(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def ros_domain(request: pytest.FixtureRequest) -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's own, for the launched node and the probe alike."""
    pytest.importorskip("rclpy")
    pytest.importorskip("armstack_interfaces.msg")
    patch = pytest.MonkeyPatch()
    domain = _domain_id(request.module.__name__)
    patch.setenv("ROS_DOMAIN_ID", str(domain))
    yield domain
    patch.undo()


@pytest.fixture(scope="module")
def launch_node(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeProcess]]:
    """launch_node(*ros_args, stdin=...) -> NodeProcess running teleop_node, stopped at the module's end."""
    started: list[NodeProcess] = []

    def launch(*args: str, stdin: Any = subprocess.DEVNULL) -> NodeProcess:
        log = tmp_path_factory.mktemp("log") / "teleop_node.log"
        node = NodeProcess("teleop_node", list(args), log, stdin)
        started.append(node)
        return node

    yield launch
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def probe(ros_domain: int) -> Iterator[Probe]:
    probe = Probe("armstack_teleop_test_probe")
    yield probe
    probe.close()
