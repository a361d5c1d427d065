"""SIGINT and SIGTERM end a node's spin between waits; they never raise inside rclpy.

rclpy's own handlers shut the context down from a helper thread and raise KeyboardInterrupt
in the main thread, and either can land in the middle of an rclpy call: a KeyboardInterrupt
pending inside pybind11's argument conversion comes out as RuntimeError ("Unable to convert
call argument"), and a context shut down between the executor's check and its wait set comes
out as RCLError. Either way a node exits 1 on a plain Ctrl-C (localization did so in about one
stop in ten with frames arriving). Here a signal only sets an event; `spin` checks it every
`SPIN_PERIOD_S`, and the context stays up until the node's own `finally` has released its
hardware and destroyed the node.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from armstack_common.executors import node_executor

# How long a spin waits for work before it looks at the stop event again: the worst-case delay
# between a signal and the start of shutdown.
SPIN_PERIOD_S = 0.1


def init(args: Sequence[str] | None, name: str, *, abort_on_repeat: bool = False
         ) -> threading.Event:
    """`rclpy.init(args)` without rclpy's signal handlers; SIGINT and SIGTERM set the returned
    event (and log it under `name`). With `abort_on_repeat`, a second signal kills the process
    at once (for a node whose orderly stop may take long); otherwise repeats are ignored, so
    nothing can cut the node's release short."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            return
        hint = "; again to abort" if abort_on_repeat else ""
        get_logger(name).info(f"{signal.Signals(signum).name}: stopping{hint}")
        if abort_on_repeat:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def spin(target: Node | Executor, stop: threading.Event,
         done: Callable[[], bool] = lambda: False) -> None:
    """Spin `target` (a node gets an executor of its own: `executors.node_executor`) until
    `stop` is set, `done()` is true, or the context is shut down."""
    own_executor = isinstance(target, Node)
    executor = node_executor(target.context) if own_executor else target
    if own_executor:
        executor.add_node(target)
    try:
        while not stop.is_set() and not done() and executor.context.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except ExternalShutdownException:
        pass
    finally:
        if own_executor:
            executor.remove_node(target)
