"""Child process for the tracker tests: runs glus_ros's CameraSourceNode with parameters from argv.

Usage: camera_source_child.py LIFETIME_S [name=value ...] (values parsed as YAML scalars). It exits by
itself after LIFETIME_S so that a crashed test leaves nothing behind.
"""

import sys
import time

import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from glus_ros.ros.camera_source import CameraSourceNode


def main() -> None:
    lifetime_s = float(sys.argv[1])
    overrides = []
    for arg in sys.argv[2:]:
        name, _, value = arg.partition("=")
        overrides.append(Parameter(name, value=yaml.safe_load(value)))
    rclpy.init()
    node = CameraSourceNode(parameter_overrides=overrides)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + lifetime_s
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception:
                if rclpy.ok():
                    raise
                break  # SIGTERM shut rclpy down while spinning: a normal end
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
