"""Installed layout: training/ is importable as glus_ros.training, never as a top-level `training`."""

import subprocess
import sys


def test_training_is_a_subpackage_only(tmp_path):
    code = (
        "import importlib.util, glus_ros.training.losses, glus_ros.training.data;"
        "print(importlib.util.find_spec('training') is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_console_command_lists_the_subcommands(tmp_path):
    out = subprocess.run([sys.executable, "-m", "glus_ros.cli", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    for verb in ("segment", "eval", "synth"):
        assert verb in out.stdout
