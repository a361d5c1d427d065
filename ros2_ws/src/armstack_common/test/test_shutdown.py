"""armstack_common.shutdown in real node processes: a signal ends the spin, the node releases
with its context still up, and exits 0; a repeated signal is ignored or aborts as asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from armstack_common.testing import unique_domain_id

# A node that talks to itself as fast as it can (so the signal lands inside rclpy calls), and
# whose release publishes once more and takes RELEASE_S, reporting what it found.
NODE = textwrap.dedent("""
    import sys, time
    import rclpy
    from std_msgs.msg import String
    from armstack_common import shutdown

    stop = shutdown.init(None, "shutdown_test", abort_on_repeat=sys.argv[1] == "abort")
    node = rclpy.create_node("shutdown_test")
    pub = node.create_publisher(String, "chatter", 10)
    node.create_subscription(String, "chatter", lambda m: None, 10)
    node.create_timer(0.001, lambda: pub.publish(String(data="x" * 100000)))
    print("spinning", flush=True)
    try:
        shutdown.spin(node, stop)
    finally:
        pub.publish(String(data="released"))
        print("context ok at release:", rclpy.ok(), flush=True)
        time.sleep(float(sys.argv[2]))
        node.destroy_node()
        rclpy.try_shutdown()
        print("released", flush=True)
""")


def start(mode: str, release_s: float) -> subprocess.Popen:
    env = {"ROS_DOMAIN_ID": str(unique_domain_id(__name__)), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE, mode, str(release_s)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, **env),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spinning"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_spin_and_the_node_releases_with_its_context_up(sig):
    for _ in range(5):
        proc = start("ignore", 0.0)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert f"{sig.name}: stopping" in out
        assert "context ok at release: True" in out and "released" in out, out


def test_a_repeated_signal_cannot_cut_the_release_short():
    proc = start("ignore", 1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # inside the release
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "released" in out, out


def test_with_abort_on_repeat_a_second_signal_kills_at_once():
    proc = start("abort", 5.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=3)
    assert proc.returncode == -signal.SIGINT and "again to abort" in out, out
    assert "released" not in out
