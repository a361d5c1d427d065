"""Helpers for tests that launch a perception node as a real process and watch its topics.

Each test module talks on its own ROS domain (from its process id), so suites running at
the same time on one machine do not hear each other. The node runs as `python -m <module>`
with the same interpreter and import path as the test; a separate rclpy context in the test
process subscribes and publishes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from armstack_common import testing


def isolated_domain_id() -> int:
    """A ROS_DOMAIN_ID in 100..199 derived from this process (Fast DDS allows up to 232)."""
    return testing.unique_domain_id(base=100)


def _param_arg(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        # The value is parsed as YAML: quote strings so '' or '0' stay strings.
        text = "'" + str(value).replace("'", "''") + "'"
    return f"{name}:={text}"


class NodeProcess(testing.NodeProcess):
    """`python -m module --ros-args -p name:=value ...` on `domain_id`; output kept in a
    temporary file removed on exit."""

    def __init__(
        self,
        module: str,
        params: dict[str, Any],
        domain_id: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        args = ["--ros-args"]
        for name, value in params.items():
            args += ["-p", _param_arg(name, value)]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
        # The test's own import path, so an unbuilt source tree runs the same code.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(extra_env or {})
        fd, log_path = tempfile.mkstemp(prefix=f"{module}-", suffix=".log")
        os.close(fd)
        super().__init__([sys.executable, "-m", module], args, Path(log_path), name=module, env=env)

    @property
    def process(self) -> Any:
        """The subprocess.Popen (tests/test_fault_tolerance.py polls it)."""
        return self.proc

    def output(self) -> str:
        return self.log()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


class Listener:
    """An rclpy node in its own context on `domain_id`, collecting messages per topic."""

    def __init__(self, domain_id: int, name: str = "test_listener") -> None:
        self._probe = testing.Probe(f"{name}_{os.getpid()}", domain_id=domain_id, spin_period=0.05)
        self.node = self._probe.node
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
        return self._probe.poll_until(done, timeout_s, process)

    def close(self) -> None:
        self._probe.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
