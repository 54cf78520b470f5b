"""ament_python / pip build script for mmseg_ros.

The same file serves `colcon build` on a ROS 2 machine and `pip install` in a plain venv: data files land in
share/mmseg_ros (ament index marker, package.xml, launch, config, models, train), and `segment_node` lands in
lib/mmseg_ros where `ros2 run` and launch_ros look for executables.
"""
import os
from fnmatch import fnmatch
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mmseg_ros"
# Cards of tiny random models for the test suite: found in the source checkout, never installed for users.
TEST_ONLY = ("test_tiny_*",)


def tree(folder, skip=()):
    """(install_dir, [files]) pairs for every file below `folder`, keeping sub-folders, except names matching `skip`."""
    entries = {}
    for path in glob(os.path.join(folder, "**", "*"), recursive=True):
        if any(fnmatch(os.path.basename(path), pattern) for pattern in skip):
            continue
        if os.path.isfile(path) and "__pycache__" not in path:
            target = os.path.join("share", PACKAGE, os.path.dirname(path))
            entries.setdefault(target, []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("models", skip=TEST_ONLY),
        *tree("train"),
    ],
    install_requires=["numpy", "numba", "pyyaml", "tqdm", "opencv-python-headless", "rosbags", "pillow", "matplotlib"],
    extras_require={"test": ["pytest", "hypothesis"]},
    zip_safe=True,
    maintainer="mmseg_ros developers",
    maintainer_email="mmseg_ros@example.com",
    description="Drop-tolerant multi-modal semantic segmentation (MLE-SAM, MemorySAM on SAM2) for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mmseg = mmseg_ros.cli:main",
            "segment_node = mmseg_ros.ros.node:main",
        ],
    },
)
