"""`armstack launch`: run a YAML launch file where `ros2 launch` is not installed;
`armstack demo`: run episodes through the whole graph against the simulator (armstack_eval).

    python -m armstack_bringup.cli launch <file.launch.yaml> [name:=value ...]
    python -m armstack_bringup.cli launch <package> <file.launch.yaml> [name:=value ...]

The second form finds the file under the package's share directory, as ros2 launch does.
Options: --show-args lists the file's launch arguments; --print evaluates the file and prints
the processes it would start without starting them; --log-dir sets where the per-launch log
directory is created (default: $ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log).

Exit codes: 0 clean (including shutdown by Ctrl-C); 2 invalid command line or launch file;
otherwise as documented in armstack_bringup.runner.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError
from ament_index_python.packages import get_package_share_directory

from armstack_bringup.errors import LaunchError
from armstack_bringup.frontend import ArgDecl
from armstack_bringup.frontend import Entity
from armstack_bringup.frontend import Group
from armstack_bringup.frontend import load_launch_file
from armstack_bringup.planner import describe_plan
from armstack_bringup.planner import plan_launch
from armstack_bringup.runner import Runner
from armstack_bringup.runner import forwarding_signals

logger = logging.getLogger("armstack_bringup")

EXIT_INVALID = 2


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """`name:=value` items into a dict; the value may itself contain ':='."""
    arguments = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch arguments are written name:=value, got {item!r}")
        arguments[name] = value
    return arguments


def find_in_package(package: str, file_name: str) -> Path:
    """The one file called `file_name` under the package's share directory."""
    try:
        share = Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise LaunchError(f"package '{package}' not found in the ament index") from None
    matches = sorted(
        Path(root) / file_name
        for root, _, files in os.walk(share, followlinks=True) if file_name in files)
    if len(matches) != 1:
        found = "no file" if not matches else f"several files: {[str(m) for m in matches]}"
        raise LaunchError(f"'{file_name}' in package '{package}': {found}")
    return matches[0]


def resolve_target(target: str, rest: list[str]) -> tuple[Path, dict[str, str]]:
    """(launch file, arguments) from `file [args]` or `package file [args]`."""
    if rest and ":=" not in rest[0] and not Path(target).is_file():
        return find_in_package(target, rest[0]), parse_launch_arguments(rest[1:])
    return Path(target), parse_launch_arguments(rest)


def _declared_arguments(entities: tuple[Entity, ...]) -> list[ArgDecl]:
    found: list[ArgDecl] = []
    for entity in entities:
        if isinstance(entity, ArgDecl):
            found.append(entity)
        elif isinstance(entity, Group):
            found += _declared_arguments(entity.entities)
    return found


def format_arguments(launch_file: Path) -> str:
    """The launch arguments a file declares (outside its includes), for --show-args."""
    declared = _declared_arguments(load_launch_file(launch_file))
    if not declared:
        return "No arguments."
    lines = ["Arguments (pass arguments as '<name>:=<value>'):"]
    for arg in declared:
        lines += ["", f"    '{arg.name}':", f"        {arg.description or 'no description given'}"]
        if arg.choices is not None:
            lines.append(f"        Valid choices are: {list(arg.choices)}")
        default = "required" if arg.default_text is None else f"default: '{arg.default_text}'"
        lines.append(f"        ({default})")
    return "\n".join(lines)


def default_log_root() -> Path:
    """Where ROS 2 puts logs: $ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log."""
    if os.environ.get("ROS_LOG_DIR"):
        return Path(os.environ["ROS_LOG_DIR"]).expanduser()
    ros_home = os.environ.get("ROS_HOME") or os.path.join("~", ".ros")
    return Path(ros_home).expanduser() / "log"


def make_log_dir(root: Path) -> Path:
    """A fresh directory per launch, named like ros2 launch's: <time>-<host>-<pid>."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")
    path = root / f"{stamp}-{socket.gethostname()}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _run_plan(launch_file: Path, arguments: dict[str, str], options: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="armstack_launch_") as params_dir:
        plan = plan_launch(launch_file, arguments, os.environ, Path(params_dir))
        for name in plan.undeclared_arguments:
            logger.warning("[launch]: argument '%s' is not declared by any 'arg'", name)
        if options.print:
            print(describe_plan(plan))
            return 0
        log_dir = make_log_dir(options.log_dir or default_log_root())
        with open(log_dir / "launch.log", "a", encoding="utf-8") as log_file:
            file_handler = logging.StreamHandler(log_file)
            file_handler.setFormatter(
                logging.Formatter("%(created).7f [%(levelname)s] %(message)s"))
            logger.addHandler(file_handler)
            try:
                logger.info("[launch]: all log files can be found below %s", log_dir)
                runner = Runner(plan.processes, screen_out=sys.stdout, screen_err=sys.stderr,
                                log_file=log_file)
                with forwarding_signals(runner):
                    return runner.run()
            finally:
                logger.removeHandler(file_handler)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `armstack launch ...` (the arguments after 'launch')."""
    parser = argparse.ArgumentParser(
        prog="armstack launch",
        description="Run a YAML launch file (the subset described in LAUNCHER.md).")
    parser.add_argument("target", help="launch file, or a package whose share dir holds it")
    parser.add_argument("rest", nargs="*", metavar="[file] name:=value",
                        help="launch file name (after a package) and launch arguments")
    parser.add_argument("--show-args", "-s", action="store_true",
                        help="list the launch file's arguments and exit")
    parser.add_argument("--print", "-p", action="store_true",
                        help="print the processes the launch would start, without starting them")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="directory for per-launch log directories")
    return parser


def launch_main(argv: list[str]) -> int:
    """`armstack launch ...`; argv holds the arguments after 'launch'."""
    # Intermixed: options may follow the name:=value arguments, as with ros2 launch.
    options = build_parser().parse_intermixed_args(argv)
    try:
        launch_file, arguments = resolve_target(options.target, options.rest)
        if options.show_args:
            print(format_arguments(launch_file))
            return 0
        return _run_plan(launch_file, arguments, options)
    except LaunchError as exc:
        logger.error("[launch]: %s", exc)
        return EXIT_INVALID


def demo_main(argv: list[str]) -> int:
    """`armstack demo`: episodes through the whole graph, then the summary (armstack_eval)."""
    # Imported here: it brings in rclpy and the evaluation's plotting, which `launch` never needs.
    from armstack_eval.evaluate import demo_main as run_demo

    return run_demo(argv)


COMMANDS = {"launch": launch_main, "demo": demo_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: armstack {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return EXIT_INVALID
    # The launcher's own messages go to stderr, like ros2 launch's "[INFO] [talker-1]: ...".
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return COMMANDS[argv[0]](argv[1:])
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
