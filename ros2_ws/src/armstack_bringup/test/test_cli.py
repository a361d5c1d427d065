"""`armstack launch` command line, and the launcher as a real process receiving signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from armstack_bringup.cli import default_log_root
from armstack_bringup.cli import main
from armstack_bringup.cli import make_log_dir
from armstack_bringup.cli import parse_launch_arguments
from armstack_bringup.cli import resolve_target
from armstack_bringup.errors import LaunchError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
FAKE_NODE = Path(__file__).with_name("fake_node.py")


@pytest.mark.parametrize("items, expected", [
    ([], {}),
    (["a:=1", "b:="], {"a": "1", "b": ""}),
    (["url:=x:=y"], {"url": "x:=y"}),
])
def test_parse_launch_arguments(items, expected) -> None:
    assert parse_launch_arguments(items) == expected


@pytest.mark.parametrize("item", ["a=1", ":=1", "flag"])
def test_parse_launch_arguments_errors(item: str) -> None:
    with pytest.raises(LaunchError, match="name:=value"):
        parse_launch_arguments([item])


def test_resolve_target_file_and_package(ament_prefix: Path, write_launch) -> None:
    local = write_launch("launch: []\n")
    assert resolve_target(str(local), ["a:=1"]) == (local, {"a": "1"})
    installed = ament_prefix / "share/demo_pkg/launch/demo.launch.yaml"
    installed.parent.mkdir()
    installed.write_text("launch: []\n")
    assert resolve_target("demo_pkg", ["demo.launch.yaml", "a:=1"]) == (installed, {"a": "1"})
    with pytest.raises(LaunchError, match="'other.launch.yaml' in package 'demo_pkg': no file"):
        resolve_target("demo_pkg", ["other.launch.yaml"])
    (ament_prefix / "share/demo_pkg/config/demo.launch.yaml").write_text("launch: []\n")
    with pytest.raises(LaunchError, match="several files"):
        resolve_target("demo_pkg", ["demo.launch.yaml"])
    with pytest.raises(LaunchError, match="package 'nope' not found"):
        resolve_target("nope", ["x.launch.yaml"])


LAUNCH = """
    launch:
    - arg: {name: mode, default: sim, description: world to run,
            choice: [{value: sim}, {value: real}]}
    - group:
      - arg: {name: robot, description: robot model}
    - executable: {cmd: echo $(var mode) $(var robot), output: screen}
"""


def test_show_args(write_launch, capsys) -> None:
    assert main(["launch", str(write_launch(LAUNCH)), "--show-args"]) == 0
    out = capsys.readouterr().out
    assert "'mode':\n        world to run\n        Valid choices are: ['sim', 'real']\n" \
           "        (default: 'sim')" in out
    assert "'robot':\n        robot model\n        (required)" in out


def test_print_plan(write_launch, capsys) -> None:
    argv = ["launch", str(write_launch(LAUNCH)), "robot:=wx250", "--print", "mode:=real"]
    assert main(argv) == 0
    assert "[echo-1] echo real wx250\n    output=screen" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["launch", "{file}"], "required launch argument 'robot' (robot model) was not provided"),
    (["launch", "{file}", "robot:=x", "mode:=bad"], "launch argument 'mode' is 'bad'"),
    (["launch", "{file}", "robot"], "written name:=value, got 'robot'"),
    (["launch", "/no/such.launch.yaml"], "cannot read launch file"),
])
def test_invalid_launch_exits_2(write_launch, capsys, argv, message) -> None:
    path = str(write_launch(LAUNCH))
    assert main([a.format(file=path) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_command(capsys) -> None:
    assert main(["run", "x"]) == 2
    assert "usage: armstack {launch,demo}" in capsys.readouterr().err


def test_log_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "logs"))
    assert default_log_root() == tmp_path / "logs"
    monkeypatch.delenv("ROS_LOG_DIR")
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "home"))
    assert default_log_root() == tmp_path / "home" / "log"
    monkeypatch.delenv("ROS_HOME")
    assert default_log_root() == Path("~/.ros/log").expanduser()
    made = make_log_dir(tmp_path / "root")
    assert made.is_dir() and re.fullmatch(r"\d{4}(-\d\d){5}-\d{6}-.+-\d+", made.name)


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_launcher_process_shuts_down_on_signal(tmp_path: Path, write_launch, signum) -> None:
    records = [tmp_path / "screen", tmp_path / "logged"]
    launch_file = write_launch(f"""
        launch:
        - executable: {{cmd: '{sys.executable} {FAKE_NODE} polite {records[0]}', output: screen}}
        - executable: {{cmd: '{sys.executable} {FAKE_NODE} polite {records[1]}', name: logged}}
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), *sys.path])}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "armstack_bringup.cli", "launch", str(launch_file),
         "--log-dir", str(tmp_path / "logs")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: all(r.exists() and "start" in r.read_text() for r in records))
        launcher.send_signal(signum)
        stdout, stderr = launcher.communicate(timeout=10)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, stderr
    pids = [int(r.read_text().split()[1]) for r in records]
    for record in records:
        assert record.read_text().split()[::2] == ["start", "SIGINT"]
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert "user interrupted" in stderr
    (log_dir,) = (tmp_path / "logs").iterdir()
    log = (log_dir / "launch.log").read_text()
    assert "[python-1]: process started" in log
    assert "[logged-2]: process has finished cleanly" in log
