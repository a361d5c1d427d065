"""Fixtures of the node tests: a private ROS domain, a node launched as its own process,
and an rclpy probe node in the test process that talks to it over DDS."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from armstack_common.testing import NodeProcess, Probe, ros_domain_env, unique_domain_id


@pytest.fixture(scope="module")
def ros_domain(request: pytest.FixtureRequest) -> Iterator[int]:
    """A ROS_DOMAIN_ID of this module's own, for the launched node and the probe alike."""
    pytest.importorskip("rclpy")
    with ros_domain_env(unique_domain_id(request.module.__name__)) as domain:
        yield domain


@pytest.fixture(scope="module")
def launch_node(
    ros_domain: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., NodeProcess]]:
    """launch_node(executable, *ros_args) -> NodeProcess, stopped at the module's end."""
    started: list[NodeProcess] = []

    def launch(executable: str, *args: str) -> NodeProcess:
        log = tmp_path_factory.mktemp("log") / f"{executable}.log"
        node = NodeProcess.ros_node("armstack_ik", executable, args, log)
        started.append(node)
        return node

    yield launch
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def probe(ros_domain: int) -> Iterator[Probe]:
    probe = Probe("armstack_ik_test_probe")
    yield probe
    probe.close()
