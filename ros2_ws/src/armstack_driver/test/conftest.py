"""Fixtures: an emulated servo bus with ideal joints, the real driver node as a subprocess, and
a ROS observer in the test process.

The emulator answers from Python threads of this process, which also runs rclpy: with the
default 5 ms GIL switch interval the observer's callbacks would hold status packets back by
milliseconds (and make the driver's sync reads time out), so the interval is lowered here as the
simulator's main() does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from armstack_common.servo_config import ServoBusConfig, load_default_servo_config
from armstack_common.testing import NodeProcess
from armstack_sim.dynamixel_bus import DynamixelBusEmulator, EmulatorOptions

sys.setswitchinterval(0.0005)

REPO = Path(__file__).resolve().parents[4]
DRIVER_YAML = REPO / "config" / "driver.yaml"


class IdealArm:
    """The emulated bus plus joints that follow the servos' profiled references exactly
    (a limp joint, torque off, stays where it is): the physics half of the simulator."""

    def __init__(self, config: ServoBusConfig, options: EmulatorOptions | None = None,
                 period_s: float = 0.002) -> None:
        self.config = config
        self.bus = DynamixelBusEmulator(config, options)
        self._period = period_s
        self._ticks = np.array([j.offset_ticks for j in config.joints], dtype=np.float64)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ideal-arm", daemon=True)

    def start(self) -> IdealArm:
        self.bus.start()
        self.bus.set_present_array(self._ticks, 0.0, 0.0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.bus.stop()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._period):
            now = time.monotonic()
            self.bus.step(now - last)
            commands = self.bus.commands()
            ticks = self._ticks.copy()
            velocity = np.zeros_like(ticks)
            for k, joint in enumerate(self.config.joints):
                command = commands[joint.servo_id]
                if command.torque_enabled:
                    ticks[k], velocity[k] = command.position_ticks, command.velocity_units
            self.bus.set_present_array(ticks, velocity, 0.0)
            with self._lock:
                self._ticks = ticks
            last = now

    def positions(self) -> np.ndarray:
        """(J,) true joint positions (rad / m)."""
        with self._lock:
            return self.config.ticks_to_joint(self._ticks)

    def place(self, positions: np.ndarray) -> None:
        """Put the (limp) arm somewhere, as a user moving it by hand."""
        with self._lock:
            self._ticks = self.config.joint_to_ticks(positions).astype(np.float64)
        self.bus.set_present_array(self._ticks, 0.0, 0.0)


@pytest.fixture(scope="session")
def servo_config() -> ServoBusConfig:
    return load_default_servo_config()


@pytest.fixture
def arm(servo_config, tmp_path) -> Iterator[IdealArm]:
    # A port path of its own (pty numbers are reused): diagnostics name it as hardware_id, so
    # the observer tells this test's driver from an earlier one or another suite's.
    ideal = IdealArm(servo_config, EmulatorOptions(link_path=str(tmp_path / "servo_bus"))).start()
    yield ideal
    ideal.stop()


def domain_id() -> int:
    # One ROS domain per test module process, so parallel suites never cross-talk.
    return 1 + os.getpid() % 100


# The emulator answers from this (test) process, which a loaded machine (2 cores shared with
# other suites) may not schedule for tens of milliseconds: drivers under test wait longer for
# replies than on a real bus, so a slow test process is not taken for a silent servo.
TEST_REPLY_MARGIN_MS = 60.0
TEST_PARAMS = {"reply_margin_ms": TEST_REPLY_MARGIN_MS}


class DriverProcess(NodeProcess):
    """The real driver node (console entry point code) as a subprocess."""

    def __init__(self, port: str, log_path: Path, **params: Any) -> None:
        args = ["--ros-args", "--params-file", str(DRIVER_YAML), "-p", f"port:={port}"]
        for name, value in {**TEST_PARAMS, **params}.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{name}:={text}"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id()), PYTHONUNBUFFERED="1")
        super().__init__([sys.executable, "-m", "armstack_driver.driver_node"], args, log_path,
                         name="driver_node", env=env)


class Observer:
    """A real rclpy node in the test process: latest message per topic, publishers, services."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_DOMAIN_ID"] = str(domain_id())
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("driver_test_observer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[tuple[float, Any]]] = {}

    def subscribe(self, msg_type: Any, topic: str, depth: int = 50) -> None:
        self.messages[topic] = []

        def store(msg: Any) -> None:
            self.messages[topic].append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, store, depth)

    def latest(self, topic: str) -> Any:
        return self.messages[topic][-1][1] if self.messages.get(topic) else None

    def spin_for(self, seconds: float, every: Callable[[], None] | None = None) -> None:
        """Spin for `seconds`, calling `every` (e.g. publish a command) about every 20 ms."""
        deadline = time.monotonic() + seconds
        next_call = time.monotonic()
        while time.monotonic() < deadline:
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call += 0.02
            self.executor.spin_once(timeout_sec=min(0.005, max(0.0, deadline - time.monotonic())))

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str,
                   every: Callable[[], None] | None = None) -> None:
        """Spin until `predicate()`, calling `every` about every 20 ms meanwhile."""
        deadline = time.monotonic() + timeout
        next_call = time.monotonic()
        while not predicate():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            if every is not None and now >= next_call:
                every()
                next_call = now + 0.02
            self.executor.spin_once(timeout_sec=0.005)

    def call(self, srv_type: Any, name: str, timeout: float = 10.0,
             every: Callable[[], None] | None = None, request: Any = None) -> Any:
        """Call a service (waiting for it), calling `every` about every 20 ms meanwhile."""
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, timeout, f"service {name}", every)
            future = client.call_async(request if request is not None else srv_type.Request())
            self.spin_until(future.done, timeout, f"answer of {name}", every)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


