"""setup.py installs everything under the symlinked launch/ and config/ dirs, as colcon runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[2]


def test_symlinks_point_at_the_repository_dirs() -> None:
    for name in ("launch", "config"):
        link = PACKAGE_ROOT / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == (REPO_ROOT / name).resolve()


def test_install_follows_symlinked_trees(tmp_path: Path) -> None:
    # A copy of the package whose launch/ and config/ link to trees with nested directories.
    package = tmp_path / "src" / "armstack_bringup"
    package.mkdir(parents=True)
    for name in ("setup.py", "setup.cfg", "package.xml", "LAUNCHER.md"):
        shutil.copy(PACKAGE_ROOT / name, package / name)
    for name in ("resource", "armstack_bringup"):
        shutil.copytree(PACKAGE_ROOT / name, package / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    top = tmp_path / "repo"
    files = ["launch/demo.launch.yaml", "launch/sub/part.launch.yaml", "config/robot/arm.urdf",
             "config/camera/calibration.yaml", "config/params.yaml"]
    for rel in files:
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(rel)
    for name in ("launch", "config"):
        os.symlink(os.path.relpath(top / name, package), package / name)

    prefix, build = tmp_path / "install", tmp_path / "build"
    build.mkdir()
    # The command colcon's ament_python build runs, in the package directory.
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(build),
         "build", "--build-base", str(build / "build"),
         "install", "--prefix", str(prefix), "--record", str(build / "install.log"),
         "--single-version-externally-managed"],
        cwd=package, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    share = prefix / "share" / "armstack_bringup"
    installed = sorted(str(p.relative_to(share)) for p in share.rglob("*") if p.is_file())
    assert installed == sorted([*files, "LAUNCHER.md", "package.xml"])
    for rel in files:  # real copies, not links back into the source tree
        assert (share / rel).read_text() == rel and not (share / rel).is_symlink()
    assert (prefix / "share/ament_index/resource_index/packages/armstack_bringup").is_file()
