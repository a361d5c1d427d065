"""Helpers for whole-graph tests: launch real nodes, observe them from a real rclpy node.

Each test module gets its own ROS_DOMAIN_ID so suites running side by side (or a
user's live graph) never cross-talk; the launched processes inherit it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def unique_domain_id() -> int:
    # Fast DDS domain ids 0-101 are safe with default ports (higher ids overflow
    # the port range for many participants).
    return 1 + os.getpid() % 100


class LaunchedGraph:
    """`armstack launch FILE args` as a subprocess; stopped with Ctrl-C like a user would."""

    def __init__(self, launch_file: str, *args: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "armstack_bringup.cli", "launch", str(REPO / launch_file), *args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Observer:
    """A real rclpy node in the test process that records the latest message per topic."""

    def __init__(self, name: str = "test_observer") -> None:
        import rclpy

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.latest: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> None:
        def store(msg: Any, topic: str = topic) -> None:
            self.latest[topic] = msg
            self.counts[topic] = self.counts.get(topic, 0) + 1

        self.node.create_subscription(msg_type, topic, store, qos)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        deadline = time.monotonic() + timeout
        try:
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
                executor.spin_once(timeout_sec=0.05)
        finally:
            executor.remove_node(self.node)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)
