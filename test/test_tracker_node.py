"""The tracker lifecycle node with real rclpy: a camera_source child process streams a synthetic RGB-D scene at
30 Hz, the tracker (tiny model) runs in this process, and a probe node talks to it over topics and services.

Also unit tests of the ROS conversions (messages.py) and QoS parsing (qos.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from glus_ros.model.region import Region
from glus_ros.streaming.types import FrameResult, TargetOutput, TargetSpec

from helpers_model import tiny_model
from helpers_ros import RosChild, RosTestEnv, rclpy_context, ros_session, spin_until

WAIT_S = 30.0
WIDTH, HEIGHT = 128, 96
CAMERA_PARAMS = (f"synth_width={WIDTH}", f"synth_height={HEIGHT}", "synth_frames=32", "rate_hz=30.0")
FRAME_ID = "camera_color_optical_frame"


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


@pytest.fixture(scope="module")
def camera(ros_test_env: RosTestEnv) -> Iterator[RosChild]:
    """One synthetic RGB-D camera (reliable publishers) for the whole module, in its own process."""
    with ros_test_env.child("camera_source_child.py", "180", *CAMERA_PARAMS) as child:
        yield child


@pytest.fixture(scope="module")
def expression() -> str:
    """An expression of the scene the camera shows (same seed, index and frame count as the child)."""
    from glus_ros.ros.camera_source import SyntheticCamera

    return SyntheticCamera(0, 0, 32, WIDTH, HEIGHT).expressions[0]


@dataclass
class Harness:
    """One rclpy context with a probe node; trackers made here are spun by the same executor."""

    context: Any
    executor: Any
    probe: Any
    camera: RosChild
    trackers: list = field(default_factory=list)

    def tracker(self, cli_args: list[str] | None = None, **params: Any) -> Any:
        from rclpy.parameter import Parameter

        from glus_ros.ros.tracker_node import TrackerNode

        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = TrackerNode(context=self.context, parameter_overrides=overrides, cli_args=cli_args)
        self.executor.add_node(node)
        self.trackers.append(node)
        return node

    def record(self, msg_type: Any, topic: str, convert: Callable[[Any], Any] | None = None) -> list:
        from glus_ros.ros.qos import sensor_qos

        received: list = []
        self.probe.create_subscription(msg_type, topic, lambda m: received.append(convert(m) if convert else m),
                                       sensor_qos("best_effort", 50))
        return received

    def spin_until(self, done: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        return spin_until(self.executor, done, timeout_s, self.camera)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, srv_type: Any, name: str, request: Any) -> Any:
        client = self.probe.create_client(srv_type, name)
        assert self.spin_until(client.service_is_ready), f"service {name} never became ready"
        future = client.call_async(request)
        assert self.spin_until(future.done), f"service {name} did not answer"
        self.probe.destroy_client(client)
        return future.result()

    def command_publisher(self) -> Any:
        from std_msgs.msg import String

        from glus_ros.ros.qos import qos_profile

        pub = self.probe.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
        assert self.spin_until(lambda: pub.get_subscription_count() > 0), "tracker never subscribed /glus/command"
        return pub


@pytest.fixture
def ros(ros_test_env: RosTestEnv, camera: RosChild) -> Iterator[Harness]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    with rclpy_context() as context:
        executor = SingleThreadedExecutor(context=context)
        probe = rclpy.create_node("glus_test_probe", context=context)
        executor.add_node(probe)
        harness = Harness(context, executor, probe, camera)
        try:
            yield harness
        finally:
            for node in harness.trackers:
                if node.engine is not None:
                    node.engine.stop()
                node.destroy_node()
            executor.shutdown(timeout_sec=1.0)


def _stamp(header: Any) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _state(node: Any) -> str:
    return node.lifecycle_state


def test_lifecycle_results_and_outputs(ros: Harness, expression: str) -> None:
    """configure -> (command while inactive, nothing published) -> activate -> results -> deactivate -> cleanup."""
    from geometry_msgs.msg import PointStamped
    from glus_ros_msgs.msg import TargetResult, TargetResultArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    tracker = ros.tracker()
    image_stamps_seen = ros.record(Image, "/camera/image_raw", lambda m: _stamp(m.header))
    results = ros.record(TargetResultArray, "/glus/segmentation")
    masks = ros.record(Image, "/glus/mask")
    points = ros.record(PointStamped, "/glus/target_point")
    overlays = ros.record(Image, "/glus/debug_image")
    assert _state(tracker) == "unconfigured" and tracker.engine is None

    # configure through the lifecycle service, as launch and `ros2 lifecycle set` do
    reply = ros.call(ChangeState, "/tracker/change_state",
                     ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    assert reply.success and _state(tracker) == "inactive"
    assert tracker.engine is not None and tracker.model is not None

    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: [s.target_id for s, _ in tracker.engine.targets()] == ["target_0"])
    ros.spin_for(1.0)  # the camera streams, but an inactive tracker neither subscribes nor publishes
    assert results == [] and tracker.results_published == 0

    assert tracker.trigger_activate() == TransitionCallbackReturn.SUCCESS and _state(tracker) == "active"
    assert ros.spin_until(lambda: len(results) >= 6 and masks and overlays), (
        f"{len(results)} results, {len(masks)} masks, {len(points)} points; {ros.camera.describe()}")
    image_stamps = set(image_stamps_seen)
    for msg in results:
        assert _stamp(msg.header) in image_stamps, "a result's stamp must be the stamp of a published image"
        assert msg.header.frame_id == FRAME_ID
        assert 0.0 < msg.latency_ms < 10_000.0
        (result,) = msg.results
        assert result.target_id == "target_0" and result.expression == expression
        assert _stamp(result.header) == _stamp(msg.header)
        # the text command asks for mask, box and point
        assert (result.mask.width, result.mask.height, result.mask.encoding) == (WIDTH, HEIGHT, "mono8")
        assert len(result.mask.data) == WIDTH * HEIGHT
        assert result.state in (TargetResult.GROUNDING, TargetResult.TRACKING, TargetResult.LOST)
        assert 0.0 <= result.score <= 1.0
        mask = np.frombuffer(result.mask.data, np.uint8).reshape(HEIGHT, WIDTH)
        assert set(np.unique(mask)) <= {0, 255}
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert (result.bbox.x_min, result.bbox.y_min, result.bbox.x_max, result.bbox.y_max) == (
                xs.min(), ys.min(), xs.max(), ys.max())
            # one point per connected component of the mask, each on it
            assert result.points_2d and all(mask[int(p.y), int(p.x)] for p in result.points_2d)
        else:
            assert result.state == TargetResult.LOST and result.bbox.x_max < result.bbox.x_min
    assert (masks[0].width, masks[0].height, masks[0].encoding) == (WIDTH, HEIGHT, "mono8")
    assert {_stamp(m.header) for m in masks} <= image_stamps
    assert {_stamp(m.header) for m in overlays} <= image_stamps
    assert (overlays[0].width, overlays[0].height, overlays[0].encoding) == (WIDTH, HEIGHT, "rgb8")
    assert points == []  # no depth: a 3D topic carries metres only, pixels stay on points_2d
    # results are published as frames come, not queued: the engine drops what it cannot process
    stats = tracker.engine.stats
    done = stats["frames_processed"] + stats["frames_dropped"]
    # at most two frames unaccounted: one being processed by the worker, one pending in the slot
    assert stats["errors"] == 0 and done <= stats["frames_in"] <= done + 2

    assert tracker.trigger_deactivate() == TransitionCallbackReturn.SUCCESS and _state(tracker) == "inactive"
    assert not tracker.engine.running
    ros.spin_for(0.3)
    published = tracker.results_published
    count = len(results)
    ros.spin_for(1.0)
    assert tracker.results_published == published and len(results) == count, "published while inactive"

    assert tracker.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and _state(tracker) == "unconfigured"
    assert tracker.engine is None and tracker.model is None
    assert not any(s.srv_name.startswith("/tracker/") and "targets" in s.srv_name for s in tracker.services)
    # configure again after cleanup, then shut down from inactive
    assert tracker.trigger_configure() == TransitionCallbackReturn.SUCCESS and tracker.engine is not None
    assert tracker.trigger_shutdown() == TransitionCallbackReturn.SUCCESS and _state(tracker) == "finalized"
    assert tracker.engine is None


def test_services_bad_commands_and_bad_images(ros: Harness, expression: str) -> None:
    from glus_ros_msgs.msg import ReferringCommand, ReferringCommandArray, RegionPrompt, TargetResultArray
    from glus_ros_msgs.srv import ClearTargets, ListTargets, SetTargets
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from glus_ros.ros.qos import qos_profile

    tracker = ros.tracker(schedule="full")
    results = ros.record(TargetResultArray, "/glus/segmentation")
    assert tracker.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert tracker.trigger_activate() == TransitionCallbackReturn.SUCCESS

    add = ReferringCommand(action=ReferringCommand.ADD, expression=expression, mode=ReferringCommand.MODE_MASK)
    empty = ReferringCommand(action=ReferringCommand.ADD, target_id="cup", expression="   ")
    ghost = ReferringCommand(action=ReferringCommand.REMOVE, target_id="ghost")
    reply = ros.call(SetTargets, "/tracker/set_targets", SetTargets.Request(commands=[add, empty, ghost]))
    assert not reply.success
    assert list(reply.target_ids) == ["target_0", "cup", "ghost"]
    assert "command 1 (ADD 'cup'): empty expression" in reply.message
    assert "command 2 (REMOVE 'ghost'): unknown target 'ghost' (known: target_0)" in reply.message
    listed = ros.call(ListTargets, "/tracker/list_targets", ListTargets.Request())
    assert list(listed.target_ids) == ["target_0"] and list(listed.expressions) == [expression]

    # REPLACE with a region: accepted, the target becomes "track <region>" (the expression is its label); once
    # the image size is known, a box reaching outside the image is that command's error
    assert ros.spin_until(lambda: len(results) >= 1)
    replace = ReferringCommand(action=ReferringCommand.REPLACE, target_id="target_0", expression="the left one",
                               mode=ReferringCommand.MODE_BOTH,
                               region=RegionPrompt(type=RegionPrompt.BOX, x0=1.0, y0=2.0, x1=30.0, y1=40.0))
    outside = ReferringCommand(action=ReferringCommand.REPLACE, target_id="target_0", expression="",
                               region=RegionPrompt(type=RegionPrompt.BOX, x0=1.0, y0=2.0, x1=130.0, y1=40.0))
    reply = ros.call(SetTargets, "/tracker/set_targets", SetTargets.Request(commands=[replace, outside]))
    assert not reply.success and list(reply.target_ids) == ["target_0", "target_0"]
    assert reply.message.startswith("command 1 (REPLACE 'target_0'): region box (1, 2, 130, 40)")
    assert f"{WIDTH}x{HEIGHT} image" in reply.message and "outside the image" in reply.message
    assert tracker.engine.targets()[0][0].region == Region(1.0, 2.0, 30.0, 40.0)

    # the same commands as a topic: the good one applies, the bad one is logged
    array_pub = ros.probe.create_publisher(ReferringCommandArray, "/glus/commands", qos_profile("reliable", 10))
    assert ros.spin_until(lambda: array_pub.get_subscription_count() > 0)
    before = tracker.input_errors["command"]
    cup = ReferringCommand(action=ReferringCommand.ADD, target_id="cup", expression="the cup")
    array_pub.publish(ReferringCommandArray(commands=[cup, ghost]))
    assert ros.spin_until(lambda: tracker.input_errors["command"] > before)
    assert "unknown target 'ghost'" in tracker.last_input_error
    assert [s.target_id for s, _ in tracker.engine.targets()] == ["target_0", "cup"]
    array_pub.publish(ReferringCommandArray(commands=[ReferringCommand(action=ReferringCommand.REMOVE,
                                                                       target_id="cup")]))
    assert ros.spin_until(lambda: [s.target_id for s, _ in tracker.engine.targets()] == ["target_0"])

    # bad text commands are logged and change nothing
    pub = ros.command_publisher()
    for bad in ("", "x " * 400, "see <image> here"):
        before = tracker.input_errors["command"]
        pub.publish(String(data=bad))
        assert ros.spin_until(lambda b=before: tracker.input_errors["command"] > b)
    assert "reserved token" in tracker.last_input_error
    assert [(s.target_id, s.expression, s.mode) for s, _ in tracker.engine.targets()] == [
        ("target_0", "the left one", "both")]

    # an image in an encoding nobody can decode: logged, dropped, the node keeps publishing
    bad_pub = ros.probe.create_publisher(Image, "/camera/image_raw", qos_profile("reliable", 5))
    bad = Image(height=2, width=2, encoding="yuv_weird", step=8, data=bytes(16))
    assert ros.spin_until(lambda: bad_pub.get_subscription_count() > 0)
    for _ in range(50):
        bad_pub.publish(bad)
        ros.spin_for(0.1)
        if tracker.input_errors["image"]:
            break
    assert tracker.input_errors["image"] >= 1
    assert "unsupported image encoding 'yuv_weird'" in tracker.last_input_error
    count = len(results)
    assert ros.spin_until(lambda: len(results) >= count + 3), "the tracker stopped publishing after bad input"
    assert results[-1].results[0].target_id == "target_0"

    cleared = ros.call(ClearTargets, "/tracker/clear_targets", ClearTargets.Request())
    assert cleared.success
    assert list(ros.call(ListTargets, "/tracker/list_targets", ListTargets.Request()).target_ids) == []
    count = len(results)
    assert ros.spin_until(lambda: len(results) > count + 1 and results[-1].results == [])


def test_depth_gives_3d_points_consistent_with_depth(ros: Harness, expression: str) -> None:
    """point_3d = lift_point(published 2D point, published depth, CameraInfo); /glus/target_point carries it."""
    from geometry_msgs.msg import PointStamped
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from glus_ros.geometry import lift_point
    from glus_ros.ros.image_conversion import depth_to_metres, intrinsics_from_camera_info
    from glus_ros.streaming.types import CameraIntrinsics

    depths: dict[tuple[int, int], np.ndarray] = {}
    ros.record(Image, "/camera/depth/image_raw", lambda m: depths.__setitem__(_stamp(m.header), depth_to_metres(m)))
    infos = ros.record(CameraInfo, "/camera/camera_info")
    results = ros.record(TargetResultArray, "/glus/segmentation")
    points = ros.record(PointStamped, "/glus/target_point")
    tracker = ros.tracker(use_depth=True)
    tracker.trigger_configure()
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()

    def with_3d() -> list:
        return [m for m in results if m.results and m.results[0].has_point_3d]

    assert ros.spin_until(lambda: len(with_3d()) >= 3 and infos), (
        f"{len(results)} results, none with 3D; errors {dict(tracker.input_errors)}")
    intrinsics = CameraIntrinsics(*intrinsics_from_camera_info(infos[-1]))
    point_by_stamp = {_stamp(p.header): p.point for p in points}
    checked = 0
    for msg in with_3d():
        result = msg.results[0]
        depth = depths.get(_stamp(msg.header))
        if depth is None:
            continue  # the probe missed that depth frame (best effort)
        x, y = result.points_2d[0].x, result.points_2d[0].y
        expected = lift_point(x, y, depth, intrinsics)
        got = (result.point_3d.x, result.point_3d.y, result.point_3d.z)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert 0.1 < got[2] < 100.0
        if _stamp(msg.header) in point_by_stamp:
            p = point_by_stamp[_stamp(msg.header)]
            np.testing.assert_allclose((p.x, p.y, p.z), got, rtol=1e-6)
        checked += 1
    assert checked >= 1

    # CameraInfo missing: still results, without 3D, and nothing on /glus/target_point (no pixel "metres")
    tracker.trigger_deactivate()
    tracker.set_parameters([Parameter("camera_info_topic", value="/glus_test/no_camera_info")])
    tracker.trigger_activate()
    ros.spin_for(0.5)
    count, n_points = len(results), len(points)
    assert ros.spin_until(lambda: len(results) >= count + 3)
    assert all(not r.has_point_3d for m in results[count + 1:] for r in m.results)
    assert len(points) == n_points


def test_depth_of_another_size_is_reported_and_tracking_goes_on(ros: Harness) -> None:
    """Depth 32x24 with a 64x48 image: a clear error, and results without 3D points."""
    from glus_ros_msgs.msg import ReferringCommand, TargetResultArray
    from glus_ros_msgs.srv import SetTargets
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from glus_ros.ros.image_conversion import camera_info, depth_to_image, rgb_to_image
    from glus_ros.ros.qos import qos_profile

    tracker = ros.tracker(use_depth=True, image_topic="/glus_test/image", depth_topic="/glus_test/depth",
                          camera_info_topic="/glus_test/info")
    results = ros.record(TargetResultArray, "/glus/segmentation")
    tracker.trigger_configure()
    tracker.trigger_activate()
    add = ReferringCommand(action=ReferringCommand.ADD, expression="the red disk", mode=ReferringCommand.MODE_BOTH)
    assert ros.call(SetTargets, "/tracker/set_targets", SetTargets.Request(commands=[add])).success
    qos = qos_profile("reliable", 5)
    pubs = [ros.probe.create_publisher(Image, "/glus_test/image", qos),
            ros.probe.create_publisher(Image, "/glus_test/depth", qos)]
    info_pub = ros.probe.create_publisher(CameraInfo, "/glus_test/info", qos)
    assert ros.spin_until(lambda: all(p.get_subscription_count() > 0 for p in [*pubs, info_pub]))
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[10:30, 20:40] = (230, 30, 30)
    for _ in range(8):
        h = Header(stamp=ros.probe.get_clock().now().to_msg(), frame_id="cam")
        info_pub.publish(camera_info(64, 48, 50.0, 50.0, 32.0, 24.0, h))
        pubs[0].publish(rgb_to_image(rgb, "rgb8", h))
        pubs[1].publish(depth_to_image(np.full((24, 32), 1.5, np.float32), "16UC1", h))
        ros.spin_for(0.1)
    assert ros.spin_until(lambda: len(results) >= 2 and tracker.input_errors["depth"] >= 1)
    assert "depth is 32x24 but the image is 64x48" in tracker.last_input_error
    assert all(r.results[0].mask.width == 64 and not r.results[0].has_point_3d for r in results)


def test_compressed_images(ros: Harness) -> None:
    """compressed:=true subscribes <image_topic>/compressed; undecodable data is reported, tracking goes on."""
    from glus_ros_msgs.msg import TargetResultArray
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from glus_ros.ros.image_conversion import rgb_to_compressed
    from glus_ros.ros.qos import qos_profile

    tracker = ros.tracker(compressed=True, image_topic="/glus_test/cam")
    results = ros.record(TargetResultArray, "/glus/segmentation")
    tracker.trigger_configure()
    tracker.trigger_activate()
    pub = ros.probe.create_publisher(CompressedImage, "/glus_test/cam/compressed", qos_profile("reliable", 5))
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[10:30, 20:40] = (230, 30, 30)
    stamps = []
    for i in range(6):
        header = Header(stamp=ros.probe.get_clock().now().to_msg(), frame_id="cam")
        stamps.append(_stamp(header))
        msg = rgb_to_compressed(rgb, "png" if i % 2 else "jpeg", header)
        if i == 3:
            msg.data = b"not an image"
        pub.publish(msg)
        ros.spin_for(0.15)
    assert ros.spin_until(lambda: len(results) >= 2 and tracker.input_errors["image"] == 1)
    assert "cannot decode compressed image" in tracker.last_input_error
    assert all(_stamp(m.header) in stamps and _stamp(m.header) != stamps[3] for m in results)


def test_bad_parameters_are_refused_clearly(ros: Harness) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    tracker = ros.tracker(model="/no/such/model.yaml")
    result = tracker.set_parameters([Parameter("schedule", value="slow")])[0]
    assert not result.successful and "schedule must be one of fast, full, live, got 'slow'" in result.reason
    assert not tracker.set_parameters([Parameter("qos_depth", value=0)])[0].successful
    assert tracker.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert _state(tracker) == "unconfigured" and tracker.engine is None
    tracker.set_parameters([Parameter("model", value="tiny")])
    assert tracker.trigger_configure() == TransitionCallbackReturn.SUCCESS


def _set(tracker: Any, **values: Any) -> list:
    from rclpy.parameter import Parameter

    return tracker.set_parameters([Parameter(k, value=v) for k, v in values.items()])


def test_parameters_apply_live_or_are_refused_with_what_to_do(ros: Harness, expression: str) -> None:
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    tracker = ros.tracker()
    results = ros.record(TargetResultArray, "/glus/segmentation")
    overlays = ros.record(Image, "/glus/debug_image")
    assert _set(tracker, reground_every=5)[0].successful  # unconfigured: anything goes, read at configure
    assert tracker.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert tracker.engine.config.reground_every == 5
    (refused,) = _set(tracker, model="tiny")
    assert not refused.successful and "model is read at configure and the tracker is inactive" in refused.reason
    assert "clean up first" in refused.reason and tracker.get_parameter("model").value != "tiny"
    assert _set(tracker, image_topic="/camera/image_raw")[0].successful  # inactive: read at the next activate
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    assert tracker.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert ros.spin_until(lambda: len(results) >= 3 and len(overlays) >= 3)

    (refused,) = _set(tracker, image_topic="/elsewhere")
    assert not refused.successful and "deactivate first" in refused.reason
    assert tracker.get_parameter("image_topic").value == "/camera/image_raw"
    # live: the running engine takes them at once
    assert all(r.successful for r in _set(tracker, schedule="full", reground_every=3, max_targets=1))
    config = tracker.engine.config
    assert (config.schedule, config.reground_every, config.max_targets) == ("full", 3, 1)
    assert tracker.engine.running  # a schedule change restarts the worker (a schedule may bring its own)
    with pytest.raises(ValueError, match="max_targets 1"):
        tracker.engine.add_target(TargetSpec("second", "the blue one"))
    (bad,) = _set(tracker, reground_below=2.0)
    assert not bad.successful and "reground_below must be in [0, 1]" in bad.reason
    assert tracker.engine.config.reground_below == 0.5
    assert _set(tracker, publish_debug_image=False)[0].successful
    ros.spin_for(0.5)
    count, n_overlays = len(results), len(overlays)
    assert ros.spin_until(lambda: len(results) >= count + 3)
    assert len(overlays) <= n_overlays + 1, "the overlay switch did not apply live"  # one may be in flight


def test_deactivate_releases_the_stream_state_and_keeps_targets(ros: Harness, expression: str) -> None:
    """The off switch: history and memories go (the model too, off a GPU); targets stay and are grounded again."""
    from glus_ros_msgs.msg import TargetResult, TargetResultArray
    from std_msgs.msg import String

    tracker = ros.tracker()
    results = ros.record(TargetResultArray, "/glus/segmentation")
    tracker.trigger_configure()
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()
    assert ros.spin_until(lambda: len(results) >= 10)
    assert tracker.engine.cache_sizes()["history"] >= 2
    tracker.trigger_deactivate()
    sizes = tracker.engine.cache_sizes()
    assert (sizes["history"], sizes["clip_inputs"], sizes["clip_embeds"], sizes["max_memory_entries"]) == (0, 0, 0, 0)
    assert [s.target_id for s, _ in tracker.engine.targets()] == ["target_0"]
    assert tracker.model_state() == "loaded on cpu"  # on a GPU: "offloaded to cpu (from cuda:0)" until activate
    reactivated = ros.probe.get_clock().now().nanoseconds
    tracker.trigger_activate()

    def after() -> list:  # by stamp: results of before the switch may still be on their way
        return [m for m in results if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec > reactivated]

    assert ros.spin_until(lambda: len(after()) >= 3)
    first_again = after()[0].results[0]
    assert first_again.state in (TargetResult.GROUNDING, TargetResult.LOST)  # a fresh grounding, not tracking on
    assert _set(tracker, release_on_deactivate=False)[0].successful
    tracker.trigger_deactivate()
    assert tracker.engine.cache_sizes()["history"] >= 2, "release_on_deactivate:=false keeps the stream state"


def test_per_topic_qos_overrides(ros: Harness, tmp_path: Any) -> None:
    """ROS 2 qos_overrides per topic (params file, nested form) win over the camera-wide sensor-data default."""
    from rclpy.qos import ReliabilityPolicy

    params = tmp_path / "qos.yaml"
    params.write_text(
        "tracker:\n  ros__parameters:\n    qos_overrides:\n"
        "      /glus_qos/depth:\n        subscription:\n          reliability: reliable\n"
        "      /glus/markers:\n        publisher:\n          reliability: best_effort\n")
    tracker = ros.tracker(["--ros-args", "--params-file", str(params)], use_depth=True, image_topic="/glus_qos/image",
                          depth_topic="/glus_qos/depth", camera_info_topic="/glus_qos/info")
    tracker.trigger_configure()
    tracker.trigger_activate()

    def reliability(endpoints: list) -> set:
        return {e.qos_profile.reliability for e in endpoints if e.node_name == "tracker"}

    assert reliability(tracker.get_subscriptions_info_by_topic("/glus_qos/depth")) == {ReliabilityPolicy.RELIABLE}
    assert reliability(tracker.get_subscriptions_info_by_topic("/glus_qos/image")) == {ReliabilityPolicy.BEST_EFFORT}
    assert reliability(tracker.get_publishers_info_by_topic("/glus/markers")) == {ReliabilityPolicy.BEST_EFFORT}
    assert reliability(tracker.get_publishers_info_by_topic("/glus/segmentation")) == {ReliabilityPolicy.RELIABLE}
    name = "qos_overrides./glus_qos/depth.subscription.reliability"
    assert tracker.get_parameter(name).value == "reliable"
    assert not _set(tracker, **{name: "best_effort"})[0].successful  # read-only: fixed when the topic was made


def test_target_frame_needs_tf2(ros: Harness) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    from glus_ros.ros.bridges import tf_module

    if tf_module()[0] is not None:
        pytest.skip("tf2_ros is installed here")
    tracker = ros.tracker()
    (refused,) = _set(tracker, target_frame="base_link")
    assert not refused.successful and refused.reason.startswith("target_frame needs tf2_ros")
    assert "leave it empty" in refused.reason and tracker.get_parameter("target_frame").value == ""
    preset = ros.tracker(target_frame="base_link")  # e.g. from a params file: configure says why it cannot
    assert preset.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "target_frame needs tf2_ros" in preset.last_error


def test_target_frame_transforms_the_target_point_with_tf2(ros: Harness, expression: str, tmp_path: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Where tf2_ros imports (here: the stand-in, a fixed camera -> base_link transform), /glus/target_point
    carries the 3D point of the same frame's result, transformed into target_frame."""
    from geometry_msgs.msg import PointStamped
    from glus_ros_msgs.msg import TargetResultArray
    from std_msgs.msg import String

    from helpers_standins import TF2_ROS, install_stand_in

    install_stand_in(tmp_path, monkeypatch, "tf2_ros", TF2_ROS)
    results = ros.record(TargetResultArray, "/glus/segmentation")
    points = ros.record(PointStamped, "/glus/target_point")
    tracker = ros.tracker(use_depth=True, target_frame="base_link")
    tracker.trigger_configure()
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()
    by_stamp = {}

    def matched() -> int:
        by_stamp.update({_stamp(m.header): m.results[0].point_3d for m in results
                         if m.results and m.results[0].has_point_3d})
        return sum(_stamp(p.header) in by_stamp for p in points)

    assert ros.spin_until(lambda: matched() >= 3), f"{len(points)} points, errors {dict(tracker.input_errors)}"
    for point in points:
        assert point.header.frame_id == "base_link" and point.point.z > 0.1  # 3D only: no pixel points
        if _stamp(point.header) in by_stamp:
            q = by_stamp[_stamp(point.header)]  # 90 degrees about z, then 1 m along x
            assert (point.point.x, point.point.y, point.point.z) == pytest.approx((1.0 - q.y, q.x, q.z), abs=1e-6)
    # an unknown frame: nothing is published in it, and the failure is counted
    assert _set(tracker, target_frame="map")[0].successful
    assert ros.spin_until(lambda: tracker.input_errors["tf"] >= 2)
    assert "no transform camera_color_optical_frame -> map" in tracker.last_input_error


