from setuptools import find_packages, setup

package_name = "armstack_recorder"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools", "numpy", "pyarrow", "av"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Demonstration recording for armstack: recorder node (stamp-based sampling on "
                "a dataset clock), LeRobot v3.0 dataset writer, reader, validator.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["recorder_node = armstack_recorder.recorder_node:main"]},
)
