"""Evaluate parsed launch entities, in file order, into the list of processes to start.

Semantics follow ros2 launch (Jazzy), which executes entities one after the other:

- launch configurations (`arg`, `let`, `name:=value` arguments, include arguments) and the
  environment (`set_env`) change for every entity after them;
- a `group` (scoped by default) restores configurations, environment and the pushed ROS
  namespace when it ends; `scoped: false` lets them leak out;
- an `include` is not a scope: its arguments and whatever the included file sets stay set
  after it, as in ros2 launch (wrap it in a group to contain them);
- an `arg` keeps a value already given (command line or include) and otherwise takes its default;
  one with no default and no value is an error, as is a value outside its `choice` list;
- `if`/`unless` expressions must evaluate to true/false/1/0 (case-insensitive).

Parameter files generated for nodes are written into `params_dir`; everything else is pure.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from armstack_bringup.errors import LaunchError
from armstack_bringup.frontend import ArgDecl
from armstack_bringup.frontend import Condition
from armstack_bringup.frontend import Entity
from armstack_bringup.frontend import Executable
from armstack_bringup.frontend import Group
from armstack_bringup.frontend import Include
from armstack_bringup.frontend import Let
from armstack_bringup.frontend import Node
from armstack_bringup.frontend import ParamFile
from armstack_bringup.frontend import ProcessOptions
from armstack_bringup.frontend import PushNamespace
from armstack_bringup.frontend import SetEnv
from armstack_bringup.frontend import load_launch_file
from armstack_bringup import node_command as nc
from armstack_bringup.substitutions import Scope
from armstack_bringup.substitutions import perform

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("screen", "log", "both")
DEFAULT_OUTPUT = "log"  # launch's default: stdout to the log file, stderr also to the screen
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0  # launch's default sigterm_timeout and sigkill_timeout
# Launch configurations ros2 launch itself reads; setting them is not an unknown argument.
_BUILTIN_CONFIGURATIONS = frozenset({"sigterm_timeout", "sigkill_timeout"})


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run, fully resolved."""

    label: str  # output prefix, `<name>-<n>` as ros2 launch names processes
    cmd: tuple[str, ...]
    env: dict[str, str] = field(compare=False)
    cwd: str | None
    output: str  # one of OUTPUT_MODES
    respawn: bool
    respawn_delay_s: float
    respawn_max_retries: int  # < 0: no limit
    shutdown_on_exit: bool
    sigterm_timeout_s: float
    sigkill_timeout_s: float
    node_name: str | None = None  # fully qualified, for nodes with a known name and namespace
    generated_params: tuple[str, ...] = ()


@dataclass
class LaunchPlan:
    processes: list[ProcessSpec]
    declared_arguments: list[str]
    undeclared_arguments: list[str]  # given on the command line, declared by no `arg`