def test_the_node_converts_and_pairs_with_cv_bridge_and_message_filters_where_they_import(
        ros: Harness, expression: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Jazzy install has cv_bridge and message_filters (here: the stand-ins): every colour and depth image of the
    camera goes through CvBridge, colour and depth are paired by ApproximateTimeSynchronizer, and the 3D points
    are the same as with the builtin path (the consistency test above); /diagnostics names the libraries."""
    from diagnostic_msgs.msg import DiagnosticArray
    from glus_ros_msgs.msg import TargetResultArray
    from std_msgs.msg import String

    from helpers_standins import CV_BRIDGE, MESSAGE_FILTERS, install_stand_in

    bridge = install_stand_in(tmp_path, monkeypatch, "cv_bridge", CV_BRIDGE)
    filters = install_stand_in(tmp_path, monkeypatch, "message_filters", MESSAGE_FILTERS)
    results = ros.record(TargetResultArray, "/glus/segmentation")
    diagnostics = ros.record(DiagnosticArray, "/diagnostics")
    tracker = ros.tracker(use_depth=True)
    tracker.trigger_configure()
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()
    assert tracker.backends == {"image_conversion": "cv_bridge", "sync": "message_filters"}

    def with_3d() -> list:
        return [m for m in results if m.results and m.results[0].has_point_3d]

    def reported() -> dict:
        statuses = [{kv.key: kv.value for kv in s.values} for a in diagnostics for s in a.status]
        return next((v for v in reversed(statuses) if v.get("lifecycle_state") == "active"), {})

    assert ros.spin_until(lambda: len(with_3d()) >= 3 and reported()), (
        f"{len(results)} results; errors {dict(tracker.input_errors)}")
    kinds = set(bridge.calls)
    assert kinds == {("rgb8", "rgb8"), ("16UC1", "passthrough")}, kinds  # camera_source: rgb8 + 16UC1 mm
    assert {index for index, _, _ in filters.seen} == {0, 1}  # colour and depth both went through the synchroniser
    assert 0.1 < with_3d()[-1].results[0].point_3d.z < 100.0
    values = reported()
    assert (values["image_conversion"], values["sync"], values["sync_dropped"]) == ("cv_bridge", "message_filters",
                                                                                    "n/a")


def test_diagnostics_once_a_second_in_every_state(ros: Harness, expression: str) -> None:
    """/diagnostics at 1 Hz from construction on: model state, lifecycle state, rates, latency and drops."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from std_msgs.msg import String

    arrays = ros.record(DiagnosticArray, "/diagnostics")
    tracker = ros.tracker()

    def statuses(state: str) -> list[tuple[float, Any, dict]]:
        found = []
        for array in arrays:
            for s in array.status:
                values = {kv.key: kv.value for kv in s.values}
                if s.name == "tracker: language tracker" and values["lifecycle_state"] == state:
                    found.append((array.header.stamp.sec + array.header.stamp.nanosec * 1e-9, s, values))
        return found

    assert ros.spin_until(lambda: bool(statuses("unconfigured")))
    _, status, values = statuses("unconfigured")[-1]
    assert status.level == DiagnosticStatus.OK and status.message == "unconfigured (no model)"
    assert values["model_state"] == "not loaded" and values["targets"] == "0"
    tracker.trigger_configure()
    assert ros.spin_until(lambda: bool(statuses("inactive")))
    assert statuses("inactive")[-1][2]["model_state"] == "loaded on cpu"
    ros.command_publisher().publish(String(data=expression))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()
    assert ros.spin_until(lambda: len(statuses("active")) >= 4, 20.0)
    stamps = [t for t, _, _ in statuses("active")]
    gaps = np.diff(stamps)
    assert 0.8 <= float(np.mean(gaps)) <= 1.25 and gaps.max() < 2.5, gaps  # 1 Hz (a busy CPU may delay one)
    _, status, values = statuses("active")[-1]
    assert status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN), status.message  # WARN: dropping frames
    assert float(values["input_rate_hz"]) > 5.0 and float(values["processed_rate_hz"]) > 0.0
    assert float(values["latency_p50_ms"]) > 0.0 and float(values["latency_max_ms"]) >= float(values["latency_p50_ms"])
    assert int(values["frames_in"]) >= int(values["frames_processed"]) + int(values["frames_dropped"]) - 1
    assert values["targets"] == "1" and values["results_published"] != "0"
    tracker.trigger_deactivate()
    assert ros.spin_until(lambda: bool(statuses("inactive")[-1:]) and statuses("inactive")[-1][0] > stamps[-1])
    assert statuses("inactive")[-1][1].message == "inactive (configured, not tracking)"


