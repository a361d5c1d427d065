import os

from setuptools import find_packages, setup

package_name = "armstack_bringup"
here = os.path.dirname(os.path.abspath(__file__))


def tree_data_files(subdir: str) -> list[tuple[str, list[str]]]:
    """All files under `subdir` (a symlink to the repo's top-level dir) as data_files entries.

    Each directory becomes share/<pkg>/<subdir>/<relative dir>, so nested layouts such as
    config/robot/ survive installation. followlinks=True because `launch` and `config` in this
    package are symlinks to the repository's top-level directories.
    """
    entries: list[tuple[str, list[str]]] = []
    for root, dirs, files in os.walk(os.path.join(here, subdir), followlinks=True):
        dirs.sort()
        if not files:
            continue
        rel_root = os.path.relpath(root, here)
        target = os.path.join("share", package_name, rel_root)
        entries.append((target, sorted(os.path.join(rel_root, name) for name in files)))
    return entries


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml", "LAUNCHER.md"]),
        *tree_data_files("launch"),
        *tree_data_files("config"),
    ],
    install_requires=["setuptools", "PyYAML"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Launch files, configuration, and a launcher for them without ros2 launch.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": []},
)
