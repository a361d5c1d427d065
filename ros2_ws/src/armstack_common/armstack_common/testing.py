"""Helpers for tests that run ROS nodes as real processes and talk to them over DDS.

`NodeProcess` runs a command in its own session with its output in a log file and stops it
as `ros2 launch` does (SIGINT, then SIGKILL). `Probe` is an rclpy node of the test process in
its own Context. `unique_domain_id` keeps test modules and parallel runs on separate domains.
`measure_beside` runs a measuring script while a source script publishes (the benchmarks').
rclpy is imported inside `Probe` only, so this module imports without ROS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def unique_domain_id(module_name: str = "", base: int = 1, span: int = 100) -> int:
    """A ROS_DOMAIN_ID in base..base+span-1 from this process id and `module_name`.

    The pid keeps parallel runs apart, the module's hash the modules of one run. Ids up to
    ~101 are safe with Fast DDS's default ports when many participants share a domain.
    """
    return base + (os.getpid() + zlib.crc32(module_name.encode())) % span


@contextmanager
def ros_domain_env(domain_id: int) -> Iterator[int]:
    """ROS_DOMAIN_ID=`domain_id` in this process's environment (inherited by the nodes it
    starts and read by rclpy.init) until the block ends, then the previous value back."""
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    try:
        yield domain_id
    finally:
        if previous is None:
            os.environ.pop("ROS_DOMAIN_ID", None)
        else:
            os.environ["ROS_DOMAIN_ID"] = previous


def node_command(package: str, executable: str) -> list[str]:
    """The installed console script `lib/<package>/<executable>` when the package is built
    (found through the ament index), else `python -m <package>.<executable>`."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        script = Path(get_package_prefix(package)) / "lib" / package / executable
        if script.is_file():
            return [str(script)]
    except (ImportError, PackageNotFoundError):
        pass
    return [sys.executable, "-m", f"{package}.{executable}"]


def measure_beside(source: str, measured: str, args: Sequence[str], env: Mapping[str, str],
                   timeout: float) -> dict:
    """Run the Python code `source` in a process of its own while `measured` runs with `args`;
    the JSON of measured's last line of output. source is killed after."""
    feeder = subprocess.Popen([sys.executable, "-c", source], env=dict(env))
    try:
        out = subprocess.run([sys.executable, "-c", measured, *args], env=dict(env), check=True,
                             capture_output=True, text=True, timeout=timeout)
    finally:
        feeder.kill()
        feeder.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


class NodeProcess:
    """`command + args` as a subprocess in its own session, output appended to `log_path`."""

    def __init__(
        self,
        command: Sequence[str],
        args: Sequence[str],
        log_path: Path,
        *,
        name: str = "node",
        stdin: Any = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_mode: str = "w",
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self._log: IO[str] = open(log_path, log_mode)
        self.proc = subprocess.Popen(
            [*command, *args],
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
            cwd=cwd,
        )

    @classmethod
    def ros_node(cls, package: str, executable: str, ros_args: Sequence[str], log_path: Path,
                 **kwargs: Any) -> NodeProcess:
        """An installed node executable (see `node_command`) with `--ros-args *ros_args`."""
        kwargs.setdefault("name", executable)
        return cls(node_command(package, executable), ["--ros-args", *ros_args], log_path, **kwargs)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float | None = None) -> int:
        """Send `sig`, SIGKILL the session after `timeout` (default `stop_timeout`) seconds;
        the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Probe:
    """An rclpy node in the test process, in its own Context (on `domain_id` if given, else on
    ROS_DOMAIN_ID), spun by its own executor."""

    def __init__(self, name: str, *, namespace: str | None = None, domain_id: int | None = None,
                 spin_period: float = 0.005) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        if domain_id is None:
            rclpy.init(context=self.context)
        else:
            rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spin_period = spin_period

    def poll_until(self, predicate: Callable[[], bool], timeout: float,
                   watch: NodeProcess | None = None) -> bool:
        """Spin until `predicate()`, the timeout, or `watch` exiting; whether it holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if (watch is not None and not watch.alive()) or time.monotonic() > deadline:
                return predicate()
            self._executor.spin_once(timeout_sec=self._spin_period)
        return True

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str,
                   watch: NodeProcess | None = None) -> None:
        """Spin until `predicate()`; RuntimeError if `watch` exits first, else TimeoutError
        after `timeout` s, each with the watched node's log."""
        if self.poll_until(predicate, timeout, watch):
            return
        if watch is not None and not watch.alive():
            raise RuntimeError(f"{watch.name} exited ({watch.proc.returncode}) while waiting for "
                               f"{what}:\n{watch.log()}")
        log = f"; {watch.name} log:\n{watch.log()}" if watch is not None else ""
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}{log}")

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=self._spin_period)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def now_msg(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
