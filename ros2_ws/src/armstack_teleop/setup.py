from setuptools import find_packages, setup

package_name = "armstack_teleop"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools", "numpy"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Teleoperation (keyboard, gamepad, leader arm, scripted expert) and episode control "
    "for demonstration recording.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "teleop_node = armstack_teleop.teleop_node:main",
            "leader_calibrate = armstack_teleop.leader_calibrate:main",
        ],
    },
)
