"""Shared by the child scripts: spin one node until its lifetime ends or the test stops the process."""

import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def spin_for(node: Node, lifetime_s: float) -> None:
    """Spin ``node`` for at most ``lifetime_s`` (a crashed test leaves nothing behind), then shut down.

    SIGTERM from the test shuts rclpy down while spinning: that is a normal end, not an error.
    """
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
                break
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
