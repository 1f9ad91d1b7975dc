"""glus_ros_msgs and the ROS environment: the DDS profile, and messages/services across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from glus_ros.ros_env import (
    apply_ros_environment,
    ros_environment,
    shm_profile_path,
    user_has_dds_settings,
)

from helpers_ros import (
    RosTestEnv,
    call_idempotent,
    rclpy_context,
    ros_session,
    spdp_multicast_port,
    spin_until,
    udp_ports,
)

REPO = Path(__file__).resolve().parent.parent
NS = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
WAIT_S = 20.0


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def test_shipped_profile_is_shared_memory_only() -> None:
    """Builtin (UDP) transports off; the default participant uses exactly one SHM transport of 16 MiB."""
    path = REPO / "config" / "fastdds_shm.xml"
    root = ET.parse(path).getroot()
    descriptors = {
        d.findtext("f:transport_id", namespaces=NS): d for d in root.findall(".//f:transport_descriptor", NS)
    }
    participants = root.findall("f:participant", NS)
    defaults = [p for p in participants if p.get("is_default_profile") == "true"]
    assert len(defaults) == 1, "exactly one default participant profile"
    rtps = defaults[0].find("f:rtps", NS)
    assert rtps is not None
    assert rtps.findtext("f:useBuiltinTransports", namespaces=NS).strip() == "false"
    used = [t.text.strip() for t in rtps.findall("f:userTransports/f:transport_id", NS)]
    assert len(used) == 1 and used[0] in descriptors
    shm = descriptors[used[0]]
    assert shm.findtext("f:type", namespaces=NS).strip() == "SHM"
    assert int(shm.findtext("f:segment_size", namespaces=NS)) == 16 * 1024 * 1024
    # Nothing else in the file may name a network transport.
    assert all(d.findtext("f:type", namespaces=NS).strip() == "SHM" for d in descriptors.values())


def test_ros_environment_sets_local_dds_and_keeps_base(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "AMENT_PREFIX_PATH": "/opt/other", "ROS_DOMAIN_ID": "7"}
    env = ros_environment(base, log_dir=str(tmp_path))
    profile = str(shm_profile_path())
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == profile
    assert Path(profile).samefile(REPO / "config" / "fastdds_shm.xml")
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert env["ROS_LOG_DIR"] == str(tmp_path)
    assert env["AMENT_PREFIX_PATH"].split(os.pathsep) == [sys.prefix, "/opt/other"]
    assert env["PATH"] == "/usr/bin" and env["ROS_DOMAIN_ID"] == "7"
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in base, "base must not be modified"
    # A second pass does not add sys.prefix twice.
    assert ros_environment(env)["AMENT_PREFIX_PATH"] == env["AMENT_PREFIX_PATH"]


def test_apply_respects_the_users_dds_profile(tmp_path: Path) -> None:
    """On a robot the user's DDS profile wins; force=True (tests, demos) overrides it."""
    saved = dict(os.environ)
    try:
        user_profile = str(tmp_path / "robot_dds.xml")
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = user_profile
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        os.environ["AMENT_PREFIX_PATH"] = "/opt/other"
        assert user_has_dds_settings()
        assert apply_ros_environment() is False
        assert os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == user_profile
        assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
        assert os.environ["AMENT_PREFIX_PATH"].split(os.pathsep) == [sys.prefix, "/opt/other"]
        assert apply_ros_environment(force=True, log_dir=str(tmp_path)) is True
        assert os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(shm_profile_path())
        assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(shm_profile_path())
        assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
        assert os.environ["ROS_LOG_DIR"] == str(tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _expected_mask() -> np.ndarray:
    """The child's mask pattern, written out independently: 8x8 checkerboard, one odd corner pixel."""
    mask = np.zeros((48, 64), np.uint8)
    for y in range(48):
        for x in range(64):
            if (x // 8 + y // 8) % 2 == 1:
                mask[y, x] = 255
    mask[47, 63] = 7
    return mask


def test_target_result_array_crosses_processes(ros_test_env: RosTestEnv) -> None:
    import rclpy
    from glus_ros_msgs.msg import TargetResult, TargetResultArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    topic = f"/glus_test/results_{os.getpid()}"
    received: list[TargetResultArray] = []
    discovery_port = spdp_multicast_port(ros_test_env.domain_id)
    with rclpy_context() as context, ros_test_env.child("publish_target_results.py", topic, "60") as child:
        node = rclpy.create_node("glus_test_subscriber", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(TargetResultArray, topic, received.append, qos)
        assert spin_until(executor, lambda: bool(received), WAIT_S, child), child.describe()
        # The network rule holds in both processes: nobody listens on the RTPS discovery multicast port.
        assert discovery_port not in udp_ports(child.pid)
        assert discovery_port not in udp_ports(os.getpid())

    msg = received[0]
    assert msg.header.stamp.sec == 1700000000 and msg.header.stamp.nanosec == 123456789
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert msg.latency_ms == pytest.approx(12.5)
    assert msg.frames_dropped == 3
    assert len(msg.results) == 1
    r = msg.results[0]
    assert r.header.frame_id == "camera_color_optical_frame"
    assert r.target_id == "mug_1"
    assert r.expression == "the red mug left of the laptop"
    assert (r.mask.height, r.mask.width, r.mask.step) == (48, 64, 64)
    assert r.mask.encoding == "mono8" and r.mask.is_bigendian == 0
    mask = np.frombuffer(r.mask.data, dtype=np.uint8).reshape(r.mask.height, r.mask.width)
    np.testing.assert_array_equal(mask, _expected_mask())
    assert (r.bbox.x_min, r.bbox.y_min, r.bbox.x_max, r.bbox.y_max) == (8, 0, 63, 47)
    assert [(p.x, p.y, p.z) for p in r.points_2d] == [(31.5, 20.25, 0.0)]
    assert r.has_point_3d is True
    assert (r.point_3d.x, r.point_3d.y, r.point_3d.z) == (0.125, -0.5, 1.75)
    assert r.score == pytest.approx(0.875)
    assert r.state == TargetResult.TRACKING == 1
    assert r.answer == "The red mug is on the left."
    assert len(r.phrases) == 1
    phrase = r.phrases[0]
    assert (phrase.text, phrase.start, phrase.end, phrase.target_id) == ("The red mug", 0, 11, "mug_1")
    assert r.answer[phrase.start : phrase.end] == phrase.text


def test_list_targets_service_across_processes(ros_test_env: RosTestEnv) -> None:
    import rclpy
    from glus_ros_msgs.msg import TargetResult
    from glus_ros_msgs.srv import ListTargets
    from rclpy.executors import SingleThreadedExecutor

    service = f"/glus_test/list_targets_{os.getpid()}"
    with rclpy_context() as context, ros_test_env.child("serve_list_targets.py", service, "60") as child:
        node = rclpy.create_node("glus_test_client", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = node.create_client(ListTargets, service)
        assert spin_until(executor, client.service_is_ready, WAIT_S, child), child.describe()
        response = call_idempotent(executor, client, ListTargets.Request(), WAIT_S, child)
        assert response is not None, child.describe()
    assert list(response.target_ids) == ["mug_1", "person_2"]
    assert list(response.expressions) == ["the red mug", "the person waving"]
    assert list(response.states) == [TargetResult.TRACKING, TargetResult.LOST]


def test_message_constants_match_the_design() -> None:
    """Other modules and users rely on these numeric values; changing one breaks recorded bags."""
    from glus_ros_msgs.msg import ReferringCommand, RegionPrompt, TargetResult

    rc = ReferringCommand
    assert (rc.ADD, rc.REPLACE, rc.REMOVE, rc.CLEAR) == (0, 1, 2, 3)
    assert (ReferringCommand.MODE_MASK, ReferringCommand.MODE_POINT, ReferringCommand.MODE_BOTH) == (0, 1, 2)
    assert (RegionPrompt.NONE, RegionPrompt.BOX, RegionPrompt.POINT) == (0, 1, 2)
    assert (TargetResult.GROUNDING, TargetResult.TRACKING, TargetResult.LOST) == (0, 1, 2)


def test_fix_rosidl_exports_rewrites_build_machine_paths_once(tmp_path: Path) -> None:
    """The wheels' exports name /opt/python/... headers; the fix points them here and is idempotent."""
    cmake_dir = tmp_path / "share" / "demo_msgs" / "cmake"
    cmake_dir.mkdir(parents=True)
    export = cmake_dir / "export_demo_msgs__rosidl_generator_pyExport.cmake"
    foreign = (
        "/opt/python/cp311-cp311/include/python3.11;"
        "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include;"
        "${_IMPORT_PREFIX}/include/demo_msgs"
    )
    export.write_text(
        "set_target_properties(demo_msgs::demo_msgs__rosidl_generator_py PROPERTIES\n"
        f'  INTERFACE_INCLUDE_DIRECTORIES "{foreign}"\n)\n'
    )
    script = [sys.executable, str(REPO / "scripts" / "fix_rosidl_exports.py"), str(tmp_path)]
    first = subprocess.run(script, capture_output=True, text=True, check=True)
    assert "changed 1 of 1" in first.stdout
    text = export.read_text()
    assert "/opt/python" not in text
    dirs = text.split('INTERFACE_INCLUDE_DIRECTORIES "')[1].split('"')[0].split(";")
    assert dirs == [sysconfig.get_paths()["include"], np.get_include(), "${_IMPORT_PREFIX}/include/demo_msgs"]
    second = subprocess.run(script, capture_output=True, text=True, check=True)
    assert "changed 0 of 1" in second.stdout
    assert export.read_text() == text


# --- region prompts and grounded answers (conversions, no spinning) -------------------------------------------


def test_region_prompts_become_regions() -> None:
    from glus_ros_msgs.msg import ReferringCommand, RegionPrompt

    from glus_ros.model.region import Region
    from glus_ros.ros.messages import command_spec

    rc = ReferringCommand
    box = command_spec(rc(action=rc.ADD, target_id=" cup ", expression="", mode=rc.MODE_BOTH,
                          region=RegionPrompt(type=RegionPrompt.BOX, x0=1.5, y0=2.0, x1=30.25, y1=40.0)))
    assert (box.target_id, box.expression, box.mode) == ("cup", "", "both")
    assert box.region == Region(1.5, 2.0, 30.25, 40.0) and box.region.kind == "box"
    point = command_spec(rc(action=rc.ADD, expression="the cup",
                            region=RegionPrompt(type=RegionPrompt.POINT, x0=3.0, y0=4.5, x1=99.0, y1=99.0)))
    assert point.region == Region.point(3.0, 4.5)  # x1 and y1 are ignored for a point
    assert command_spec(rc(action=rc.ADD, expression="the cup")).region is None  # type NONE
    with pytest.raises(ValueError, match=r"unknown region type 5 \(NONE=0, BOX=1, POINT=2\)"):
        command_spec(rc(action=rc.ADD, expression="the cup", region=RegionPrompt(type=5)))


def test_invalid_regions_are_per_command_errors_and_the_next_command_applies() -> None:
    from glus_ros_msgs.msg import ReferringCommand, RegionPrompt

    from glus_ros.model.region import Region
    from glus_ros.ros.messages import apply_commands
    from glus_ros.streaming import EngineConfig, StreamFrame, StreamingEngine

    from helpers_model import tiny_model

    engine = StreamingEngine(tiny_model(), EngineConfig(max_targets=4))
    engine.process(StreamFrame(np.zeros((48, 64, 3), np.uint8), 0.0))  # no targets: only the size is learnt
    rc, rp = ReferringCommand, RegionPrompt
    outcome = apply_commands(engine, [
        rc(action=rc.ADD, target_id="a", region=rp(type=rp.BOX, x0=30.0, y0=2.0, x1=10.0, y1=20.0)),
        rc(action=rc.ADD, target_id="b", region=rp(type=rp.BOX, x0=float("nan"), y0=2.0, x1=10.0, y1=20.0)),
        rc(action=rc.ADD, target_id="c", region=rp(type=rp.BOX, x0=0.0, y0=0.0, x1=65.0, y1=10.0)),
        rc(action=rc.ADD, target_id="d", region=rp(type=rp.POINT, x0=64.0, y0=1.0)),
        rc(action=rc.ADD, target_id="e", region=rp(type=9)),
        rc(action=rc.ADD, target_id="box", region=rp(type=rp.BOX, x0=10.0, y0=10.0, x1=30.0, y1=30.0)),
        rc(action=rc.ADD, target_id="pt", expression="the cup", region=rp(type=rp.POINT, x0=5.0, y0=6.0)),
        rc(action=rc.REPLACE, target_id="pt", region=rp(type=rp.BOX, x0=5.0, y0=5.0, x1=5.0, y1=9.0)),
        rc(action=rc.ADD, target_id="f", expression=" "),  # no region: an expression is still needed
    ])
    assert not outcome.success and outcome.warnings == []
    assert outcome.target_ids == ["a", "b", "c", "d", "e", "box", "pt", "pt", "f"]
    assert len(outcome.errors) == 7
    assert outcome.errors[0].startswith("command 0 (ADD 'a'): region box (30, 2, 10, 20): x1 < x0")
    assert "command 1 (ADD 'b')" in outcome.errors[1] and "finite" in outcome.errors[1]
    assert "command 2 (ADD 'c')" in outcome.errors[2] and "64x48 image" in outcome.errors[2]
    assert "outside the image" in outcome.errors[2]
    assert "command 3 (ADD 'd'): region point (64, 1)" in outcome.errors[3] and "outside" in outcome.errors[3]
    assert "command 4 (ADD 'e'): unknown region type 9" in outcome.errors[4]
    assert "command 7 (REPLACE 'pt')" in outcome.errors[5] and "zero area" in outcome.errors[5]
    assert "command 8 (ADD 'f'): empty expression" in outcome.errors[6]
    assert [(s.target_id, s.expression, s.region) for s, _ in engine.targets()] == [
        ("box", "", Region(10.0, 10.0, 30.0, 30.0)), ("pt", "the cup", Region.point(5.0, 6.0))]


def test_answers_and_phrases_fill_the_target_result() -> None:
    from std_msgs.msg import Header

    from glus_ros.ros.messages import frame_result_to_msg, target_to_msg
    from glus_ros.streaming import EngineConfig, FrameResult, StreamFrame, StreamingEngine, TargetOutput, TargetSpec

    from helpers_model import moving_disk_clip, tiny_model

    answer = "The red mug is left of the laptop."
    out = TargetOutput(target_id="mug_1", expression="where is the mug?", mask=np.zeros((6, 8), bool), bbox=None,
                       point_2d=None, point_3d=None, score=0.1, state="lost", mode="mask", answer=answer,
                       phrases=[("The red mug", 0, 11), ("the laptop", 23, 33)])
    msg = target_to_msg(out, Header(frame_id="cam"))
    assert msg.answer == answer
    # built by hand without phrase_target_ids: the engine's naming (first phrase = the target's own id)
    assert [(p.text, p.start, p.end, p.target_id) for p in msg.phrases] == [
        ("The red mug", 0, 11, "mug_1"), ("the laptop", 23, 33, "mug_1/phrase_1")]
    assert all(msg.answer[p.start:p.end] == p.text for p in msg.phrases)
    plain = target_to_msg(TargetOutput("t", "the mug", np.zeros((6, 8), bool), None, None, None, 0.1, "lost",
                                       "mask"), Header())
    assert plain.answer == "" and list(plain.phrases) == []
    # what the engine answers is what the message carries
    engine = StreamingEngine(tiny_model(), EngineConfig(answer_tokens=4))
    engine.add_target(TargetSpec("q", "what moves?"))
    result: FrameResult = engine.process(StreamFrame(moving_disk_clip(1)[0], 1.0))
    (target,) = frame_result_to_msg(result, Header(frame_id="cam"), 3.0).results
    assert target.answer == result.targets[0].answer
    assert [(p.text, p.start, p.end) for p in target.phrases] == result.targets[0].phrases


def test_each_grounded_phrase_is_its_own_target_result_and_its_phrase_points_at_it() -> None:
    from std_msgs.msg import Header

    from glus_ros.ros.messages import frame_result_to_msg
    from glus_ros.streaming import FrameResult, TargetOutput

    answer = "The red mug is left of the laptop."
    phrases = [("The red mug", 0, 11), ("the laptop", 23, 33)]
    ids = ["q", "q/phrase_1"]
    mug, laptop = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    mug[1:3, 1:3] = True
    laptop[3:5, 5:8] = True
    outs = [TargetOutput(target_id=i, expression="where is the mug?", mask=m, bbox=b, point_2d=None, point_3d=None,
                         score=0.9, state="tracking", mode="mask", answer=answer, phrases=list(phrases),
                         phrase_target_ids=list(ids))
            for i, m, b in (("q", mug, (1, 1, 2, 2)), ("q/phrase_1", laptop, (5, 3, 7, 4)))]
    result = FrameResult(stamp=1.0, frame_id="cam", seq=1, width=8, height=6, targets=outs, latency_ms=1.0,
                         frames_dropped=0, image=np.zeros((6, 8, 3), np.uint8))
    msg = frame_result_to_msg(result, Header(frame_id="cam"), 1.0)
    assert [r.target_id for r in msg.results] == ids
    by_id = {r.target_id: r for r in msg.results}
    for r in msg.results:
        assert r.answer == answer
        assert [(p.text, p.target_id) for p in r.phrases] == [("The red mug", "q"), ("the laptop", "q/phrase_1")]
    # a subscriber finds each phrase's own mask through GroundedPhrase.target_id
    for phrase, expected in zip(msg.results[0].phrases, (mug, laptop), strict=True):
        own = by_id[phrase.target_id]
        got = np.frombuffer(own.mask.data, dtype=np.uint8).reshape(own.mask.height, own.mask.width) > 0
        np.testing.assert_array_equal(got, expected)
