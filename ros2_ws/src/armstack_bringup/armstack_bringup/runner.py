"""Run a LaunchPlan's processes: output, exits, respawns and an orderly shutdown.

Each process is started in its own process group, so the terminal's Ctrl-C reaches only the
launcher, which then shuts every process down as ros2 launch does: SIGINT to each group, SIGTERM
to those still running after the process's sigterm_timeout (default 5 s), SIGKILL after a further
sigkill_timeout (default 5 s). A second Ctrl-C sends SIGTERM at once, a third SIGKILL.

When a process exits, what is left of its group (children it spawned and did not reap) is killed,
so no orphan survives a node. The exit is reported with its code; then, unless the launch is
already shutting down:

- `on_exit: shutdown` ends the whole launch (the launcher exits with that process's code);
- `respawn` restarts it after respawn_delay, up to respawn_max_retries times (any exit code);
- otherwise it stays down, and the launch ends once no process is left running.

Exit code of `run()`: 0 after a requested shutdown (Ctrl-C, SIGTERM); the code of the process
that triggered an on_exit shutdown (128 + signal number if it was killed by a signal); when every
process ended on its own, 0 if all exited with 0, else 1.

A single thread multiplexes all pipes with `selectors`; it wakes at least every 0.1 s to reap
exits and check deadlines, so signal handlers only have to bump a counter.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TextIO

from armstack_bringup.planner import ProcessSpec

logger = logging.getLogger(__name__)

_POLL_PERIOD_S = 0.1
_READ_CHUNK = 65536
_START_FAILED = 127  # exit code reported for a process that could not be started (shell's)


@dataclass
class _Process:
    spec: ProcessSpec
    popen: subprocess.Popen | None = None
    respawns: int = 0
    restart_at: float | None = None
    term_at: float | None = None  # shutdown: when to escalate to SIGTERM
    kill_at: float | None = None  # shutdown: when to escalate to SIGKILL
    exit_code: int | None = None
    partial: dict[str, bytearray] = field(default_factory=dict)  # stream -> unterminated line

    @property
    def running(self) -> bool:
        return self.popen is not None


def launcher_exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class Runner:
    """Starts the processes of a plan and supervises them until the launch ends."""

    def __init__(self, specs: list[ProcessSpec], *, screen_out: TextIO, screen_err: TextIO,
                 log_file: TextIO | None = None) -> None:
        self._processes = [_Process(spec) for spec in specs]
        self._screen = {"stdout": screen_out, "stderr": screen_err}
        self._log_file = log_file
        self._selector = selectors.DefaultSelector()
        self._interrupts = 0  # bumped by signal handlers
        self._interrupts_handled = 0
        self._shutting_down = False
        self._exit_code: int | None = None

    def interrupt(self) -> None:
        """Request shutdown; safe to call from a signal handler. Repeated calls escalate."""
        self._interrupts += 1

    def run(self) -> int:
        """Start everything, supervise until the launch ends, return the launcher's exit code."""
        for process in self._processes:
            self._start(process)
        while not self._finished():
            now = time.monotonic()
            self._handle_interrupts(now)
            self._restart_due(now)
            self._escalate(now)
            for key, _ in self._selector.select(self._timeout(now)):
                process, stream = key.data
                self._read(process, stream, key.fileobj)
            self._reap()
        self._selector.close()
        return self._result()

    # -- starting and stopping -------------------------------------------------------------

    def _start(self, process: _Process) -> None:
        if self._shutting_down:
            return
        spec = process.spec
        try:
            # process_group=0: a group of its own, so signals reach the node's children too.
            popen = subprocess.Popen(
                spec.cmd, env=spec.env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
        except OSError as exc:
            logger.error("[%s]: failed to start %r: %s", spec.label, spec.cmd[0], exc)
            self._after_exit(process, _START_FAILED, can_respawn=False)
            return
        process.popen = popen
        process.term_at = process.kill_at = None
        for stream, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, selectors.EVENT_READ, (process, stream))
        logger.info("[%s]: process started with pid [%d]", spec.label, popen.pid)

    def _signal(self, process: _Process, signum: signal.Signals) -> None:
        assert process.popen is not None
        try:
            os.killpg(process.popen.pid, signum)
        except ProcessLookupError:
            pass

    def _begin_shutdown(self, reason: str, exit_code: int | None) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        self._exit_code = exit_code
        logger.info("[launch]: %s; shutting down", reason)
        now = time.monotonic()
        for process in self._processes:
            process.restart_at = None
            if process.running:
                self._signal(process, signal.SIGINT)
                process.term_at = now + process.spec.sigterm_timeout_s

    def _handle_interrupts(self, now: float) -> None:
        while self._interrupts_handled < self._interrupts:
            self._interrupts_handled += 1
            if self._interrupts_handled == 1:
                self._begin_shutdown("user interrupted (SIGINT/SIGTERM)", None)
                continue
            for process in self._processes:
                if not process.running:
                    continue
                if self._interrupts_handled == 2 and process.kill_at is None:
                    process.term_at = now
                else:
                    process.kill_at = now
            logger.warning("[launch]: interrupted again, escalating")

    def _escalate(self, now: float) -> None:
        for process in self._processes:
            if not process.running:
                continue
            label = process.spec.label
            if process.kill_at is not None and now >= process.kill_at:
                logger.error("[%s]: still running, sending SIGKILL", label)
                self._signal(process, signal.SIGKILL)
                process.kill_at = process.term_at = float("inf")
            elif process.term_at is not None and now >= process.term_at:
                logger.warning("[%s]: did not stop after SIGINT, sending SIGTERM", label)
                self._signal(process, signal.SIGTERM)
                process.term_at = float("inf")
                process.kill_at = now + process.spec.sigkill_timeout_s

    def _restart_due(self, now: float) -> None:
        for process in self._processes:
            if process.restart_at is not None and now >= process.restart_at:
                process.restart_at = None
                self._start(process)

    # -- output ------------------------------------------------------------------------------

    def _read(self, process: _Process, stream: str, pipe: IO[bytes]) -> None:
        try:
            data = os.read(pipe.fileno(), _READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            self._feed(process, stream, data)
        else:
            self._close_pipe(process, stream, pipe)

    def _feed(self, process: _Process, stream: str, data: bytes) -> None:
        """Emit the complete lines of `data`; keep an unterminated tail for the next read."""
        buffer = process.partial.setdefault(stream, bytearray())
        buffer += data
        *lines, rest = buffer.split(b"\n")
        process.partial[stream] = bytearray(rest)
        for line in lines:
            self._emit(process, stream, line)
        self._flush()

    def _close_pipe(self, process: _Process, stream: str, pipe: IO[bytes]) -> None:
        self._selector.unregister(pipe)
        pipe.close()
        rest = process.partial.pop(stream, b"")
        if rest:
            self._emit(process, stream, bytes(rest))
            self._flush()

    def _emit(self, process: _Process, stream: str, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        output = process.spec.output
        # ros2 launch's aliases: 'screen' both streams to the screen, 'log' both to the log file
        # and stderr also to the screen, 'both' both streams to both.
        if output in ("screen", "both") or stream == "stderr":
            self._screen[stream].write(f"[{process.spec.label}] {text}\n")
        if output in ("log", "both") and self._log_file is not None:
            self._log_file.write(f"{time.time():.7f} [{process.spec.label}] {text}\n")

    def _flush(self) -> None:
        for handle in (*self._screen.values(), self._log_file):
            if handle is not None:
                handle.flush()

    # -- exits -------------------------------------------------------------------------------

    def _reap(self) -> None:
        for process in self._processes:
            if not process.running:
                continue
            assert process.popen is not None
            pid = process.popen.pid
            # WNOWAIT leaves the exited leader a zombie, so its pid (= the group id) cannot be
            # reused while we kill what remains of the group.
            status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if status is None:
                continue
            self._signal(process, signal.SIGKILL)
            returncode = process.popen.wait()
            self._drain(process, "stdout", process.popen.stdout)
            self._drain(process, "stderr", process.popen.stderr)
            process.popen = None
            self._report_exit(process, pid, returncode)
            self._after_exit(process, returncode, can_respawn=True)

    def _drain(self, process: _Process, stream: str, pipe: IO[bytes] | None) -> None:
        """Take the output an exited process left in its pipe, then close the pipe."""
        while pipe is not None and not pipe.closed:
            try:
                data = os.read(pipe.fileno(), _READ_CHUNK)
            except BlockingIOError:
                data = b""  # only killed leftovers of the group can still hold the pipe open
            if data:
                self._feed(process, stream, data)
            else:
                self._close_pipe(process, stream, pipe)

    def _report_exit(self, process: _Process, pid: int, returncode: int) -> None:
        label = process.spec.label
        if returncode == 0:
            logger.info("[%s]: process has finished cleanly [pid %d]", label, pid)
        else:
            logger.error("[%s]: process has died [pid %d, exit code %d, cmd '%s']",
                         label, pid, returncode, " ".join(process.spec.cmd))

    def _after_exit(self, process: _Process, returncode: int, *, can_respawn: bool) -> None:
        process.exit_code = returncode
        spec = process.spec
        if self._shutting_down:
            return
        if spec.shutdown_on_exit:
            self._begin_shutdown(f"{spec.label} exited and has on_exit: shutdown",
                                 launcher_exit_code(returncode))
        elif can_respawn and spec.respawn and (
                spec.respawn_max_retries < 0 or process.respawns < spec.respawn_max_retries):
            process.respawns += 1
            process.restart_at = time.monotonic() + spec.respawn_delay_s
            logger.info("[%s]: respawning in %.1f s", spec.label, spec.respawn_delay_s)

    # -- loop bookkeeping -------------------------------------------------------------------

    def _finished(self) -> bool:
        return not any(p.running or p.restart_at is not None for p in self._processes)

    def _timeout(self, now: float) -> float:
        deadlines = [now + _POLL_PERIOD_S]
        for process in self._processes:
            deadlines += [t for t in (process.restart_at, process.term_at, process.kill_at)
                          if t is not None]
        return max(0.0, min(deadlines) - now)

    def _result(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        if self._shutting_down:
            return 0
        return 0 if all(p.exit_code == 0 for p in self._processes) else 1


@contextmanager
def forwarding_signals(runner: Runner) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM to the launcher request (and escalate) shutdown."""
    def handler(signum: int, frame: object) -> None:
        runner.interrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
