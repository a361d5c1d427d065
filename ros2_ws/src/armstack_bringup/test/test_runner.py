"""Process-level behaviour of the runner: real child processes started from YAML launch files."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from armstack_bringup.planner import plan_launch
from armstack_bringup.runner import Runner
from armstack_bringup.runner import launcher_exit_code

FAKE_NODE = Path(__file__).with_name("fake_node.py")
GIVE_UP_S = 10.0  # a broken runner must not hang the suite: escalate to SIGKILL after this


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    log: str
    elapsed_s: float


def node(behaviour: str, record: Path, *extra: object, **attrs: str) -> str:
    """One `executable` entity running fake_node.py, as a line of YAML."""
    cmd = " ".join(str(x) for x in (sys.executable, FAKE_NODE, behaviour, record, *extra))
    fields = ", ".join([f"cmd: '{cmd}'", *(f"{k}: {v}" for k, v in attrs.items())])
    return f"- executable: {{{fields}}}"


def events(record: Path) -> list[tuple[str, int]]:
    if not record.exists():
        return []
    return [(event, int(pid)) for event, pid in
            (line.split() for line in record.read_text().splitlines())]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A killed process re-parented to an init that does not reap stays a zombie: it is dead.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def alive(pid: int) -> bool:
    """Whether `pid` still runs 1 s from now (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + 1.0
    while _running(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def launch(tmp_path: Path, write_launch):
    """launch(lines, interrupt_when=None, interrupts=1) -> Outcome of running a launch file.

    interrupt_when: a predicate polled every 20 ms; when it holds, the runner is interrupted
    `interrupts` times (as Ctrl-C would).
    """
    params_dir = tmp_path / "params"
    params_dir.mkdir()

    def run(lines: list[str], interrupt_when: Callable[[], bool] | None = None,
            interrupts: int = 1) -> Outcome:
        launch_file = write_launch("\n".join(["launch:", *lines]))
        plan = plan_launch(launch_file, {}, os.environ, params_dir)
        out, err, log = io.StringIO(), io.StringIO(), io.StringIO()
        runner = Runner(plan.processes, screen_out=out, screen_err=err, log_file=log)
        done = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + GIVE_UP_S
            while not done.wait(0.02):
                if interrupt_when is not None and interrupt_when():
                    for _ in range(interrupts):
                        runner.interrupt()
                    return
                if time.monotonic() > deadline:
                    for _ in range(3):
                        runner.interrupt()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        start = time.monotonic()
        code = runner.run()
        elapsed = time.monotonic() - start
        done.set()
        watcher.join()
        assert elapsed < GIVE_UP_S, "runner had to be killed by the test's watchdog"
        return Outcome(code, out.getvalue(), err.getvalue(), log.getvalue(), elapsed)
    return run


def started(record: Path, count: int) -> Callable[[], bool]:
    return lambda: sum(e == "start" for e, _ in events(record)) >= count


@pytest.mark.parametrize("output, on_screen_out, on_screen_err, in_log", [
    ("screen", True, True, False),
    ("log", False, True, True),  # launch's default: stderr still reaches the screen
    ("both", True, True, True),
])
def test_output_routing(launch, tmp_path, output, on_screen_out, on_screen_err, in_log) -> None:
    record = tmp_path / "record"
    outcome = launch([node("exit", record, 0, name="talker", output=output)])
    assert outcome.code == 0
    assert ("[talker-1] to stdout" in outcome.stdout) == on_screen_out
    assert ("[talker-1] unterminated" in outcome.stdout) == on_screen_out  # flushed at exit
    assert ("[talker-1] to stderr" in outcome.stderr) == on_screen_err
    assert ("[talker-1] to stdout" in outcome.log) == in_log
    assert ("[talker-1] to stderr" in outcome.log) == in_log


def test_failure_is_reported_and_fails_the_launch(launch, tmp_path, caplog) -> None:
    record = tmp_path / "record"
    with caplog.at_level(logging.INFO, logger="armstack_bringup"):
        outcome = launch([node("exit", record, 3), node("exit", tmp_path / "ok", 0)])
    (_, pid), = events(record)
    assert f"[python-1]: process has died [pid {pid}, exit code 3, cmd '" in caplog.text
    assert "[python-2]: process has finished cleanly" in caplog.text
    assert outcome.code == 1  # everything ended on its own, not all with 0


def test_respawn_with_delay_and_retry_limit(launch, tmp_path) -> None:
    record = tmp_path / "record"
    outcome = launch([node("exit", record, 3, respawn="'true'", respawn_delay=0.3,
                           respawn_max_retries=2)])
    starts = [e for e in events(record) if e[0] == "start"]
    assert len(starts) == 3  # first run plus two respawns
    assert len({pid for _, pid in starts}) == 3
    assert outcome.elapsed_s >= 2 * 0.3
    assert outcome.code == 1


@pytest.mark.parametrize("exit_code", [4, 0])
def test_on_exit_shutdown_ends_the_launch(launch, tmp_path, exit_code: int) -> None:
    required, other = tmp_path / "required", tmp_path / "other"
    outcome = launch([
        node("polite", other),
        node("exit", required, exit_code, 0.5, on_exit="shutdown"),
    ])
    assert outcome.code == exit_code
    assert [e for e, _ in events(other)] == ["start", "SIGINT"]
    assert not any(alive(pid) for _, pid in events(other))


def test_interrupt_shuts_everything_down_cleanly(launch, tmp_path) -> None:
    records = [tmp_path / "a", tmp_path / "b", tmp_path / "spawner"]
    outcome = launch(
        [node("polite", records[0]), node("polite", records[1], respawn="'true'"),
         node("spawner", records[2])],
        interrupt_when=lambda: all(started(r, 1)() for r in records))
    assert outcome.code == 0
    for record in records:
        assert "SIGINT" in [e for e, _ in events(record)]  # respawn does not restart on shutdown
        assert not any(alive(pid) for _, pid in events(record))
    grandchild = [pid for e, pid in events(records[2]) if e == "grandchild"]
    assert grandchild and not alive(grandchild[0])  # the group's leftovers were killed
    assert outcome.elapsed_s < 3.0


def test_shutdown_escalates_to_sigterm_then_sigkill(launch, tmp_path, caplog) -> None:
    stubborn, deaf = tmp_path / "stubborn", tmp_path / "deaf"
    with caplog.at_level(logging.INFO, logger="armstack_bringup"):
        outcome = launch(
            [node("stubborn", stubborn, name="stubborn", sigterm_timeout=0.3),
             node("deaf", deaf, name="deaf", sigterm_timeout=0.3, sigkill_timeout=0.3)],
            interrupt_when=lambda: started(stubborn, 1)() and started(deaf, 1)())
    assert outcome.code == 0
    assert [e for e, _ in events(stubborn)] == ["start", "SIGINT", "SIGTERM"]
    assert [e for e, _ in events(deaf)] == ["start", "SIGINT", "SIGTERM"]
    assert "[stubborn-1]: did not stop after SIGINT, sending SIGTERM" in caplog.text
    assert "[deaf-2]: still running, sending SIGKILL" in caplog.text
    assert "exit code -9" in caplog.text
    assert not any(alive(pid) for r in (stubborn, deaf) for _, pid in events(r))
    assert 0.6 <= outcome.elapsed_s < 3.0


def test_repeated_interrupts_escalate_at_once(launch, tmp_path) -> None:
    deaf = tmp_path / "deaf"
    outcome = launch([node("deaf", deaf, sigterm_timeout=5.0, sigkill_timeout=5.0)],
                     interrupt_when=started(deaf, 1), interrupts=3)
    assert outcome.code == 0
    assert not any(alive(pid) for _, pid in events(deaf))
    assert outcome.elapsed_s < 3.0  # did not wait for the 5 s timeouts


def test_process_that_cannot_start(launch, tmp_path, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="armstack_bringup"):
        outcome = launch(["- executable: {cmd: /nonexistent/binary, on_exit: shutdown}"])
    assert "[binary-1]: failed to start '/nonexistent/binary'" in caplog.text
    assert outcome.code == 127


def test_no_processes_is_an_immediate_clean_exit(launch) -> None:
    assert launch(["- let: {name: a, value: b}"]).code == 0


@pytest.mark.parametrize("returncode, expected", [(0, 0), (3, 3), (-2, 130), (-9, 137)])
def test_launcher_exit_code(returncode: int, expected: int) -> None:
    assert launcher_exit_code(returncode) == expected
