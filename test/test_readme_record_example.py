"""The README's record -> convert -> train example runs as written (shortened only by its own documented flags).

The block under "Recording a session and fine-tuning on it" is parsed from README.md, so the test breaks
when the README changes the example in a way that no longer runs. Each line runs as the installed
``glus-ros`` executable in a scratch folder (with the recipe it names copied there, as if in the
repository root); only later copies of documented options are appended: a shorter ``--duration`` and
``-o`` overrides that make training one step.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

REPO = Path(__file__).resolve().parent.parent
HEADING = "### Recording a session and fine-tuning on it"
GLUS_ROS = Path(sys.prefix) / "bin" / "glus-ros"


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def readme_example() -> list[tuple[list[str], bool]]:
    """(argv after ``glus-ros``, runs in the background) of each command line of the README's example."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, f"README.md lost its section {HEADING!r}"
    commands: list[tuple[list[str], bool]] = []
    for line in text.split(HEADING, 1)[1].splitlines()[1:]:
        if line.startswith("    "):
            words = shlex.split(line, comments=True)
            background = words[-1] == "&"
            words = words[:-1] if background else words
            assert words[0] == "glus-ros", line
            commands.append((words[1:], background))
        elif line.strip() and commands:
            break
    return commands


def test_readme_record_convert_train_runs_as_written(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    if not GLUS_ROS.is_file():
        pytest.skip(f"{GLUS_ROS} is not installed (bash scripts/install.sh installs it)")
    commands = readme_example()
    assert [(argv[0], bg) for argv, bg in commands] == [
        ("track", True), ("record", False), ("convert-bag", False), ("train", False)
    ], commands
    (track, _), (record, _), (convert, _), (train, _) = commands
    (tmp_path / "training").mkdir()
    recipe = next(arg for arg in train if arg.endswith(".yaml"))
    shutil.copy(REPO / recipe, tmp_path / recipe)
    env = ros_test_env.child_env()

    def run(argv: list[str], timeout_s: float) -> str:
        done = subprocess.run([str(GLUS_ROS), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        assert done.returncode == 0, f"glus-ros {shlex.join(argv)}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    import rclpy
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.executors import SingleThreadedExecutor

    tracker = ros_test_env.process([str(GLUS_ROS), *track, "--duration", "90"])
    with rclpy_context() as context, tracker:
        # the example's lines run one after the other; here the recorder starts once the tracker answers
        node = rclpy.create_node("glus_test_readme_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        results: list[TargetResultArray] = []
        node.create_subscription(TargetResultArray, "/glus/segmentation", results.append, 10)
        assert spin_until(executor, lambda: len(results) >= 3, 120.0, tracker), tracker.describe()
        node.destroy_node()
        recorded = run([*record, "--duration", "6"], 120)
        assert tracker.alive(), tracker.describe()
    assert "/glus/segmentation: 0 " not in recorded and "/camera/image_raw: 0 " not in recorded, recorded
    assert "compression zstd" in recorded, recorded

    converted = run(convert, 300)
    meta = json.loads((tmp_path / "data/robot-bags/train/meta_expressions.json").read_text())
    expressions = {e["exp"] for v in meta["videos"].values() for e in v["expressions"].values()}
    assert expressions == {"the red circle"}, (expressions, converted)

    trained = run([*train, "-o", "optim.max_steps=1", "-o", "optim.batch_size=1", "-o", "samples_per_epoch=2",
                   "--no-progress"], 600)
    assert "stopped at step 1" in trained, trained
    assert (tmp_path / "runs/robot_bags/model/config.yaml").is_file(), trained
