from setuptools import find_packages, setup

package_name = "armstack_learning"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    # torch (requirements-train.txt) is imported only by the training and export code; the
    # runtime never imports this package.
    install_requires=["setuptools", "numpy", "onnx", "onnxruntime"],
    zip_safe=True,
    maintainer="armstack developers",
    maintainer_email="dev@armstack.invalid",
    description="Learned policies for armstack (ACT, Diffusion Policy): models, training on "
                "LeRobot datasets, ONNX export with model cards.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": []},
)