# --- conversions without spinning ----------------------------------------------------------------------


def _target(mode: str, lost: bool = False, point_3d: tuple | None = None) -> TargetOutput:
    mask = np.zeros((6, 8), bool)
    if not lost:
        mask[1:4, 2:6] = True
    return TargetOutput(target_id="t", expression="the cup", mask=mask, bbox=None if lost else (2, 1, 5, 3),
                        point_2d=None if lost else (3.0, 2.0), point_3d=None if lost else point_3d,
                        score=0.1 if lost else 0.9, state="lost" if lost else "tracking", mode=mode)


def test_target_messages_follow_the_mode() -> None:
    from glus_ros_msgs.msg import TargetResult
    from std_msgs.msg import Header

    from glus_ros.ros.messages import frame_result_to_msg, target_point_msg, target_to_msg

    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    both = target_to_msg(_target("both", point_3d=(0.1, -0.2, 1.5)), header)
    assert (both.mask.width, both.mask.height) == (8, 6)
    assert np.frombuffer(both.mask.data, np.uint8).reshape(6, 8)[1, 2] == 255
    assert (both.bbox.x_min, both.bbox.y_min, both.bbox.x_max, both.bbox.y_max) == (2, 1, 5, 3)
    assert [(p.x, p.y, p.z) for p in both.points_2d] == [(3.0, 2.0, 0.0)]
    assert both.has_point_3d and (both.point_3d.x, both.point_3d.y, both.point_3d.z) == pytest.approx((0.1, -0.2, 1.5))
    assert both.state == TargetResult.TRACKING and both.score == pytest.approx(0.9)
    mask_only = target_to_msg(_target("mask", point_3d=(0.1, -0.2, 1.5)), header)
    assert mask_only.mask.width == 8 and not mask_only.points_2d and not mask_only.has_point_3d
    point_only = target_to_msg(_target("point"), header)
    assert point_only.mask.width == 0 and point_only.mask.encoding == "mono8" and point_only.mask.data.tolist() == []
    assert point_only.bbox.x_max < point_only.bbox.x_min and len(point_only.points_2d) == 1
    lost = target_to_msg(_target("both", lost=True), header)
    assert lost.state == TargetResult.LOST and lost.bbox.x_max < lost.bbox.x_min and not lost.points_2d

    p3 = target_point_msg(_target("mask", point_3d=(0.1, -0.2, 1.5)), header)
    assert (p3.point.x, p3.point.y, p3.point.z) == pytest.approx((0.1, -0.2, 1.5)) and p3.header.frame_id == "cam"
    assert target_point_msg(_target("mask"), header) is None  # a 2D point only: no PointStamped (metres only)
    assert target_point_msg(_target("mask", lost=True), header) is None
    for bad in ((float("nan"), 0.0, 1.0), (0.0, float("inf"), 1.0), (0.0, 0.0, float("-inf"))):
        assert target_point_msg(_target("both", point_3d=bad), header) is None
        assert not target_to_msg(_target("both", point_3d=bad), header).has_point_3d
    nan_score = _target("both")
    nan_score.score = float("nan")
    assert target_to_msg(nan_score, header).score == 0.0

    result = FrameResult(stamp=12.0, frame_id="cam", seq=4, width=8, height=6, targets=[_target("both")],
                         latency_ms=5.0, frames_dropped=2, image=np.zeros((6, 8, 3), np.uint8))
    msg = frame_result_to_msg(result, header, latency_ms=42.5)
    assert msg.header.stamp.nanosec == 345 and msg.latency_ms == pytest.approx(42.5) and msg.frames_dropped == 2
    assert msg.results[0].header.stamp.nanosec == 345


