"""scenemaker_ros: an ament_python package, also pip-installable (scripts/setup.sh)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "scenemaker_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="SceneMaker for ROS 2: camera stream -> posed, scaled object meshes and a scene graph",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["schema/*.json", "assets/*", "assets/**/*", "pose/weights/*",
                            "stages/weights/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["numpy", "scipy", "trimesh", "open3d", "pillow", "pyyaml", "tqdm",
                      "safetensors", "jsonschema", "matplotlib"],
    zip_safe=False,
    entry_points={"console_scripts": [f"scenemaker = {PACKAGE}.cli:main",
                                      f"scenemaker_node = {PACKAGE}.ros.node:main"]},
)