class DriverObserver(Observer):
    """Observer of one driver: joint_states, diagnostics and driver/latency; joint_command out."""

    FOLLOWING = "no (following joint_command)"  # the motion status' holding value while moving

    def __init__(self) -> None:
        super().__init__()
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64

        self._joint_state = JointState
        self.port = ""  # diagnostics of other ports are ignored
        self.subscribe(JointState, "joint_states", 1000)
        self.subscribe(DiagnosticArray, "diagnostics")
        self.subscribe(Float64, "driver/latency", 100)
        self._command_pub = self.node.create_publisher(JointState, "joint_command", 10)

    def clear(self) -> None:
        for messages in self.messages.values():
            messages.clear()

    def command(self, **joints: float) -> None:
        msg = self._joint_state(name=list(joints), position=[float(v) for v in joints.values()])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._command_pub.publish(msg)

    def status(self, component: str) -> Any:
        """The latest diagnostic status named 'driver: <component>' of our port, or None."""
        found = self.stamped_status(component)
        return found[1] if found else None

    def stamped_status(self, component: str) -> tuple[float, Any] | None:
        """(header stamp in seconds, status) of the latest 'driver: <component>' of our port."""
        for _, array in reversed(self.messages["diagnostics"]):
            for status in array.status:
                if status.name == f"driver: {component}" and status.hardware_id == self.port:
                    return array.header.stamp.sec + array.header.stamp.nanosec * 1e-9, status
        return None

    def value(self, component: str, key: str) -> str | None:
        status = self.status(component)
        values = {kv.key: kv.value for kv in status.values} if status is not None else {}
        return values.get(key)

    def wait_mode(self, mode: str, timeout: float = 30.0, every: Callable[[], None] | None = None) -> None:
        self.spin_until(lambda: self.value("motion", "mode") == mode, timeout,
                        f"driver motion mode {mode!r}", every)

    def wait_following(self, publish: Callable[[], None], timeout: float = 10.0) -> None:
        """Publish commands until the driver follows them. Seeing the driver's diagnostics says
        nothing of the other direction: our publisher may be discovered later."""
        self.wait_mode("active")
        self.spin_until(lambda: self.value("motion", "holding") == self.FOLLOWING, timeout,
                        "the driver following joint_command", publish)


@pytest.fixture(scope="module")
def observer() -> Iterator[DriverObserver]:
    obs = DriverObserver()
    yield obs
    obs.close()


@pytest.fixture
def driver_observer(observer, arm) -> DriverObserver:
    observer.spin_for(0.2)  # take what an earlier test's driver left in flight, then forget it
    observer.clear()
    observer.port = arm.bus.port_path
    return observer


@pytest.fixture
def start_driver(arm, tmp_path) -> Iterator[Callable[..., DriverProcess]]:
    started: list[DriverProcess] = []

    def start(**params: Any) -> DriverProcess:
        driver = DriverProcess(arm.bus.port_path, tmp_path / f"driver{len(started)}.log", **params)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        code = driver.stop()
        # Captured by pytest and shown only when the test failed.
        print(f"--- {driver.log_path.name} (exit code {code}), last lines:\n{driver.log()[-3000:]}")