def test_commands_against_a_real_engine() -> None:
    from glus_ros_msgs.msg import ReferringCommand, RegionPrompt

    from glus_ros.ros.messages import apply_commands, apply_text_command
    from glus_ros.streaming.engine import EngineConfig, StreamingEngine

    engine = StreamingEngine(tiny_model(), EngineConfig(max_targets=2))
    rc = ReferringCommand
    outcome = apply_commands(engine, [
        rc(action=rc.ADD, target_id="mug", expression="the red mug", mode=rc.MODE_POINT),
        rc(action=rc.ADD, expression="the blue ball", region=RegionPrompt(type=RegionPrompt.POINT, x0=3.0, y0=4.0)),
        rc(action=rc.ADD, expression="a third one"),
        rc(action=rc.REPLACE, target_id="nobody", expression="x"),
        rc(action=rc.REMOVE, target_id=""),
        rc(action=9),
        rc(action=rc.ADD, target_id="m2", expression="ok", mode=7),
    ])
    assert not outcome.success
    assert outcome.target_ids == ["mug", "target_0", "", "nobody", "", "", "m2"]
    assert len(outcome.errors) == 5
    assert "max_targets 2" in outcome.errors[0]
    assert outcome.errors[1] == "command 3 (REPLACE 'nobody'): unknown target 'nobody' (known: mug, target_0)"
    assert "REMOVE needs a target_id" in outcome.errors[2]
    assert "unknown action 9" in outcome.errors[3] and "unknown mode 7" in outcome.errors[4]
    assert outcome.warnings == []  # the region is used: target_0 is "track <region>"
    assert [(s.target_id, s.mode) for s, _ in engine.targets()] == [("mug", "point"), ("target_0", "mask")]
    assert engine.targets()[1][0].region == Region.point(3.0, 4.0)
    # the text topic replaces target_0 (and adds it when absent)
    assert apply_text_command(engine, "  the green cube ") == "target_0"
    assert [(s.target_id, s.expression) for s, _ in engine.targets()][1] == ("target_0", "the green cube")
    with pytest.raises(ValueError, match="empty expression"):
        apply_text_command(engine, " ")
    assert apply_commands(engine, [rc(action=rc.CLEAR)]).success and engine.targets() == []
    assert apply_text_command(engine, "the cup") == "target_0" and len(engine.targets()) == 1


