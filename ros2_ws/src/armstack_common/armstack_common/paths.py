"""Where the one robot description, calibration and models live.

armstack keeps a single copy of each (design.md, "One home for each thing"): the
repository's top-level `config/` and `models/`. The same code runs from a source
checkout (pip-only way, `colcon build --symlink-install`) and from an install
space on a full ROS 2 system, where `armstack_bringup` installs `config/` into its
share directory. Resolution order:

1. `ARMSTACK_CONFIG_DIR` / `ARMSTACK_MODELS_DIR` / `ARMSTACK_LAUNCH_DIR` environment variables;
2. the checkout that holds this file (walk up until a folder has `config/robot/`);
3. the share directory of `armstack_bringup` (ament index).
"""

from __future__ import annotations

import os
from pathlib import Path

_BRINGUP_PACKAGE = "armstack_bringup"


class ArmstackPathError(FileNotFoundError):
    """A file armstack needs is missing; the message names it and what makes it."""


def _checkout_root() -> Path | None:
    # With --symlink-install the module resolves into the source tree, so the
    # checkout is an ancestor of the real path of this file.
    for parent in Path(__file__).resolve().parents:
        if (parent / "config" / "robot").is_dir() and (parent / "ros2_ws").is_dir():
            return parent
    return None


def _bringup_share() -> Path | None:
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(_BRINGUP_PACKAGE))
    except PackageNotFoundError:
        return None


def _resolve(env_var: str, folder: str) -> Path:
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ArmstackPathError(f"{env_var}={override} is not a directory")
        return path
    root = _checkout_root()
    if root is not None:
        return root / folder
    share = _bringup_share()
    if share is not None and (share / folder).is_dir():
        return share / folder
    raise ArmstackPathError(
        f"cannot find armstack's {folder}/ directory: set {env_var}, run from a "
        f"checkout, or install {_BRINGUP_PACKAGE}"
    )


def config_dir() -> Path:
    """The `config/` directory (robot description, calibration, parameters)."""
    return _resolve("ARMSTACK_CONFIG_DIR", "config")


def launch_dir() -> Path:
    """The `launch/` directory (the launch files users run, demo.launch.yaml among them)."""
    return _resolve("ARMSTACK_LAUNCH_DIR", "launch")


def models_dir() -> Path:
    """The `models/` directory (ONNX models with their model cards)."""
    return _resolve("ARMSTACK_MODELS_DIR", "models")


def config_file(relative: str) -> Path:
    """A file under `config/`, which must exist."""
    path = config_dir() / relative
    if not path.is_file():
        raise ArmstackPathError(f"config file not found: {path}")
    return path


def urdf_path() -> Path:
    """The one robot description every component reads (MuJoCo, IK, rviz)."""
    return config_file("robot/arm.urdf")


def user_path(value: str, folder: Path) -> Path:
    """A file a user named (a parameter, a command-line argument): an absolute or ~ path as
    given, a relative one from the working directory if it exists there, else one under
    `folder` (e.g. models_dir()); not checked to exist."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return folder / path


def model_location(value: str) -> Path:
    """Where the model a user named is (user_path under models/); not checked to exist."""
    return user_path(value, models_dir())


def resolve_model(value: str, made_by: str) -> Path:
    """The model a user named (model_location), which must be a file; the error names the
    path and the tool that makes it."""
    path = model_location(value)
    if not path.is_file():
        raise ArmstackPathError(f"model not found: {path} (made by: {made_by})")
    return path
