"""Fixtures of the teleop tests: a private ROS domain per module, the teleop node launched as its
own process, and an rclpy probe node in the test process that plays the rest of the graph."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from armstack_common.testing import NodeProcess, Probe, ros_domain_env, unique_domain_id


class TeleopProbe(Probe):
    """The shared probe with a service call that fails with the node's log."""

    def call(self, client: Any, request: Any, node: NodeProcess, timeout: float = 5.0) -> Any:
        """A service call answered within `timeout` seconds."""
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f"an answer from {client.srv_name}", node)
        return future.result()


@pytest.fixture(scope="module")
def ros_domain(request: pytest.FixtureRequest) -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's own, for the launched node and the probe alike."""
    pytest.importorskip("rclpy")
    pytest.importorskip("armstack_interfaces.msg")
    with ros_domain_env(unique_domain_id(request.module.__name__)) as domain:
        yield domain


@pytest.fixture(scope="module")
def launch_node(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeProcess]]:
    """launch_node(*ros_args, stdin=...) -> NodeProcess running teleop_node, stopped at the module's end."""
    started: list[NodeProcess] = []

    def launch(*args: str, stdin: Any = subprocess.DEVNULL) -> NodeProcess:
        log = tmp_path_factory.mktemp("log") / "teleop_node.log"
        node = NodeProcess.ros_node("armstack_teleop", "teleop_node", args, log, stdin=stdin)
        started.append(node)
        return node

    yield launch
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def probe(ros_domain: int) -> Iterator[TeleopProbe]:
    probe = TeleopProbe("armstack_teleop_test_probe")
    yield probe
    probe.close()
