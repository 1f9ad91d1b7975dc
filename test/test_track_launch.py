"""launch/track.launch.py, the parameter files, and the `glus-ros track` / `glus-ros demo` commands end to end.

`launch` and `launch_ros` are not installable from PyPI here, so the launch file is checked statically (its
arguments, executables, parameter files and lifecycle events); where `launch_ros` is importable the test also
builds the launch description for real. The commands run as real processes in the test's ROS domain.
"""

from __future__ import annotations

import ast
import importlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from glus_ros.model.config import DEFAULT_MODEL

from helpers_ros import RosTestEnv, rclpy_context, ros_session

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "track.launch.py"
MULTI_CAMERA_LAUNCH_FILE = REPO / "launch" / "multi_camera.launch.py"
# what issue 28 asks a user can set from the command line, besides the camera and model basics
LAUNCH_ARGUMENTS = {"namespace", "params_file", "with_camera", "camera_topic", "model", "checkpoint", "vision_tower",
                    "adapter",
                    "device", "dtype", "schedule", "use_depth", "compressed", "target_frame"}


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = <literal> assignments."""
    return {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}


def _kwarg(call: ast.Call, name: str, constants: dict[str, object] | None = None) -> object:
    """A keyword argument's literal value (module constants resolved), else its AST node."""
    for kw in call.keywords:
        if kw.arg == name:
            if isinstance(kw.value, ast.Constant):
                return kw.value.value
            if isinstance(kw.value, ast.Name) and constants and kw.value.id in constants:
                return constants[kw.value.id]
            return kw.value
    raise AssertionError(f"{ast.unparse(call)[:80]} has no {name}=")


