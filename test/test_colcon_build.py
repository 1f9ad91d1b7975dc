"""The package built the way a ROS 2 workspace builds it: ``colcon build`` (colcon from PyPI) of glus_ros into a
temporary workspace, on the venv as underlay (which already holds glus_ros_msgs, built by scripts/install.sh).

Checked: the installed tree (executables in lib/glus_ros, share/glus_ros/{launch,config,models}, package.xml),
the ament index, that the venv's own registration (scripts/ament_register.py) has the same layout, and that the
installed executables start and answer across processes: the installed camera_source streams, the installed
tracker_node answers lifecycle get_state / change_state and ListTargets, publishes results, RViz markers and
/diagnostics, and ends cleanly on SIGINT.

glus_ros.training (the root training/ folder, as the git symlink glus_ros/training -> ../training) is checked in
every install form: colcon with and without --symlink-install, the pip wheel (non-editable) and the editable venv
install (test_packaging.py); in none of them may a top-level ``training`` shadow the sam2 wheel's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_ros import (
    RosTestEnv,
    call_idempotent,
    lifecycle_state,
    lifecycle_transition,
    rclpy_context,
    ros_session,
    spin_until,
)

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
PACKAGE = "glus_ros"
EXECUTABLES = {"camera_source", "glus-ros", "tracker_node"}
COLCON_ENV_FILES = {"package.bash", "package.dsv", "package.ps1", "package.sh", "package.zsh"}  # + hook/
WAIT_S = 60.0


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def copy_sources(destination: Path) -> None:
    """The repository's tracked files (what a clone has), symlinks kept as symlinks."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        files = [name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # no git: everything but build output
        shutil.copytree(REPO, destination, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "install", "log", "__pycache__", "out", "runs", "data"))
        return
    for name in files:
        source, target = REPO / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)


def colcon_build(workspace: Path, *options: str) -> tuple[Path, float]:
    """``colcon build --packages-select glus_ros`` in ``workspace``; returns (install prefix of glus_ros, seconds)."""
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV),
           "COLCON_HOME": str(workspace / ".colcon"), "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    start = time.monotonic()
    proc = subprocess.run([str(VENV / "bin" / "colcon"), "build", "--base-paths", "src", "--packages-select",
                           PACKAGE, *options], cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    logs = workspace / "log" / "latest_build" / PACKAGE / "stderr.log"
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs.read_text()[-3000:]}"
    return workspace / "install" / PACKAGE, took


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    copy_sources(ws / "src" / PACKAGE)
    return ws


@pytest.fixture(scope="module")
def installed(workspace: Path) -> Iterator[Path]:
    prefix, took = colcon_build(workspace)
    print(f"colcon build of {PACKAGE}: {took:.1f} s")
    yield prefix


def site_packages(prefix: Path) -> Path:
    return prefix / Path(sysconfig.get_path("purelib", vars={"base": ".", "platbase": "."}))


def top_level_training(cwd: Path, env: dict[str, str]) -> Path:
    """Where a top-level ``import training`` comes from in that environment (it must stay the sam2 wheel's)."""
    code = "import importlib.util as u; s = u.find_spec('training'); print(s.origin if s else '')"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out, "no top-level training module: the sam2 wheel installs one"
    return Path(out)


def assert_training_is_sam2s(origin: Path) -> None:
    assert origin.is_relative_to(site_packages(VENV)) and (origin.parents[1] / "sam2").is_dir(), origin


def installed_env(prefix: Path) -> dict[str, str]:
    """What ``source install/setup.bash`` sets for glus_ros: the install first on the ament and Python paths."""
    return {"AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}{VENV}", "PYTHONPATH": str(site_packages(prefix))}


def share_files(prefix: Path) -> set[str]:
    share = prefix / "share" / PACKAGE
    files = {str(p.relative_to(share)) for p in share.rglob("*") if p.is_file()}
    return {f for f in files if f not in COLCON_ENV_FILES and not f.startswith("hook/")}


