"""The tracker node under clients that are not ours: plain rclpy in another process, as a behaviour tree, a second
launch or an operator's shell would talk to it.

* every (state, transition) pair of the lifecycle over the ChangeState service: a transition the state does not
  offer is refused (success=false, one log line) and the node goes on streaming;
* bad input of two kinds a second apart is logged for each kind (one throttle per kind, not per call site);
* two trackers, one per camera, each under its namespace, commanded by namespace.

The trackers are the venv's ``lib/glus_ros/tracker_node`` (what ``ros2 launch`` starts), the cameras
camera_source child processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers_ros import (
    RosChild,
    RosTestEnv,
    call_idempotent,
    installed_executable,
    lifecycle_state,
    lifecycle_transition,
    rclpy_context,
    ros_session,
    spin_until,
)

WAIT_S = 60.0
REPO = Path(__file__).resolve().parent.parent
# public transitions (lifecycle_msgs/Transition ids) and the state each is valid in
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
SHUTDOWN = {"unconfigured": 5, "inactive": 6, "active": 7}
VALID = {
    "unconfigured": {CONFIGURE, SHUTDOWN["unconfigured"]},
    "inactive": {CLEANUP, ACTIVATE, SHUTDOWN["inactive"]},
    "active": {DEACTIVATE, SHUTDOWN["active"]},
    "finalized": set(),
}
PUBLIC = range(1, 8)
UNKNOWN_ID = 99
LABELS = {CONFIGURE: "configure", CLEANUP: "cleanup", ACTIVATE: "activate", DEACTIVATE: "deactivate"}


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def camera_params(name: str) -> tuple[str, ...]:
    return ("synth_width=96", "synth_height=64", "synth_frames=32", "rate_hz=30.0", f"frame_id={name}_optical",
            f"image_topic=/{name}/image", f"depth_topic=/{name}/depth", f"info_topic=/{name}/info")


def tracker_command(node: str, namespace: str, image_topic: str) -> list[str]:
    remap_namespace = f"__ns:=/{namespace}" if namespace else "__ns:=/"
    return [str(installed_executable("tracker_node")), "--ros-args", "-r", f"__node:={node}", "-r", remap_namespace,
            "--params-file", str(REPO / "config" / "tracker.yaml"), "-p", f"image_topic:={image_topic}",
            "-p", "schedule:=full"]


class Client:
    """A plain rclpy client of one tracker: lifecycle requests, commands and results."""

    def __init__(self, context: Any, name: str, tracker: str, child: RosChild) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=context)
        self.node = rclpy.create_node(name, context=context)
        self.executor.add_node(self.node)
        self.tracker, self.child = tracker, child

    def change_state(self, transition_id: int = 0, label: str = "") -> bool:
        """One ChangeState request; its ``success``. Used for refusals, which are safe to send again."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.node.create_client(ChangeState, f"{self.tracker}/change_state")
        try:
            assert spin_until(self.executor, client.service_is_ready, WAIT_S, self.child), self.child.describe()
            request = ChangeState.Request(transition=Transition(id=transition_id, label=label))
            reply = call_idempotent(self.executor, client, request, WAIT_S, self.child)
            assert reply is not None, f"no answer to transition {transition_id or label!r}; {self.child.describe()}"
            return reply.success
        finally:
            self.node.destroy_client(client)

    def transition(self, transition_id: int, goal: str) -> None:
        assert lifecycle_transition(self.executor, self.node, self.tracker, transition_id, goal, WAIT_S, self.child), (
            f"transition {transition_id} did not reach {goal}; {self.child.describe()}")

    def state(self) -> str:
        return lifecycle_state(self.executor, self.node, self.tracker, WAIT_S, self.child)

    def spin_until(self, done: Any, timeout_s: float = WAIT_S) -> bool:
        return spin_until(self.executor, done, timeout_s, self.child)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


@pytest.fixture
def client_factory(ros_test_env: RosTestEnv) -> Iterator[Any]:
    clients: list[Client] = []
    with rclpy_context() as context:
        def make(name: str, tracker: str, child: RosChild) -> Client:
            clients.append(Client(context, name, tracker, child))
            return clients[-1]

        yield make
        for client in clients:
            client.close()


def refuse_every_invalid(client: Client, state: str) -> int:
    """Send every transition ``state`` does not offer (by id, an unknown id, and by label); assert each is refused
    and the state stays. Returns the number of refused requests."""
    refused = 0
    for transition_id in [*(t for t in PUBLIC if t not in VALID[state]), UNKNOWN_ID]:
        assert client.change_state(transition_id) is False, f"transition {transition_id} accepted in {state}"
        refused += 1
    for transition_id, label in LABELS.items():
        if transition_id not in VALID[state]:
            assert client.change_state(label=label) is False, f"{label} accepted in {state}"
    assert client.child.alive(), f"the tracker died on an invalid request in {state}; {client.child.describe()}"
    assert client.state() == state
    return refused