def _console_scripts() -> dict[str, str]:
    """setup.py's console_scripts as name -> 'module:function'."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (setup,) = _calls(tree, "setup")
    entry_points = ast.literal_eval(_kwarg(setup, "entry_points"))  # a dict literal: returned as its node
    pairs = (line.split("=", 1) for line in entry_points["console_scripts"])
    return {name.strip(): target.strip() for name, target in pairs}


def test_launch_file_declares_arguments_nodes_and_auto_activation() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    constants = _constants(tree)
    overrides = ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                      and getattr(n.targets[0], "id", "") == "TRACKER_OVERRIDES"))
    literal = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")
               if isinstance(c.args[0], ast.Constant)}
    declared = literal | set(overrides)  # the overrides are declared in a loop over TRACKER_OVERRIDES
    assert declared == LAUNCH_ARGUMENTS
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")
            if isinstance(c.args[0], ast.Constant)}
    assert used | set(overrides) == LAUNCH_ARGUMENTS, "every argument is used, and only declared ones"
    from glus_ros.ros.tracker_params import PARAMETERS

    for argument, (parameter, _) in overrides.items():
        assert parameter in PARAMETERS, f"launch argument {argument} sets unknown tracker parameter {parameter}"

    (tracker,) = _calls(tree, "LifecycleNode")
    assert (_kwarg(tracker, "package", constants), _kwarg(tracker, "executable")) == ("glus_ros", "tracker_node")
    assert _kwarg(tracker, "name") == "tracker" and ast.unparse(_kwarg(tracker, "namespace")) == "namespace"
    (camera,) = [c for c in _calls(tree, "Node") if isinstance(c.func, ast.Name)]
    assert (_kwarg(camera, "package", constants), _kwarg(camera, "executable"), _kwarg(camera, "name")) == (
        "glus_ros", "camera_source", "camera_source")
    assert "with_camera" in ast.unparse(_kwarg(camera, "condition"))

    # configure at start, activate when the tracker reaches inactive
    transitions = [ast.unparse(_kwarg(c, "transition_id")) for c in _calls(tree, "ChangeState")]
    assert sorted(transitions) == ["Transition.TRANSITION_ACTIVATE", "Transition.TRANSITION_CONFIGURE"]
    (handler,) = _calls(tree, "OnStateTransition")
    assert (_kwarg(handler, "start_state"), _kwarg(handler, "goal_state")) == ("configuring", "inactive")

    # parameter files come from the package share dir, and exist in config/ (installed by setup.py)
    text = LAUNCH_FILE.read_text()
    assert 'get_package_share_directory(PACKAGE)' in text and 'PACKAGE = "glus_ros"' in text
    files = {c.args[-1].value for c in _calls(tree, "join") if isinstance(c.args[-1], ast.Constant)}
    assert files == {"config", "tracker.yaml", "camera_source.yaml"}
    for name in ("tracker.yaml", "camera_source.yaml"):
        key = f"/**/{name.removesuffix('.yaml')}"  # the node in any namespace (one tracker per camera)
        assert key in yaml.safe_load((REPO / "config" / name).read_text()), f"{name} is keyed by {key}"
    assert '(f"share/{PACKAGE}/config", glob("config/*"))' in (REPO / "setup.py").read_text()
    assert '(f"share/{PACKAGE}/launch", glob("launch/*.py"))' in (REPO / "setup.py").read_text()


def test_multi_camera_launch_includes_one_tracker_per_camera_namespace() -> None:
    tree = ast.parse(MULTI_CAMERA_LAUNCH_FILE.read_text())
    constants = _constants(tree)
    cameras = ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                    and getattr(n.targets[0], "id", "") == "CAMERAS"))
    assert len(cameras) == 2 and len(set(cameras)) == 2
    (include,) = _calls(tree, "IncludeLaunchDescription")
    assert "track" in ast.unparse(include) and "'namespace': camera" in ast.unparse(include)
    assert constants["PACKAGE"] == "glus_ros"
    assert '"launch", "track.launch.py"' in MULTI_CAMERA_LAUNCH_FILE.read_text()
    shared = ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                   and getattr(n.targets[0], "id", "") == "SHARED"))
    assert set(shared) <= LAUNCH_ARGUMENTS


def test_launch_executables_are_console_scripts() -> None:
    scripts = _console_scripts()
    for executable, target in (("tracker_node", "glus_ros.ros.tracker_node:main"),
                               ("camera_source", "glus_ros.ros.camera_source:main")):
        assert scripts.get(executable) == target, f"setup.py must install console script {executable} = {target}"
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_launch_description_builds_where_launch_ros_exists() -> None:
    """Only meaningful on a ROS 2 install; here it checks that the file at least compiles."""
    code = compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")
    try:
        import launch_ros  # noqa: F401
        from launch.launch_description import LaunchDescription  # noqa: F401
    except ImportError:
        return  # no ROS launch system here; the static test above covers the file
    namespace: dict = {}
    exec(code, namespace)
    description = namespace["generate_launch_description"]()
    names = {a.name for a in description.get_launch_arguments()}
    assert names == LAUNCH_ARGUMENTS
    multi: dict = {}
    exec(compile(MULTI_CAMERA_LAUNCH_FILE.read_text(), str(MULTI_CAMERA_LAUNCH_FILE), "exec"), multi)
    assert multi["generate_launch_description"]().entities


def test_params_file_is_what_the_node_declares(ros_test_env: RosTestEnv) -> None:
    """config/tracker.yaml loads through rclpy's own params-file parser into exactly the declared parameters."""
    from glus_ros.ros.tracker_node import PARAMETERS, TrackerNode

    values = yaml.safe_load((REPO / "config" / "tracker.yaml").read_text())["/**/tracker"]["ros__parameters"]
    assert set(values) == set(PARAMETERS)
    with rclpy_context() as context:
        node = TrackerNode(context=context, cli_args=[
            "--ros-args", "--params-file", str(REPO / "config" / "tracker.yaml"), "-p", "schedule:=full"])
        try:
            for name, value in values.items():
                expected = "full" if name == "schedule" else value
                assert node.get_parameter(name).value == expected, name
                assert type(node.get_parameter(name).value) is type(PARAMETERS[name][0]), name
        finally:
            node.destroy_node()


def _cli(ros_test_env: RosTestEnv, cwd: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glus_ros.cli", *args], cwd=cwd, env=ros_test_env.child_env(),
                          capture_output=True, text=True, timeout=timeout)


def _published(line: str) -> int:
    return int(line.split("results published ")[1].split(";")[0])