def test_qos_profiles_from_parameters() -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from glus_ros.ros.qos import qos_profile, results_qos, sensor_qos

    assert sensor_qos().reliability == ReliabilityPolicy.BEST_EFFORT and sensor_qos().depth == 5
    profile = qos_profile("Reliable", 10, "transient_local")
    assert profile.reliability == ReliabilityPolicy.RELIABLE and profile.depth == 10
    assert profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert results_qos().reliability == ReliabilityPolicy.RELIABLE
    with pytest.raises(ValueError, match="unknown QoS reliability 'fast'; choose one of best_effort, reliable"):
        qos_profile("fast")
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        qos_profile("reliable", 0)
    with pytest.raises(ValueError, match="durability"):
        qos_profile("reliable", 1, "forever")


# --- real clients: metres only, nothing non-finite, every target's 3D point, the latched target set -------------
GOOD_K = (150.0, 150.0, 63.5, 47.5)
BAD_CAMERAS = {  # name -> (fx, fy, cx, cy) or None for the good K, depth fill (None: the scene's depth)
    "valid": (None, None),
    "nan_principal_point": ((150.0, 150.0, float("nan"), 47.5), None),
    "inf_focal_length": ((150.0, float("inf"), 63.5, 47.5), None),
    "zero_K": ((0.0, 0.0, 0.0, 0.0), None),
    "nan_depth": (None, float("nan")),
    "inf_depth": (None, float("inf")),
    "zero_depth": (None, 0.0),
    "absurd_depth_and_focal_length": ((1e-300, 1e-300, 63.5, 47.5), 3.0e38),
}


