"""Child process for the tracker tests: runs glus_ros's CameraSourceNode with parameters from argv.

Usage: camera_source_child.py LIFETIME_S [name=value ...] (values parsed as YAML scalars). It exits by
itself after LIFETIME_S so that a crashed test leaves nothing behind.
"""

import sys

import rclpy
import yaml
from rclpy.parameter import Parameter
from spin import spin_for  # test/ros_children/spin.py (the script's own folder is on sys.path)

from glus_ros.ros.camera_source import CameraSourceNode


def main() -> None:
    lifetime_s = float(sys.argv[1])
    overrides = []
    for arg in sys.argv[2:]:
        name, _, value = arg.partition("=")
        overrides.append(Parameter(name, value=yaml.safe_load(value)))
    rclpy.init()
    node = CameraSourceNode(parameter_overrides=overrides)
    spin_for(node, lifetime_s)


if __name__ == "__main__":
    main()