def _latched_targets(ros_test_env: RosTestEnv, timeout_s: float = 30.0) -> object:
    import rclpy
    from glus_ros_msgs.msg import ReferringCommandArray
    from rclpy.executors import SingleThreadedExecutor

    from glus_ros.ros.qos import latched_qos

    from helpers_ros import spin_until

    with rclpy_context() as context:
        node = rclpy.create_node("glus_latched_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received: list = []
        node.create_subscription(ReferringCommandArray, "/glus/targets", received.append, latched_qos())
        spin_until(executor, lambda: bool(received), timeout_s)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    assert received, "nothing latched on /glus/targets"
    return received[-1]


def test_track_command_runs_camera_and_tracker_until_sigterm(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """The one-process runner streams until SIGTERM, then ends like on Ctrl-C: status 0, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "glus_ros.cli", "track", "--camera", "synth", "--expression",
                             "the blue one", "-p", "schedule:=full"], cwd=tmp_path, env=ros_test_env.child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # a status line every 2 s
            lines.append(line)
            if "results published" in line and _published(line) > 0:
                break
        # a late subscriber (a recorder started now) gets the --expression target from the latched set
        snapshot = _latched_targets(ros_test_env)
        assert [(c.target_id, c.expression) for c in snapshot.commands] == [("target_0", "the blue one")]
        proc.send_signal(signal.SIGTERM)
        rest, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    stdout = "".join(lines) + rest
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "Failed to publish" not in stderr, stderr[-3000:]
    last = [line for line in stdout.splitlines() if "results published" in line][-1]
    assert _published(last) > 0 and "target_0: " in last, stdout


@pytest.mark.parametrize(("args", "message"), [
    (("-p", "schedule"), "-p 'schedule': expected NAME:=VALUE"),
    (("--expression", " "), "empty expression"),
    (("--duration", "0"), "--duration must be positive"),
    (("--params", "/no/such/tracker.yaml"), "parameter file /no/such/tracker.yaml does not exist"),
])
def test_track_command_rejects_bad_input(capsys: pytest.CaptureFixture, args: tuple, message: str) -> None:
    """Checked before rclpy or the model start: exit 2 and one clear line."""
    from glus_ros.cli import main

    assert main(["track", *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"glus-ros track: error: {message}")


def test_demo_writes_consistent_outputs(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _cli(ros_test_env, tmp_path, "demo", "--frames", "15", "--size", "160x120", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo: tracking " in proc.stdout and "demo: wrote" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    assert summary["camera"] == {"size": [160, 120], "rate_hz": 30.0, "frames_published": 15}
    assert 1 <= summary["frames_in"] <= 15
    assert summary["frames_processed"] + summary["frames_dropped"] + summary["errors"] == summary["frames_in"]
    assert summary["errors"] == 0 and summary["schedule"] == "live" and summary["model"] == DEFAULT_MODEL
    assert summary["results"] == summary["frames_processed"] == len(lines) >= 1
    assert summary["drop_fraction"] == pytest.approx(summary["frames_dropped"] / summary["frames_in"], abs=1e-4)
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"] and lat["mean"] > 0
    assert summary["mean_iou"] is not None and 0.0 <= summary["mean_iou"] <= 1.0

    stamps = [line["stamp"] for line in lines]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    seqs = [line["seq"] for line in lines]
    assert all(isinstance(s, int) and 0 <= s < 15 for s in seqs) and seqs == sorted(seqs)
    assert sum(line["frames_dropped"] for line in lines) == summary["frames_dropped"]
    for line in lines:
        (target,) = line["targets"]
        assert target["target_id"] == "target_0" and target["state"] in ("grounding", "tracking", "lost")
        assert 0.0 <= target["score"] <= 1.0 and line["latency_ms"] > 0
        # no box: lost, or (live schedule) still waiting for the first MLLM grounding (GROUNDING, score 0)
        waiting = target["state"] == "grounding" and target["score"] == 0.0
        assert (target["bbox"] is None) == (target["point"] is None) == (target["state"] == "lost" or waiting)

    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == summary["overlay_frames"] == summary["results"]
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