def _all_finite(values: Any) -> bool:
    return all(np.isfinite(float(v)) for v in values)


def _floats_of(msg: Any) -> list[float]:
    """Every float field of a message, recursively (sequences of messages and of numbers included)."""
    found: list[float] = []
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if isinstance(value, float):
            found.append(value)
        elif hasattr(value, "get_fields_and_field_types"):
            found += _floats_of(value)
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
            for item in value:
                if hasattr(item, "get_fields_and_field_types"):
                    found += _floats_of(item)
                elif isinstance(item, (float, np.floating)):
                    found.append(float(item))
    return found


@pytest.mark.parametrize("case", list(BAD_CAMERAS))
def test_no_non_finite_value_reaches_any_topic(ros: Harness, case: str) -> None:
    """CameraInfo with NaN / inf / zero K and depth of NaN / inf / 0 / absurd values: results, target points, per-target
    points and markers carry finite numbers only, and a bad K is refused (counted) instead of used. The valid case
    shows the same path does publish 3D points (so the others are not vacuous)."""
    from geometry_msgs.msg import PointStamped
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header, String
    from visualization_msgs.msg import MarkerArray

    from glus_ros.ros.camera_source import SyntheticCamera
    from glus_ros.ros.image_conversion import depth_to_image, float_to_stamp, rgb_to_image
    from glus_ros.ros.qos import qos_profile

    k, depth_fill = BAD_CAMERAS[case]
    fx, fy, cx, cy = k if k is not None else GOOD_K
    prefix = f"/glus_bad_{case}"
    tracker = ros.tracker(use_depth=True, schedule="full", image_topic=f"{prefix}/image",
                          depth_topic=f"{prefix}/depth", camera_info_topic=f"{prefix}/info",
                          depth_timeout_s=30.0)
    tracker.set_parameters([Parameter("publish_markers", value=True)])
    recorded = {
        "results": ros.record(TargetResultArray, "/glus/segmentation"),
        "point": ros.record(PointStamped, "/glus/target_point"),
        "per_target": ros.record(PointStamped, "/glus/target_points/target_0"),
        "markers": ros.record(MarkerArray, "/glus/markers"),
    }
    tracker.trigger_configure()
    camera = SyntheticCamera(0, 0, 32, WIDTH, HEIGHT)
    ros.command_publisher().publish(String(data=camera.expressions[0]))
    assert ros.spin_until(lambda: bool(tracker.engine.targets()))
    tracker.trigger_activate()
    qos = qos_profile("reliable", 10)
    pubs = {name: ros.probe.create_publisher(t, f"{prefix}/{name}", qos)
            for name, t in (("image", Image), ("depth", Image), ("info", CameraInfo))}
    assert ros.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()))
    for t in range(24):
        frame = camera.frame(t)
        header = Header(stamp=float_to_stamp(100.0 + t / 15), frame_id="cam")
        depth = frame.depth if depth_fill is None else np.full_like(frame.depth, depth_fill)
        pubs["info"].publish(CameraInfo(header=header, width=WIDTH, height=HEIGHT,
                                        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]))
        pubs["depth"].publish(depth_to_image(depth, "32FC1", header))
        pubs["image"].publish(rgb_to_image(frame.rgb, "rgb8", header))
        ros.spin_for(1 / 15)
    assert ros.spin_until(lambda: len(recorded["results"]) >= 10, 30.0), f"{len(recorded['results'])} results"
    ros.spin_for(0.5)

    for name, messages in recorded.items():
        for msg in messages:
            assert _all_finite(_floats_of(msg)), f"{case}: a non-finite value on {name}"
    with_3d = [r for m in recorded["results"] for r in m.results if r.has_point_3d]
    if case == "valid":
        assert with_3d and recorded["point"] and recorded["per_target"], "the valid camera publishes 3D points"
        assert all(p.point.z > 0 for p in recorded["point"] + recorded["per_target"])
        assert tracker.input_errors.get("camera_info", 0) == 0
    else:
        assert not with_3d and not recorded["point"] and not recorded["per_target"], f"{case}: 3D from bad input"
        if k is not None and case != "absurd_depth_and_focal_length":
            assert tracker.input_errors["camera_info"] > 0 and "CameraInfo K" in tracker.last_input_error


