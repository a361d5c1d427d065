from setuptools import find_packages, setup

package_name = "armstack_ik"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools", "numpy"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="IK node (ee_command to limited joint_command); URDF state publisher (tf, description).",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "ik_node = armstack_ik.ik_node:main",
            "state_publisher = armstack_ik.state_publisher:main",
        ],
    },
)
