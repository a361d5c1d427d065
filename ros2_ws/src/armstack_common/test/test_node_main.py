"""armstack_common.node_main.run_node in real node processes: the exit code and output of a node
that cannot start, the order of start / release / destroy, and the ends of the spin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from armstack_common.executors import EXECUTOR_ENV, EXECUTOR_KINDS
from armstack_common.node_main import EXIT_CANNOT_START
from armstack_common.testing import unique_domain_id

# argv[1] picks what goes wrong; everything the helper calls prints what it saw.
NODE = textwrap.dedent("""
    import sys, threading, time
    import rclpy
    from rclpy.node import Node
    from armstack_common.node_main import run_node

    case = sys.argv[1]

    class Probe(Node):
        def __init__(self):
            super().__init__("node_main_test")
            if case == "bad_config":
                raise ValueError("probe.yaml: gain must be > 0, got -1")
            if case == "bug":
                raise KeyError("not a startup error")
            self.ticks = 0
            self.create_timer(0.01, self.tick)
            self.worker_ticks = 0  # a thread beside the spin, as the driver's loop is
            threading.Thread(target=self.work, daemon=True).start()

        def work(self):
            while True:
                time.sleep(0.005)
                self.worker_ticks += 1

        def tick(self):
            self.ticks += 1
            if self.ticks == 5:
                print("spinning", flush=True)

        def destroy_node(self):
            print("destroyed", flush=True)
            super().destroy_node()

    def start(node):
        print("start", flush=True)
        return case != "start_fails"

    def release(node):
        print("release, context ok:", rclpy.ok(), flush=True)

    sys.exit(run_node("node_main_test", Probe, args=[sys.argv[0], *sys.argv[2:]], start=start, release=release,
                      done=lambda node: (case == "done" and node.ticks >= 20
                                         or case == "worker" and node.worker_ticks >= 20)))
""")


def run(case: str, *ros_args: str, interrupt: bool = False,
        executor: str = "events") -> tuple[int, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id(__name__)),
               PYTHONPATH=os.pathsep.join(sys.path), **{EXECUTOR_ENV: executor})
    proc = subprocess.Popen([sys.executable, "-c", NODE, case, *ros_args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines = []
    if interrupt:
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "spinning":
                proc.send_signal(signal.SIGINT)
                break
    out, _ = proc.communicate(timeout=20)
    return proc.returncode, "".join(lines) + out


@pytest.mark.parametrize("executor", EXECUTOR_KINDS)
def test_a_signal_ends_the_spin_then_release_runs_with_the_context_up_before_destroy(executor):
    code, out = run("ok", interrupt=True, executor=executor)
    assert code == 0, out
    steps = [line for line in out.splitlines()
             if line.startswith(("start", "release", "destroyed"))]
    assert steps == ["start", "release, context ok: True", "destroyed"], out


def test_done_ends_the_spin_without_a_signal():
    code, out = run("done")
    assert code == 0 and "destroyed" in out, out


@pytest.mark.parametrize("executor", EXECUTOR_KINDS)
def test_the_nodes_other_threads_run_while_it_spins(executor):
    """The EventsExecutor's spin() would hold the GIL for good; the spin must not."""
    code, out = run("worker", executor=executor)
    assert code == 0 and "destroyed" in out, out


def test_an_unknown_executor_is_named_and_the_node_does_not_start():
    code, out = run("ok", executor="multi")
    assert code == EXIT_CANNOT_START, out
    assert "ARMSTACK_EXECUTOR='multi'" in out and "events, single" in out, out
    assert "Traceback" not in out and "start" not in out, out


def test_a_node_that_cannot_start_logs_one_line_and_exits_with_the_startup_code():
    code, out = run("bad_config")
    assert code == EXIT_CANNOT_START, out
    assert "probe.yaml: gain must be > 0, got -1" in out and "Traceback" not in out, out
    assert "release" not in out  # there was no node to release


def test_a_failed_start_still_releases_and_destroys_the_node():
    code, out = run("start_fails")
    assert code == EXIT_CANNOT_START, out
    assert "release, context ok: True" in out and "destroyed" in out, out


def test_a_parameter_file_that_is_not_yaml_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    gain: [1\n")
    code, out = run("ok", "--ros-args", "--params-file", str(params))
    assert code == EXIT_CANNOT_START, out
    assert str(params) in out and "Traceback" not in out, out


def test_an_unexpected_error_is_not_taken_for_bad_input():
    code, out = run("bug")
    assert code not in (0, EXIT_CANNOT_START) and "Traceback" in out and "KeyError" in out, out
