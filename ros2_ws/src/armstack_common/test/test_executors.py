"""SubmitOnceExecutor: a ready callback goes into the thread pool's queue once, however often
the executor spins while it waits there (Jazzy's MultiThreadedExecutor resubmits it)."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

from armstack_common.executors import SubmitOnceExecutor  # noqa: E402

TIMERS = 6


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def spin_a_busy_pool(executor_type, context, seconds: float = 1.0) -> tuple[int, int]:
    """More work than workers: TIMERS timers every 2 ms, each holding the GIL for 3 ms, on 4
    workers, so ready callbacks wait in the pool's queue. (callbacks run, submissions)."""
    node = rclpy.create_node("busy_pool", context=context)
    executor = executor_type(num_threads=4, context=context)
    executor.add_node(node)
    submissions = 0
    submit = executor._executor.submit

    def counting_submit(*args, **kwargs):
        nonlocal submissions
        submissions += 1
        return submit(*args, **kwargs)

    executor._executor.submit = counting_submit
    calls = 0

    def work():
        nonlocal calls
        start = time.perf_counter()
        while time.perf_counter() - start < 0.003:
            pass
        calls += 1

    for _ in range(TIMERS):
        node.create_timer(0.002, work, MutuallyExclusiveCallbackGroup())
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
    return calls, submissions


def test_a_queued_callback_is_submitted_once(context):
    calls, submissions = spin_a_busy_pool(SubmitOnceExecutor, context)
    print(f"SubmitOnceExecutor: {calls} callbacks, {submissions} submissions")
    assert calls > 50
    # at the end at most one call per timer may still wait in the queue
    assert calls <= submissions <= calls + TIMERS, (calls, submissions)


def test_jazzy_multithreaded_executor_still_resubmits(context):
    """Why SubmitOnceExecutor exists: in the same case the stock executor submits callbacks
    that wait in its queue again (here about 2.5 submissions per run). When an rclpy with the
    upstream fix (10.0.4) arrives, this fails: then the recorder can go back to the stock one."""
    calls, submissions = spin_a_busy_pool(MultiThreadedExecutor, context)
    print(f"MultiThreadedExecutor: {calls} callbacks, {submissions} submissions")
    assert submissions > calls + TIMERS, (calls, submissions)


def test_a_callback_exception_reaches_the_spinning_thread(context):
    node = rclpy.create_node("raising", context=context)
    executor = SubmitOnceExecutor(num_threads=2, context=context)
    executor.add_node(node)

    def boom():
        raise RuntimeError("boom")

    node.create_timer(0.005, boom)
    with pytest.raises(RuntimeError, match="boom"):
        for _ in range(200):
            executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
