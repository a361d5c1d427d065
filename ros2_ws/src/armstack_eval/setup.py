from setuptools import find_packages, setup

package_name = "armstack_eval"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools", "numpy", "matplotlib", "av"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Episode runner for the simulator: randomized episodes through the whole graph, "
    "success, timing and smoothness metrics, and a report with plots and an annotated video.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "evaluate = armstack_eval.evaluate:main",
        ],
    },
)
