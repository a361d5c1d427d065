"""Executors for armstack's node processes.

`node_executor` is the single-threaded executor a node process spins in
(armstack_common.shutdown.spin). By default it is rclpy's EventsExecutor (rclpy.experimental,
in Jazzy's 7.1), whose wait and dispatch run in C++, where the SingleThreadedExecutor rebuilds a
wait set in Python on every spin: for a node with a 100 Hz subscription and a 50 Hz timer that
halves the CPU the process spends (tools/bench_executor.py), and a 2-core machine runs eight such
nodes plus the simulator. ARMSTACK_EXECUTOR=single restores the SingleThreadedExecutor, for a
fault that might be the experimental executor's. Three limits of Jazzy's EventsExecutor shape
its use here (each seen here):
- spin() holds the GIL for as long as it runs, so no other thread of the process runs again;
  spin_once with a timeout releases it, so spin with that (as shutdown.spin does);
- it takes no guard conditions (RuntimeError at the first spin);
- a subscription callback that asks for the message info fails in it ("SystemError: null
  argument to internal routine"). No node's does; the evaluation runner's latency callbacks do
  (publication times), so those keep a SingleThreadedExecutor (armstack_eval.runner_node).

`SubmitOnceExecutor` is a MultiThreadedExecutor that submits a ready callback to its thread
pool once. rclpy 7.1 (Jazzy) wraps every ready callback in a Task and, on each spin, yields
again every Task that is not executing yet. In a MultiThreadedExecutor a Task that waits in the
thread pool's queue is not executing yet, so the next spin_once returns it at once instead of
waiting, submits it again and scans a growing list of futures: the spinning thread runs hot,
holds the GIL, and the pool's workers cannot start the very callbacks it queued. A recorder
under load lost seconds of its sampling clock to this (rclpy issue #1452; fixed upstream in
rclpy 10.0.4, not in Jazzy's 7.1). Here a Task already queued is not submitted again: the
spinning thread waits (briefly) for a worker to start it, which hands the GIL to that worker.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from rclpy.context import Context
from rclpy.executors import (ConditionReachedException, Executor, ExternalShutdownException,
                             MultiThreadedExecutor, ShutdownException, SingleThreadedExecutor,
                             TimeoutException)

try:  # in Jazzy's rclpy from 7.1.x on (the wheels have it); an older install may not
    from rclpy.experimental import EventsExecutor
except ImportError:
    EventsExecutor = None

EXECUTOR_ENV = "ARMSTACK_EXECUTOR"
EXECUTOR_KINDS = ("events", "single")

# How long a spin waits for a worker to start a callback that is already queued before it
# looks for other work; short, so a pool whose workers are all busy costs a wake-up per period.
REQUEUE_WAIT_S = 0.005


def executor_kind() -> str:
    """The node executor ARMSTACK_EXECUTOR asks for (default: events where this rclpy has it,
    else single); ValueError names the variable when it asks for something else or for events
    that this rclpy lacks."""
    default = "events" if EventsExecutor is not None else "single"
    kind = os.environ.get(EXECUTOR_ENV, default) or default
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"environment variable {EXECUTOR_ENV}={kind!r} is not an executor: "
                         f"one of {', '.join(EXECUTOR_KINDS)}")
    if kind == "events" and EventsExecutor is None:
        raise ValueError(f"environment variable {EXECUTOR_ENV}=events, but this rclpy has no "
                         "rclpy.experimental.EventsExecutor: use single")
    return kind


def node_executor(context: Context, kind: str | None = None) -> Executor:
    """A new single-threaded executor of `kind` (None: the one executor_kind() names)."""
    if (kind or executor_kind()) == "events":
        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


class SubmitOnceExecutor(MultiThreadedExecutor):
    """MultiThreadedExecutor with each ready callback in the pool's queue at most once."""

    def __init__(self, num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_threads=num_threads, **kwargs)
        self._queued: dict[Any, threading.Event] = {}  # Task -> set once a worker starts it
        self._queued_lock = threading.Lock()

    def _spin_once_impl(self, timeout_sec: Any = None,
                        wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None,
                                                                    wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        with self._queued_lock:
            started = self._queued.get(handler)
            queued = started is not None
            if not queued:
                started = self._queued[handler] = threading.Event()
        if queued:
            started.wait(REQUEUE_WAIT_S)
            return
        self._executor.submit(self._start, handler, started)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exception of the callback, as rclpy does

    def _start(self, handler: Any, started: threading.Event) -> None:
        started.set()
        try:
            handler()
        finally:
            # only now: until the Task has marked itself executing, a spin could yield it
            # again; a coroutine that awaits is yielded again later and submitted afresh
            with self._queued_lock:
                del self._queued[handler]
