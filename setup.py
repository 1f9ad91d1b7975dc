"""glus_ros: an ament_python package that also installs with pip.

``training/`` lives at the repository root (the layout ROS users expect next to ``launch/`` and
``config/``) but is installed as ``glus_ros.training``: it imports the core as a sub-package, and a
top-level module named ``training`` in site-packages would collide with any other project's. The
sub-package is the symlink ``glus_ros/training -> ../training`` rather than a ``package_dir`` mapping,
because ``colcon build --symlink-install`` (setup.py develop) ignores ``package_dir`` entries.

setup.cfg puts the console scripts in ``lib/glus_ros`` for colcon (where ``ros2 run`` and launch look);
pip ignores it and installs them in ``bin/`` (``scripts/ament_register.py`` adds ``lib/glus_ros`` there).
"""

from glob import glob
from os.path import isfile

from setuptools import find_namespace_packages, setup

PACKAGE = "glus_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    # namespace-aware: glus_ros/model has no __init__.py, and plain find_packages() would leave it out of every
    # non-editable install (colcon build, pip install .)
    packages=find_namespace_packages(include=["glus_ros", "glus_ros.*"], exclude=["*.__pycache__"]),
    package_data={"glus_ros.training": ["*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/models", glob("models/*.yaml")),
        # the embedded default model (config, fp16 weights, tokenizer, model card)
        (f"share/{PACKAGE}/models/glus-tiny-synth", [f for f in glob("models/glus-tiny-synth/*") if isfile(f)]),
        # its task adapters (the counting adapter: glus_ros/model/task_adapter.py)
        (f"share/{PACKAGE}/models/glus-tiny-synth/adapters", glob("models/glus-tiny-synth/adapters/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="glus_ros developers",
    maintainer_email="glus-ros@example.org",
    description="Language-conditioned video segmentation and tracking (GLUS) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "glus-ros = glus_ros.cli:main",
            "tracker_node = glus_ros.ros.tracker_node:main",
            "camera_source = glus_ros.ros.camera_source:main",
        ],
    },
)
