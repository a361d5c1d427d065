from setuptools import find_packages, setup

package_name = "armstack_driver"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools", "numpy", "dynamixel-sdk"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Dynamixel driver node: servo bus loop, joint_states, joint_command with a safety layer.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "driver_node = armstack_driver.driver_node:main",
        ],
    },
)
