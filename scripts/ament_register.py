"""Register the editable glus_ros install in an ament prefix (the venv), as ``colcon build --symlink-install`` does.

Why: ``pip install -e .`` installs the Python package and its console scripts in ``<prefix>/bin`` but none of
setup.py's ``data_files`` and nothing under ``lib/glus_ros``, so ament_index does not know the package:
``get_package_share_directory("glus_ros")`` fails and ``ros2 launch glus_ros track.launch.py`` finds no
executables. This script reads setup.py itself (``data_files`` and ``console_scripts``, the one list colcon
installs from too) and creates in ``--prefix``:

* every data file as a symlink into the source tree (``share/ament_index/resource_index/packages/glus_ros``,
  ``share/glus_ros/{package.xml,launch,config,models}``): edits in the tree apply without re-installing;
* ``lib/glus_ros/<name>`` for every console script: a small Python launcher run by this interpreter.

Re-running replaces what an earlier run created (``share/glus_ros`` and ``lib/glus_ros`` belong to glus_ros).

    python scripts/ament_register.py --prefix "$VIRTUAL_ENV"
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "glus_ros"

LAUNCHER = '''#!{python}
# {package} executable registered by scripts/ament_register.py (console script {name} = {target})
import sys

from {module} import {function}

if __name__ == "__main__":
    sys.exit({function}())
'''


def read_setup(repo: Path) -> tuple[list[tuple[str, list[str]]], dict[str, str]]:
    """(data_files, console scripts name -> 'module:function') exactly as setup.py declares them."""
    from distutils.core import run_setup  # setuptools' distutils: evaluates setup.py without running a command

    cwd = Path.cwd()
    os.chdir(repo)  # setup.py globs relative to its own folder
    try:
        dist = run_setup(str(repo / "setup.py"), stop_after="init")
    finally:
        os.chdir(cwd)
    scripts = {}
    for line in (dist.entry_points or {}).get("console_scripts", []):
        name, target = (part.strip() for part in line.split("=", 1))
        scripts[name] = target
    return [(dest, list(files)) for dest, files in dist.data_files], scripts


def register(prefix: Path, repo: Path = REPO, python: str = sys.executable) -> list[Path]:
    """Create the ament layout of the package under ``prefix``; returns the paths created."""
    data_files, scripts = read_setup(repo)
    prefix = prefix.resolve()
    for owned in (prefix / "share" / PACKAGE, prefix / "lib" / PACKAGE):
        if owned.is_symlink() or owned.is_file():
            owned.unlink()
        elif owned.is_dir():
            shutil.rmtree(owned)
    created: list[Path] = []
    for dest, files in data_files:
        folder = prefix / dest
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            source = (repo / name).resolve()
            if not source.is_file():
                raise FileNotFoundError(f"setup.py data file {name} does not exist in {repo}")
            link = folder / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
            created.append(link)
    bin_dir = prefix / "lib" / PACKAGE
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, target in sorted(scripts.items()):
        module, function = target.split(":")
        path = bin_dir / name
        path.write_text(LAUNCHER.format(python=python, package=PACKAGE, name=name, target=target,
                                        module=module, function=function))
        path.chmod(0o755)
        created.append(path)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="ament prefix to register in (default: this interpreter's prefix, the venv)")
    args = parser.parse_args(argv)
    created = register(args.prefix)
    executables = sorted(p.name for p in created if p.parent.name == PACKAGE and p.parent.parent.name == "lib")
    print(f"registered {PACKAGE} in {args.prefix}: {len(created) - len(executables)} data files, "
          f"executables {', '.join(executables)} in lib/{PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