def test_every_target_gets_its_3d_point_and_the_target_set_is_latched(ros: Harness, expression: str) -> None:
    """Two targets with depth: glus/target_points/<id> for each (metres); the set is on the latched glus/targets
    for a subscriber that comes after the commands (a recorder started later), whichever way each target came."""
    from geometry_msgs.msg import PointStamped
    from glus_ros_msgs.msg import ReferringCommand, ReferringCommandArray, RegionPrompt
    from glus_ros_msgs.srv import SetTargets
    from std_msgs.msg import String

    from glus_ros.ros.qos import latched_qos

    tracker = ros.tracker(use_depth=True)
    tracker.trigger_configure()
    ros.command_publisher().publish(String(data=expression))                    # target_0, by topic
    assert ros.spin_until(lambda: len(tracker.engine.targets()) == 1)
    box = RegionPrompt(type=RegionPrompt.BOX, x0=10.0, y0=10.0, x1=60.0, y1=50.0)
    reply = ros.call(SetTargets, "/tracker/set_targets", SetTargets.Request(commands=[ReferringCommand(
        target_id="left cup", expression="", action=ReferringCommand.ADD, mode=ReferringCommand.MODE_BOTH,
        region=box)]))                                                          # by service, a region target
    assert reply.success, reply.message
    tracker.trigger_activate()

    snapshots: list = []
    ros.probe.create_subscription(ReferringCommandArray, "/glus/targets", snapshots.append, latched_qos())
    assert ros.spin_until(lambda: bool(snapshots)), "a late subscriber gets the latched target set"
    commands = snapshots[-1].commands
    assert [(c.target_id, c.action) for c in commands] == [("target_0", ReferringCommand.ADD),
                                                          ("left cup", ReferringCommand.ADD)]
    assert commands[0].expression == expression and commands[0].mode == ReferringCommand.MODE_BOTH
    assert (commands[1].region.type, commands[1].region.x1, commands[1].region.y1) == (RegionPrompt.BOX, 60.0, 50.0)

    points = {tid: ros.record(PointStamped, f"/glus/target_points/{topic}")
              for tid, topic in (("target_0", "target_0"), ("left cup", "left_cup"))}
    assert ros.spin_until(lambda: all(points.values())), {k: len(v) for k, v in points.items()}
    for received in points.values():
        assert all(p.header.frame_id == FRAME_ID and 0.1 < p.point.z < 100.0 for p in received)

    ros.call(SetTargets, "/tracker/set_targets", SetTargets.Request(commands=[ReferringCommand(
        target_id="left cup", action=ReferringCommand.REMOVE)]))
    assert ros.spin_until(lambda: [c.target_id for c in snapshots[-1].commands] == ["target_0"])
