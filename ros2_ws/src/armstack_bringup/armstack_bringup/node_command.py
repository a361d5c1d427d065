"""How launch_ros turns a `node` into a command line; plain functions, no processes.

The command launch_ros (Jazzy, actions/node.py) builds, in this order:

    <lib/<pkg>/<exec>> [args...] [--ros-args <ros_args...>] --ros-args
        [-r __node:=<name>] [-r __ns:=<namespace>]
        [--params-file <file>]...   one per `param` entry, in file order
        [-r <from>:=<to>]...

- Each `param` entry with a name becomes its own temporary parameter file; a `param` with `from`
  passes that file as it is. Later files override earlier ones for the same parameter (rcl reads
  them in order), except that entries under a node's fully qualified name beat `/**` entries.
- A generated file is keyed by the node's fully qualified name when both the name and a
  namespace (from the node or an enclosing push_ros_namespace) are known, else by `/**`.
- The namespace is the node's `namespace` joined onto the pushed one when relative, made
  absolute; `-r __ns:=` is passed only when either exists.
"""

from __future__ import annotations

import os
import re
import shutil

import yaml
from ament_index_python.packages import PackageNotFoundError
from ament_index_python.packages import get_package_prefix

from armstack_bringup.errors import LaunchError
from armstack_bringup.frontend import ParamValue
from armstack_bringup.frontend import Substituted
from armstack_bringup.substitutions import Scope
from armstack_bringup.substitutions import perform

EvaluatedValue = str | int | float | bool | list[str] | list[int] | list[float] | list[bool]

_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def prefix_namespace(base: str | None, namespace: str | None) -> str | None:
    """`namespace` under `base` if it is relative; None if both are None. No trailing '/'."""
    if base is None and namespace is None:
        return None
    if namespace is None:
        combined = base
    elif not base or namespace.startswith("/"):
        combined = namespace
    else:
        combined = ("" if base == "/" else base) + "/" + namespace
    assert combined is not None
    return combined if combined == "/" else combined.rstrip("/")


def make_namespace_absolute(namespace: str | None) -> str | None:
    if namespace is None or namespace.startswith("/"):
        return namespace
    return "/" + namespace


def validate_node_name(name: str) -> None:
    """The rules of rmw_validate_node_name: [A-Za-z0-9_], not starting with a digit."""
    if not _NAME_TOKEN.fullmatch(name) or len(name) > 255:
        raise LaunchError(
            f"invalid node name '{name}': use letters, digits and '_', not starting with a digit")


def validate_namespace(namespace: str) -> None:
    """The rules of rmw_validate_namespace for an absolute namespace."""
    if namespace == "/":
        return
    tokens = namespace.split("/")
    if tokens[0] != "" or not all(_NAME_TOKEN.fullmatch(token) for token in tokens[1:]):
        raise LaunchError(
            f"invalid namespace '{namespace}': '/'-separated tokens of letters, digits and '_', "
            "each not starting with a digit")


def fully_qualified_name(namespace: str, name: str) -> str:
    return ("" if namespace == "/" else namespace) + "/" + name


def resolve_node_executable(package: str, executable: str) -> str:
    """`<prefix>/lib/<package>/<executable>`, the prefix found in the ament index."""
    try:
        prefix = get_package_prefix(package)
    except PackageNotFoundError:
        raise LaunchError(
            f"package '{package}' not found in the ament index (AMENT_PREFIX_PATH="
            f"{os.environ.get('AMENT_PREFIX_PATH', '')!r})") from None
    libexec = os.path.join(prefix, "lib", package)
    if not os.path.isdir(libexec):
        raise LaunchError(
            f"package '{package}' found at '{prefix}', but its libexec directory '{libexec}' "
            "does not exist")
    found = shutil.which(executable, path=libexec)
    if found is None:
        raise LaunchError(f"executable '{executable}' not found in '{libexec}'")
    return found


def _scalar_from_yaml(text: str, name: str) -> EvaluatedValue:
    # launch keeps an empty result as the empty string rather than YAML null.
    if text == "":
        return ""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LaunchError(f"parameter '{name}': cannot read {text!r} as YAML ({exc})") from None
    if isinstance(loaded, (str, int, float, bool)):
        return loaded
    if isinstance(loaded, list) and loaded and _uniform_scalars(loaded):
        return loaded
    raise LaunchError(
        f"parameter '{name}': {text!r} is not a scalar or a non-empty list of one scalar type")


def _uniform_scalars(values: list) -> bool:
    kinds = {type(value) for value in values}
    return len(kinds) == 1 and kinds <= {str, int, float, bool}


def evaluate_param_value(value: ParamValue, scope: Scope, name: str) -> EvaluatedValue:
    """A parameter's final value: literals as written, substituted strings read as YAML."""
    if isinstance(value, Substituted):
        return _scalar_from_yaml(perform(value.subst, scope), name)
    if not isinstance(value, list):
        return value
    items = []
    for item in value:
        evaluated = _scalar_from_yaml(perform(item.subst, scope), name) \
            if isinstance(item, Substituted) else item
        if isinstance(evaluated, list):
            raise LaunchError(f"parameter '{name}': a list item cannot be a list")
        items.append(evaluated)
    if items and not _uniform_scalars(items):
        raise LaunchError(f"parameter '{name}': list items {items!r} mix types")
    return items


def params_file_text(node_key: str, params: dict[str, EvaluatedValue]) -> str:
    """The parameter YAML launch_ros writes for one `param` entry."""
    return yaml.safe_dump({node_key: {"ros__parameters": params}}, default_flow_style=False,
                          sort_keys=False)


def node_command(
    executable: str,
    args: list[str],
    ros_args: list[str] | None,
    name: str | None,
    namespace: str | None,
    params_files: list[str],
    remaps: list[tuple[str, str]],
) -> list[str]:
    """The node's argv, in launch_ros's order (see the module docstring)."""
    cmd = [executable, *args]
    if ros_args is not None:
        cmd += ["--ros-args", *ros_args]
    cmd.append("--ros-args")
    if name is not None:
        cmd += ["-r", f"__node:={name}"]
    if namespace is not None:
        cmd += ["-r", f"__ns:={namespace}"]
    for path in params_files:
        cmd += ["--params-file", path]
    for source, target in remaps:
        cmd += ["-r", f"{source}:={target}"]
    return cmd
