"""Helpers for tests that launch a perception node as a real process and watch its topics.

Each test module talks on its own ROS domain (from its process id), so suites running at
the same time on one machine do not hear each other. The node runs as `python -m <module>`
with the same interpreter and import path as the test; a separate rclpy context in the test
process subscribes and publishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def isolated_domain_id() -> int:
    """A ROS_DOMAIN_ID in 100..199 derived from this process (Fast DDS allows up to 232)."""
    return os.getpid() % 100 + 100


def _param_arg(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        # The value is parsed as YAML: quote strings so '' or '0' stay strings.
        text = "'" + str(value).replace("'", "''") + "'"
    return f"{name}:={text}"


class NodeProcess:
    """`python -m module --ros-args -p name:=value ...` on `domain_id`; output kept in a file."""

    def __init__(
        self,
        module: str,
        params: dict[str, Any],
        domain_id: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        args = [sys.executable, "-m", module, "--ros-args"]
        for name, value in params.items():
            args += ["-p", _param_arg(name, value)]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
        # The test's own import path, so an unbuilt source tree runs the same code.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(extra_env or {})
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT (as ros2 launch does), then SIGKILL if it does not exit; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


class Listener:
    """An rclpy node in its own context on `domain_id`, collecting messages per topic."""

    def __init__(self, domain_id: int, name: str = "test_listener") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(f"{name}_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}

    def collect(self, msg_type: type, topic: str, qos: Any) -> list[Any]:
        """Subscribe; the returned list fills with (receive time, message) as they arrive."""
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, lambda m: box.append((time.time(), m)), qos)
        return box

    def spin_until(
        self, done: Callable[[], bool], timeout_s: float, process: NodeProcess | None = None
    ) -> bool:
        """Spin until `done()` or the timeout; stops early if `process` exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return True
            if process is not None and process.process.poll() is not None:
                return done()
            self.executor.spin_once(timeout_sec=0.05)
        return done()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
