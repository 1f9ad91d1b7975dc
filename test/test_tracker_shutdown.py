"""The tracker node ends cleanly while frames stream: SIGINT, SIGTERM and the lifecycle shutdown transition.

A real ``tracker_node`` process (the venv's ``lib/glus_ros/tracker_node``, what ``ros2 launch`` starts) is configured
and activated over its lifecycle services, tracks a target on a synthetic camera child process at 30 Hz, and is
stopped while its worker is publishing: exit status 0 and no traceback (e.g. "Failed to publish: publisher's
context is invalid" from a worker that published after rclpy shut down).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from helpers_ros import (
    RosChild,
    RosTestEnv,
    installed_executable,
    lifecycle_state,
    lifecycle_transition,
    rclpy_context,
    ros_session,
    spin_until,
)

WAIT_S = 60.0
CAMERA_PARAMS = ("synth_width=128", "synth_height=96", "synth_frames=32", "rate_hz=30.0",
                 "image_topic=/glus_shutdown/image", "depth_topic=/glus_shutdown/depth",
                 "info_topic=/glus_shutdown/info")


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


@pytest.fixture(scope="module")
def camera(ros_test_env: RosTestEnv) -> Iterator[RosChild]:
    with ros_test_env.child("camera_source_child.py", "240", *CAMERA_PARAMS) as child:
        yield child


def no_traceback(stderr: str) -> bool:
    return "Traceback" not in stderr and "Failed to publish" not in stderr and "context is invalid" not in stderr


def tracker_command(node: str) -> list[str]:
    return [str(installed_executable("tracker_node")), "--ros-args", "-r", f"__node:={node}",
            "-p", "image_topic:=/glus_shutdown/image", "-p", "use_depth:=true",
            "-p", "depth_topic:=/glus_shutdown/depth", "-p", "camera_info_topic:=/glus_shutdown/info"]


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "lifecycle"])
def test_shutdown_while_streaming_is_clean(ros_test_env: RosTestEnv, camera: RosChild, how: str) -> None:
    import rclpy
    from glus_ros_msgs.msg import TargetResultArray
    from lifecycle_msgs.msg import Transition
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from glus_ros.ros.qos import qos_profile

    node = f"tracker_{how.lower()}"
    with rclpy_context() as context, ros_test_env.process(tracker_command(node)) as tracker:
        executor = SingleThreadedExecutor(context=context)
        probe = rclpy.create_node(f"glus_shutdown_probe_{how.lower()}", context=context)
        executor.add_node(probe)
        results: list = []
        probe.create_subscription(TargetResultArray, "/glus/segmentation", results.append, qos_profile("reliable", 50))
        assert lifecycle_transition(executor, probe, f"/{node}", Transition.TRANSITION_CONFIGURE, "inactive", WAIT_S,
                                    tracker), tracker.describe()
        assert lifecycle_transition(executor, probe, f"/{node}", Transition.TRANSITION_ACTIVATE, "active", WAIT_S,
                                    tracker), tracker.describe()
        command = probe.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
        assert spin_until(executor, lambda: command.get_subscription_count() > 0, WAIT_S, tracker)
        command.publish(String(data="the red circle"))
        assert spin_until(executor, lambda: sum(bool(m.results) for m in results) >= 5, WAIT_S, tracker), (
            f"{len(results)} results; {tracker.describe()}; {camera.describe()}")

        if how == "lifecycle":  # shutdown transition from active, frames still arriving
            assert lifecycle_transition(executor, probe, f"/{node}", Transition.TRANSITION_ACTIVE_SHUTDOWN,
                                        "finalized", WAIT_S, tracker), tracker.describe()
            count = len(results)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            assert len(results) == count, "a finalized tracker still publishes"
            assert tracker.alive(), "the node stays up (finalized) until the process is ended"
            assert lifecycle_state(executor, probe, f"/{node}", WAIT_S, tracker) == "finalized"
            status = tracker.signal_and_wait(signal.SIGTERM)
        else:
            status = tracker.signal_and_wait(getattr(signal, how))
        executor.shutdown(timeout_sec=1.0)
        probe.destroy_node()
    stderr = tracker.stderr_text()
    assert status == 0, f"exit status {status}; stderr:\n{stderr[-3000:]}"
    assert no_traceback(stderr), stderr[-3000:]
