"""Helpers for whole-graph tests: launch real nodes, observe them from a real rclpy node.

Each test module gets its own ROS_DOMAIN_ID so suites running side by side (or a
user's live graph) never cross-talk; the launched processes inherit it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from armstack_common.testing import NodeProcess, Probe, unique_domain_id

__all__ = ["REPO", "LaunchedGraph", "Observer", "unique_domain_id"]

REPO = Path(__file__).resolve().parents[1]


class LaunchedGraph(NodeProcess):
    """`armstack launch FILE args` as a subprocess; stopped with Ctrl-C like a user would."""

    def __init__(self, launch_file: str, *args: str, log_path: Path) -> None:
        super().__init__(
            [sys.executable, "-m", "armstack_bringup.cli", "launch", str(REPO / launch_file)],
            args, log_path, name="launch", cwd=REPO, stop_timeout=20.0,
        )


class Observer(Probe):
    """A real rclpy node in the test process that records the latest message per topic."""

    def __init__(self, name: str = "test_observer") -> None:
        super().__init__(name, spin_period=0.05)
        self.latest: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> None:
        def store(msg: Any, topic: str = topic) -> None:
            self.latest[topic] = msg
            self.counts[topic] = self.counts.get(topic, 0) + 1

        self.node.create_subscription(msg_type, topic, store, qos)