def _as_bool(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise LaunchError(f"{what} must be true, false, 1 or 0, got {text!r}")


def _shutdown_timeout(explicit: float | None, scope: Scope, name: str) -> float:
    if explicit is not None:
        return explicit
    configured = scope.configurations.get(name)
    if configured is None:
        return DEFAULT_SHUTDOWN_TIMEOUT_S
    try:
        return float(configured)
    except ValueError:
        raise LaunchError(
            f"launch configuration {name} must be a number, got {configured!r}") from None


class Planner:
    """Turns a launch file plus `name:=value` arguments into a LaunchPlan."""

    def __init__(self, arguments: Mapping[str, str], environment: Mapping[str, str],
                 params_dir: Path) -> None:
        self._arguments = dict(arguments)
        self._environment = dict(environment)
        self._params_dir = params_dir
        self._processes: list[ProcessSpec] = []
        self._declared: list[str] = []
        self._include_stack: list[Path] = []

    def plan(self, launch_file: Path) -> LaunchPlan:
        scope = Scope(dict(self._arguments), dict(self._environment))
        self._include_file(launch_file, scope)
        undeclared = sorted(set(self._arguments) - set(self._declared) - _BUILTIN_CONFIGURATIONS)
        return LaunchPlan(self._processes, self._declared, undeclared)

    def _include_file(self, path: Path, scope: Scope) -> None:
        # Relative paths are relative to the working directory, as in ros2 launch; $(dirname)
        # keeps symlinks (e.g. share/armstack_bringup/launch) as written.
        path = Path(os.path.abspath(path))
        real = path.resolve()
        if real in self._include_stack:
            chain = " -> ".join(str(p) for p in [*self._include_stack, real])
            raise LaunchError(f"include cycle: {chain}")
        entities = load_launch_file(path)
        self._include_stack.append(real)
        outer_file, scope.current_file = scope.current_file, path
        self._run(entities, scope)
        scope.current_file = outer_file
        self._include_stack.pop()

    def _run(self, entities: tuple[Entity, ...], scope: Scope) -> None:
        for entity in entities:
            try:
                if self._condition_holds(entity.condition, scope):
                    self._execute(entity, scope)
            except LaunchError as exc:
                raise exc.at(entity.where) from None

    def _condition_holds(self, condition: Condition | None, scope: Scope) -> bool:
        if condition is None:
            return True
        kind = "unless" if condition.negate else "if"
        value = _as_bool(perform(condition.expression, scope), f"'{kind}' condition")
        return value != condition.negate

    def _execute(self, entity: Entity, scope: Scope) -> None:
        if isinstance(entity, ArgDecl):
            self._declare(entity, scope)
        elif isinstance(entity, Let):
            scope.configurations[perform(entity.name, scope)] = perform(entity.value, scope)
        elif isinstance(entity, SetEnv):
            scope.environment[perform(entity.name, scope)] = perform(entity.value, scope)
        elif isinstance(entity, PushNamespace):
            self._push_namespace(entity, scope)
        elif isinstance(entity, Group):
            self._run(entity.entities, scope.copy() if entity.scoped else scope)
        elif isinstance(entity, Include):
            for name, value in entity.arguments:
                scope.configurations[perform(name, scope)] = perform(value, scope)
            self._include_file(Path(perform(entity.file, scope)), scope)
        elif isinstance(entity, Executable):
            self._add_executable(entity, scope)
        else:
            self._add_node(entity, scope)

    def _declare(self, arg: ArgDecl, scope: Scope) -> None:
        if arg.name not in scope.configurations:
            if arg.default is None:
                described = f" ({arg.description})" if arg.description else ""
                raise LaunchError(
                    f"required launch argument '{arg.name}'{described} was not provided; "
                    f"pass {arg.name}:=<value>")
            scope.configurations[arg.name] = perform(arg.default, scope)
        value = scope.configurations[arg.name]
        if arg.choices is not None and value not in arg.choices:
            raise LaunchError(
                f"launch argument '{arg.name}' is {value!r}, not one of {list(arg.choices)}")
        self._declared.append(arg.name)

    def _push_namespace(self, push: PushNamespace, scope: Scope) -> None:
        previous = scope.configurations.get("ros_namespace")
        pushed = perform(push.namespace, scope)
        namespace = nc.make_namespace_absolute(nc.prefix_namespace(previous, pushed))
        assert namespace is not None
        nc.validate_namespace(namespace)
        scope.configurations["ros_namespace"] = namespace

    def _label(self, base: str) -> str:
        return f"{base}-{len(self._processes) + 1}"

    def _spec(self, label: str, cmd: list[str], options: ProcessOptions, scope: Scope, *,
              node_name: str | None = None, generated_params: tuple[str, ...] = ()) -> ProcessSpec:
        env = dict(scope.environment)
        for name, value in options.env:
            env[perform(name, scope)] = perform(value, scope)
        output = DEFAULT_OUTPUT if options.output is None else perform(options.output, scope)
        if output not in OUTPUT_MODES:
            raise LaunchError(f"output must be one of {list(OUTPUT_MODES)}, got {output!r}")
        respawn = options.respawn is not None and _as_bool(
            perform(options.respawn, scope), "respawn")
        retries = options.respawn_max_retries
        return ProcessSpec(
            label=label, cmd=tuple(cmd), env=env,
            cwd=None if options.cwd is None else perform(options.cwd, scope),
            output=output, respawn=respawn,
            respawn_delay_s=options.respawn_delay or 0.0,
            respawn_max_retries=-1 if retries is None else retries,
            shutdown_on_exit=options.shutdown_on_exit,
            sigterm_timeout_s=_shutdown_timeout(options.sigterm_timeout, scope, "sigterm_timeout"),
            sigkill_timeout_s=_shutdown_timeout(options.sigkill_timeout, scope, "sigkill_timeout"),
            node_name=node_name, generated_params=generated_params)

    def _add_executable(self, executable: Executable, scope: Scope) -> None:
        cmd = [perform(arg, scope) for arg in executable.cmd]
        base = os.path.basename(cmd[0]) if executable.name is None \
            else perform(executable.name, scope)
        self._processes.append(self._spec(self._label(base), cmd, executable.options, scope))

    def _add_node(self, node: Node, scope: Scope) -> None:
        executable = perform(node.executable, scope)
        if node.package is not None:
            executable = nc.resolve_node_executable(perform(node.package, scope), executable)
        name = None if node.name is None else perform(node.name, scope)
        if name is not None:
            nc.validate_node_name(name)
        own_namespace = None if node.namespace is None else perform(node.namespace, scope)
        namespace = nc.make_namespace_absolute(
            nc.prefix_namespace(scope.configurations.get("ros_namespace"), own_namespace))
        if namespace is not None:
            nc.validate_namespace(namespace)
        full_name = None if name is None or namespace is None \
            else nc.fully_qualified_name(namespace, name)
        base = os.path.basename(executable) if node.exec_name is None \
            else perform(node.exec_name, scope)
        label = self._label(base)
        params_files, generated = self._params_files(node, scope, label, full_name or "/**")
        cmd = nc.node_command(
            executable,
            [perform(arg, scope) for arg in node.args],
            None if node.ros_args is None else [perform(arg, scope) for arg in node.ros_args],
            name, namespace, params_files,
            [(perform(source, scope), perform(target, scope)) for source, target in node.remaps])
        self._processes.append(self._spec(label, cmd, node.options, scope, node_name=full_name,
                                          generated_params=tuple(generated)))

    def _params_files(self, node: Node, scope: Scope, label: str,
                      node_key: str) -> tuple[list[str], list[str]]:
        """All --params-file paths of a node in order, and which of them were generated."""
        files: list[str] = []
        generated: list[str] = []
        for index, entry in enumerate(node.params, 1):
            if isinstance(entry, ParamFile):
                path = os.path.abspath(perform(entry.path, scope))
                if not os.path.isfile(path):
                    # ros2 launch warns and skips a missing parameter file; so do we.
                    logger.warning("[%s] parameter file is not a file, skipped: %s", label, path)
                    continue
                files.append(path)
                continue
            values = {}
            for name_subst, value in entry.items:
                name = perform(name_subst, scope)
                values[name] = nc.evaluate_param_value(value, scope, name)
            path = str(self._params_dir / f"{label}.params{index}.yaml")
            Path(path).write_text(nc.params_file_text(node_key, values), encoding="utf-8")
            files.append(path)
            generated.append(path)
        return files, generated


def plan_launch(launch_file: Path, arguments: Mapping[str, str], environment: Mapping[str, str],
                params_dir: Path) -> LaunchPlan:
    """Evaluate `launch_file` with `arguments` (`name:=value` pairs) into a LaunchPlan."""
    return Planner(arguments, environment, params_dir).plan(launch_file)


def describe_plan(plan: LaunchPlan) -> str:
    """A human-readable dump of a plan: each process's command and generated parameters."""
    lines = []
    for spec in plan.processes:
        lines.append(f"[{spec.label}] {shlex.join(spec.cmd)}")
        flags = [f"output={spec.output}"]
        if spec.respawn:
            flags.append(f"respawn (delay {spec.respawn_delay_s} s)")
        if spec.shutdown_on_exit:
            flags.append("on_exit=shutdown")
        if spec.cwd:
            flags.append(f"cwd={spec.cwd}")
        lines.append("    " + ", ".join(flags))
        for path in spec.generated_params:
            content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            lines.append(f"    {path}: {content}")
    return "\n".join(lines)