def executables(prefix: Path) -> set[str]:
    """What ``ros2 pkg executables glus_ros`` lists: executable files in <prefix>/lib/glus_ros."""
    folder = prefix / "lib" / PACKAGE
    return {p.name for p in folder.iterdir() if p.is_file() and os.access(p, os.X_OK)} if folder.is_dir() else set()


def test_colcon_installs_the_ament_python_layout(installed: Path, workspace: Path) -> None:
    assert executables(installed) == EXECUTABLES
    assert not (installed / "bin").exists(), "console scripts belong in lib/glus_ros (setup.cfg)"
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    files = share_files(installed)
    for name in ("package.xml", "launch/track.launch.py", "config/tracker.yaml", "config/camera_source.yaml",
                 "config/fastdds_shm.xml", "models/tiny.yaml", "models/glus-tiny-synth/model.safetensors",
                 "models/glus-tiny-synth/adapters/counting.safetensors"):
        assert name in files, name
    assert (installed / "share" / PACKAGE / "package.xml").read_text() == (REPO / "package.xml").read_text()
    source = workspace / "src" / PACKAGE
    assert not list(source.glob("*.egg-info")) and not (source / "build").exists(), "the build wrote into src/"

    # the ament index and Python paths of a sourced workspace: the install, then the underlay
    code = ("import sys, glus_ros.training.losses, glus_ros.ros.tracker_node, glus_ros.inference\n"
            "from ament_index_python.packages import get_package_prefix, get_package_share_directory, "
            "get_packages_with_prefixes\n"
            "from glus_ros.model.config import resolve_config_path\n"
            "print(get_package_share_directory('glus_ros')); print(get_package_prefix('glus_ros'))\n"
            "print(get_packages_with_prefixes()['glus_ros_msgs']); print(resolve_config_path('glus-tiny-synth'))\n"
            "ours = [m for n, m in list(sys.modules.items()) if n == 'glus_ros' or n.startswith('glus_ros.')]\n"
            "print(len(ours)); print(*(m.__file__ or list(m.__path__)[0] for m in ours))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace, env={**os.environ, **installed_env(installed)},
                         capture_output=True, text=True, check=True).stdout.split()
    share, prefix, msgs_prefix, model, count, *modules = out
    assert (Path(share), Path(prefix), Path(msgs_prefix)) == (installed / "share" / PACKAGE, installed, VENV)
    # every glus_ros module (glus_ros.model too: a namespace package) comes from the install, none from the tree
    assert int(count) > 20 and len(modules) == int(count)
    assert all(Path(m).is_relative_to(site_packages(installed)) for m in modules), modules
    assert Path(model).is_relative_to(installed / "share" / PACKAGE / "models")
    # glus_ros.training is installed inside glus_ros only: the sam2 wheel's top-level `training` is untouched
    assert not (site_packages(installed) / "training").exists()
    assert_training_is_sam2s(top_level_training(workspace, installed_env(installed)))


