"""The life of a node process, one rule for every armstack node's `main()`.

init (signals only end the spin: `armstack_common.shutdown`) -> build the node -> optionally
start it -> spin until a signal or `done` -> release what it holds -> destroy it -> shut down.

A node that cannot start (a parameter file that is not YAML, a bad parameter, config file or
model) logs one line naming the file and key, never a traceback, and exits with
`EXIT_CANNOT_START` (2, as for a command-line usage error), which a crash (an uncaught
exception: 1) never gives. Whatever the node holds is released even then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor
from rclpy.logging import get_logger
from rclpy.node import Node

from armstack_common import shutdown
from armstack_common.executors import executor_kind, node_executor

EXIT_CANNOT_START = 2

# What a node's constructor raises for bad input: ValueError covers the config dataclasses'
# validation (and ServoConfigError, ModelLayoutError), OSError a missing or unreadable file
# (and ArmstackPathError), ParameterException rclpy's own parameter checks.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ParameterException)

N = TypeVar("N", bound=Node)


def run_node(name: str, make_node: Callable[[], N], *,
             args: Sequence[str] | None = None,
             startup_errors: tuple[type[BaseException], ...] = STARTUP_ERRORS,
             start: Callable[[N], bool] | None = None,
             release: Callable[[N], None] | None = None,
             make_executor: Callable[[N], Executor] | None = None,
             done: Callable[[N], bool] | None = None,
             abort_on_repeat: bool = False) -> int:
    """Run one node until SIGINT/SIGTERM (or `done(node)`); return the process's exit code.

    `start(node)` runs before the spin (e.g. a lifecycle node's autostart) and returns whether
    it succeeded; `release(node)` runs after it, before the node is destroyed, also after a
    failed start. `make_executor(node)` gives an executor other than `executors.node_executor`'s.
    `abort_on_repeat`: see `shutdown.init`."""
    log = get_logger(name)
    try:
        stop = shutdown.init(args, name, abort_on_repeat=abort_on_repeat)
    except RuntimeError as exc:
        # rcl's RCLError, e.g. a parameter file that is not YAML (it names file and line).
        log.fatal(str(exc))
        return EXIT_CANNOT_START
    node: N | None = None
    executor: Executor | None = None
    try:
        try:
            # A bad ARMSTACK_EXECUTOR is a startup error, named, before the node exists.
            kind = executor_kind() if make_executor is None else None
            node = make_node()
            started = start is None or start(node)
        except startup_errors as exc:
            log.fatal(str(exc))
            return EXIT_CANNOT_START
        if not started:
            return EXIT_CANNOT_START
        executor = (make_executor(node) if make_executor is not None
                    else node_executor(node.context, kind))
        executor.add_node(node)
        shutdown.spin(executor, stop,
                      done=(lambda: done(node)) if done is not None else (lambda: False))
        return 0
    finally:
        if node is not None:
            if release is not None:
                release(node)
            if executor is not None:
                executor.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
