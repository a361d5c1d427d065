"""Fixtures: a throw-away ament install prefix and launch files written into tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def ament_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix holding package `demo_pkg` (executables `talker`, `listener`, a
    share/config/params.yaml), registered in the ament index through AMENT_PREFIX_PATH."""
    prefix = tmp_path / "install"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/demo_pkg").touch()
    (prefix / "share/demo_pkg/config").mkdir(parents=True)
    (prefix / "share/demo_pkg/config/params.yaml").write_text(
        "/**:\n  ros__parameters:\n    a: 1\n")
    libexec = prefix / "lib/demo_pkg"
    libexec.mkdir(parents=True)
    for name in ("talker", "listener"):
        (libexec / name).write_text("#!/bin/sh\nexit 0\n")
        (libexec / name).chmod(0o755)
    (libexec / "not_executable").write_text("data\n")
    # A package in the index with no lib/<pkg> directory at all.
    (prefix / "share/ament_index/resource_index/packages/no_lib_pkg").touch()
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return prefix


@pytest.fixture
def write_launch(tmp_path: Path):
    """write_launch(text, name='test.launch.yaml') -> path of a dedented launch file."""
    def write(text: str, name: str = "test.launch.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path
    return write