def test_the_venv_registration_matches_the_colcon_install(installed: Path) -> None:
    """scripts/install.sh registers the editable install in the venv with the same layout (symlinks)."""
    assert executables(VENV) == EXECUTABLES, "run scripts/install.sh (scripts/ament_register.py)"
    assert (VENV / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    assert share_files(VENV) == share_files(installed)
    launch = VENV / "share" / PACKAGE / "launch" / "track.launch.py"
    assert launch.resolve() == REPO / "launch" / "track.launch.py"  # editable: the source tree's files

    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    assert Path(get_package_share_directory(PACKAGE)) == VENV / "share" / PACKAGE
    assert Path(get_package_prefix(PACKAGE)) == VENV


def test_symlink_install_builds_too(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``colcon build --symlink-install`` (setup.py develop): the same executables, share files as links."""
    ws = tmp_path_factory.mktemp("colcon_symlink_ws")
    copy_sources(ws / "src" / PACKAGE)
    prefix, took = colcon_build(ws, "--symlink-install")
    print(f"colcon build --symlink-install of {PACKAGE}: {took:.1f} s")
    assert executables(prefix) == EXECUTABLES
    assert (prefix / "share" / PACKAGE / "launch" / "track.launch.py").resolve() == (
        ws / "src" / PACKAGE / "launch" / "track.launch.py")
    hook = ws / "build" / PACKAGE  # colcon's develop hook puts the build folder on PYTHONPATH
    env = {**os.environ, "AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}{VENV}", "PYTHONPATH": str(hook)}
    out = subprocess.run([sys.executable, "-c", "import glus_ros.training.losses as m; print(m.__file__)"],
                         cwd=ws, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve() == ws / "src" / PACKAGE / "training" / "losses.py"
    assert not (hook / "training").exists()  # colcon links only the packages: no top-level `training` on the path
    assert_training_is_sam2s(top_level_training(ws, env))


def test_git_stores_the_training_subpackage_as_a_relative_symlink() -> None:
    """What a clean clone checks out (and copy_sources reproduces): glus_ros/training -> ../training, mode 120000."""
    try:
        listed = subprocess.run(["git", "ls-files", "-s", "glus_ros/training"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    mode, blob = listed[0], listed[1]
    target = subprocess.run(["git", "cat-file", "-p", blob], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    assert (mode, target) == ("120000", "../training")


def test_pip_wheel_holds_glus_ros_training_as_files(tmp_path: Path) -> None:
    """A non-editable pip install (the wheel pip builds): glus_ros.training as regular files inside glus_ros,
    glus_ros.model (a namespace package) included, no top-level `training`, the ament data files under .data/."""
    import zipfile

    source = tmp_path / "src"
    copy_sources(source)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("glus_ros-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: info for info in archive.infolist()}
        tops = {name.split("/")[0] for name in entries}
        assert tops == {"glus_ros", "glus_ros-0.1.0.data", "glus_ros-0.1.0.dist-info"}, tops
        ours = {name.removeprefix("glus_ros/training/") for name in entries if name.startswith("glus_ros/training/")}
        assert ours == {p.name for p in (REPO / "training").iterdir() if p.suffix in (".py", ".yaml")}
        assert not any(info.external_attr >> 28 == 0o12 for info in entries.values()), "symlinks in the wheel"
        assert archive.read("glus_ros/training/losses.py") == (REPO / "training" / "losses.py").read_bytes()
        assert "glus_ros/model/config.py" in entries
        data = "glus_ros-0.1.0.data/data/share/"
        assert {f"{data}ament_index/resource_index/packages/glus_ros", f"{data}glus_ros/launch/track.launch.py",
                f"{data}glus_ros/package.xml"} <= set(entries)


def test_installed_executables_start_and_answer(installed: Path, ros_test_env: RosTestEnv) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from glus_ros_msgs.msg import TargetResultArray
    from glus_ros_msgs.srv import ListTargets
    from lifecycle_msgs.msg import Transition
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from visualization_msgs.msg import Marker, MarkerArray

    from glus_ros.ros.qos import qos_profile

    lib = installed / "lib" / PACKAGE
    share = installed / "share" / PACKAGE
    topics = ["-p", "image_topic:=/glus_colcon/image", "-p", "depth_topic:=/glus_colcon/depth"]
    camera_args = ["--ros-args", "--params-file", str(share / "config" / "camera_source.yaml"), *topics,
                   "-p", "info_topic:=/glus_colcon/info", "-p", "synth_width:=128", "-p", "synth_height:=96"]
    tracker_args = ["--ros-args", "--params-file", str(share / "config" / "tracker.yaml"), *topics,
                    "-p", "camera_info_topic:=/glus_colcon/info", "-p", "use_depth:=true"]
    env = installed_env(installed)
    with (rclpy_context() as context,
          ros_test_env.process([str(lib / "camera_source"), *camera_args], env) as camera,
          ros_test_env.process([str(lib / "tracker_node"), *tracker_args], env) as tracker):
        executor = SingleThreadedExecutor(context=context)
        probe = rclpy.create_node("glus_colcon_probe", context=context)
        executor.add_node(probe)
        reliable = qos_profile("reliable", 50)
        images, results, markers, diagnostics = [], [], [], []
        probe.create_subscription(Image, "/glus_colcon/image", images.append, qos_profile("best_effort", 5))
        probe.create_subscription(TargetResultArray, "/glus/segmentation", results.append, reliable)
        probe.create_subscription(MarkerArray, "/glus/markers", markers.append, reliable)
        probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, reliable)
        assert spin_until(executor, lambda: len(images) >= 3, WAIT_S, camera), camera.describe()
        assert (images[-1].width, images[-1].height, images[-1].encoding) == (128, 96, "rgb8")

        assert lifecycle_state(executor, probe, "/tracker", WAIT_S, tracker) == "unconfigured", tracker.describe()
        assert lifecycle_transition(executor, probe, "/tracker", Transition.TRANSITION_CONFIGURE, "inactive",
                                    WAIT_S, tracker), tracker.describe()
        list_targets = probe.create_client(ListTargets, "/tracker/list_targets")
        assert spin_until(executor, list_targets.service_is_ready, WAIT_S, tracker)
        assert list(call_idempotent(executor, list_targets, ListTargets.Request(), WAIT_S, tracker).target_ids) == []
        command = probe.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
        assert spin_until(executor, lambda: command.get_subscription_count() > 0, WAIT_S, tracker)
        command.publish(String(data="the red circle"))

        def listed() -> list[tuple[str, str]]:
            answer = call_idempotent(executor, list_targets, ListTargets.Request(), 10.0, tracker)
            return list(zip(answer.target_ids, answer.expressions, strict=True)) if answer else []

        deadline = time.monotonic() + WAIT_S
        while listed() != [("target_0", "the red circle")] and time.monotonic() < deadline:
            pass
        assert listed() == [("target_0", "the red circle")]
        assert lifecycle_transition(executor, probe, "/tracker", Transition.TRANSITION_ACTIVATE, "active",
                                    WAIT_S, tracker), tracker.describe()

        def with_3d() -> list:
            return [m for m in results if m.results and m.results[0].has_point_3d]

        def tracking_status() -> list:
            return [s for a in diagnostics for s in a.status if s.name == "tracker: language tracker"
                    and {kv.key: kv.value for kv in s.values}.get("lifecycle_state") == "active"
                    and s.message.startswith("tracking at")]

        assert spin_until(executor, lambda: len(with_3d()) >= 3 and len(markers) >= 3 and tracking_status(),
                          WAIT_S, tracker), f"{len(results)} results, {len(markers)} markers; {tracker.describe()}"

        # markers: the same frames' 3D points, in the camera frame
        point_by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m.results[0].point_3d for m in with_3d()}
        matched = 0
        for array in markers:
            assert array.markers[0].action == Marker.DELETEALL
            spheres = [m for m in array.markers if m.ns == "glus/points"]
            key = (array.markers[0].header.stamp.sec, array.markers[0].header.stamp.nanosec)
            if spheres and key in point_by_stamp:
                p, q = spheres[0].pose.position, point_by_stamp[key]
                assert (p.x, p.y, p.z) == pytest.approx((q.x, q.y, q.z))
                assert spheres[0].header.frame_id == "camera_color_optical_frame"
                assert any(m.ns == "glus/labels" and m.text.startswith("target_0: the red circle")
                           for m in array.markers)
                matched += 1
        assert matched >= 1

        status = tracking_status()[-1]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.OK and status.hardware_id == "cpu"
        assert values["model_state"] == "loaded on cpu" and values["targets"] == "1"
        assert float(values["input_rate_hz"]) > 0 and float(values["latency_p50_ms"]) > 0
        assert values["image_conversion"] == "glus_ros" or values["image_conversion"] == "cv_bridge"

        exit_tracker = tracker.signal_and_wait(signal.SIGINT)
        exit_camera = camera.signal_and_wait(signal.SIGINT)
        executor.shutdown(timeout_sec=1.0)
        probe.destroy_node()
    assert exit_tracker == 0 and "Traceback" not in tracker.stderr_text(), tracker.describe()
    assert exit_camera == 0 and "Traceback" not in camera.stderr_text(), camera.describe()