def test_every_lifecycle_request_in_every_state(ros_test_env: RosTestEnv, client_factory: Any) -> None:
    """unconfigured -> inactive -> active -> inactive -> unconfigured -> ... -> finalized, with every invalid
    transition refused on the way; streaming goes on through the refusals; bad input of two kinds is logged
    for both kinds."""
    from glus_ros_msgs.msg import TargetResultArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from glus_ros.ros.qos import qos_profile

    with (ros_test_env.child("camera_source_child.py", "240", *camera_params("life")),
          ros_test_env.process(tracker_command("tracker_life", "", "/life/image")) as tracker):
        client = client_factory("glus_life_client", "/tracker_life", tracker)
        results: list = []
        client.node.create_subscription(TargetResultArray, "/glus/segmentation", results.append,
                                        qos_profile("reliable", 50))
        refused = refuse_every_invalid(client, "unconfigured")
        client.transition(CONFIGURE, "inactive")
        refused += refuse_every_invalid(client, "inactive")
        client.transition(ACTIVATE, "active")
        command = client.node.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
        assert client.spin_until(lambda: command.get_subscription_count() > 0)
        command.publish(String(data="the red circle"))
        assert client.spin_until(lambda: sum(bool(m.results) for m in results) >= 3), tracker.describe()

        refused += refuse_every_invalid(client, "active")
        count = len(results)
        assert client.spin_until(lambda: len(results) >= count + 5), "streaming stopped after refused requests"

        # two kinds of bad input a second apart: each kind gets its own log line
        bad_image = client.node.create_publisher(Image, "/life/image", qos_profile("reliable", 10))
        assert client.spin_until(lambda: bad_image.get_subscription_count() > 0)
        bad_image.publish(Image(width=4, height=4, encoding="yuv422_nonsense", step=8, data=bytes(32)))
        deadline = time.monotonic() + 1.0
        client.spin_until(lambda: time.monotonic() > deadline)
        command.publish(String(data="   "))
        assert client.spin_until(lambda: "[command: 1 so far" in tracker.stderr_text(), 20.0), tracker.describe()
        assert "[image: 1 so far" in tracker.stderr_text()

        client.transition(DEACTIVATE, "inactive")
        client.transition(CLEANUP, "unconfigured")
        client.transition(CONFIGURE, "inactive")
        client.transition(ACTIVATE, "active")
        client.transition(SHUTDOWN["active"], "finalized")
        refused += refuse_every_invalid(client, "finalized")
        assert tracker.alive()
    stderr = tracker.stderr_text()
    assert "Traceback" not in stderr and "RCLError" not in stderr, stderr[-3000:]
    label_refusals = sum(1 for state in VALID for t in LABELS if t not in VALID[state])
    requests = refused + label_refusals
    # one line per refused request (a request whose answer was lost is sent again: allow a few of those)
    assert requests <= stderr.count("refused lifecycle transition") <= requests + 3, stderr[-3000:]


@pytest.mark.parametrize("state", ["unconfigured", "inactive"])
def test_shutdown_from_unconfigured_and_inactive(ros_test_env: RosTestEnv, client_factory: Any, state: str) -> None:
    """The two shutdown transitions the test above does not take; afterwards every request is refused."""
    with ros_test_env.process(tracker_command(f"tracker_{state}", "", "/none/image")) as tracker:
        client = client_factory(f"glus_{state}_client", f"/tracker_{state}", tracker)
        if state == "inactive":
            client.transition(CONFIGURE, "inactive")
        client.transition(SHUTDOWN[state], "finalized")
        refuse_every_invalid(client, "finalized")


def test_two_cameras_two_trackers_commanded_by_namespace(ros_test_env: RosTestEnv, client_factory: Any) -> None:
    """head and wrist: each tracker under its namespace answers its own command on its own camera's frames."""
    from glus_ros_msgs.msg import TargetResultArray
    from lifecycle_msgs.msg import Transition
    from std_msgs.msg import String

    from glus_ros.ros.qos import qos_profile

    cameras = ("head", "wrist")
    with (ros_test_env.child("camera_source_child.py", "240", *camera_params("head")) as head_camera,
          ros_test_env.child("camera_source_child.py", "240", *camera_params("wrist")) as wrist_camera,
          ros_test_env.process(tracker_command("tracker", "head", "/head/image")) as head,
          ros_test_env.process(tracker_command("tracker", "wrist", "/wrist/image")) as wrist):
        children = {"head": head, "wrist": wrist}
        clients = {name: client_factory(f"glus_{name}_client", f"/{name}/tracker", children[name])
                   for name in cameras}
        results: dict[str, list] = {name: [] for name in cameras}
        for name in cameras:
            clients[name].node.create_subscription(TargetResultArray, f"/{name}/glus/segmentation",
                                                   results[name].append, qos_profile("reliable", 50))
        for name in cameras:
            clients[name].transition(Transition.TRANSITION_CONFIGURE, "inactive")
            clients[name].transition(Transition.TRANSITION_ACTIVATE, "active")
        expressions = {"head": "the red circle", "wrist": "the blue square"}
        for name in cameras:
            pub = clients[name].node.create_publisher(String, f"/{name}/glus/command", qos_profile("reliable", 10))
            assert clients[name].spin_until(lambda p=pub: p.get_subscription_count() == 1), (
                f"/{name}/glus/command must reach exactly its own tracker")
            pub.publish(String(data=expressions[name]))
        for name in cameras:
            assert clients[name].spin_until(lambda n=name: sum(bool(m.results) for m in results[n]) >= 3), (
                f"{name}: {len(results[name])} results; {children[name].describe()}; "
                f"{head_camera.describe() if name == 'head' else wrist_camera.describe()}")
        for name in cameras:
            answered = [m for m in results[name] if m.results]
            assert {m.header.frame_id for m in answered} == {f"{name}_optical"}, "results from another camera"
            assert {r.expression for m in answered for r in m.results} == {expressions[name]}
            assert {r.target_id for m in answered for r in m.results} == {"target_0"}
