"""Installed layout: training/ is importable as glus_ros.training, never as a top-level `training`.

(The sam2 wheel itself installs a top-level package named `training` — SAM 2's trainer — which is
exactly the collision the mapping avoids.)
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_training_is_a_subpackage_only(tmp_path):
    code = (
        "import importlib.util, glus_ros.training.losses as l;"
        "s = importlib.util.find_spec('training');"
        "print(l.__file__);"
        "print(s.origin if s else 'none')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    ours, top_level = out.stdout.strip().splitlines()
    assert Path(ours).resolve() == REPO / "training" / "losses.py"
    assert top_level != "none", "the sam2 wheel installs a top-level training package"
    assert (Path(top_level).parents[1] / "sam2").is_dir(), top_level  # the sam2 wheel's, never ours


def test_console_command_lists_the_subcommands(tmp_path):
    out = subprocess.run([sys.executable, "-m", "glus_ros.cli", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    for verb in ("segment", "eval", "synth"):
        assert verb in out.stdout
