"""Fixtures of the node test: a private ROS domain, policy_node as its own process, and an
rclpy probe node in the test process that talks to it over DDS."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from armstack_common.testing import NodeProcess, Probe, ros_domain_env, unique_domain_id


@pytest.fixture(scope="module")
def ros_domain() -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's run, for the launched node and the probe alike."""
    pytest.importorskip("rclpy")
    with ros_domain_env(unique_domain_id()) as domain:
        yield domain


@pytest.fixture(scope="module")
def launch_node(ros_domain: int, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[..., NodeProcess]]:
    """launch_node(*ros_args) -> NodeProcess, stopped at the module's end."""
    started: list[NodeProcess] = []

    def launch(*args: str) -> NodeProcess:
        node = NodeProcess.ros_node("armstack_policy", "policy_node", args,
                                    tmp_path_factory.mktemp("log") / "policy_node.log")
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
