#!/usr/bin/env python3
"""Point the ROS message wheels' CMake exports at this machine's Python and numpy headers.

The PyPI ``ros-jazzy-*`` message wheels ship ``export_<pkg>__rosidl_generator_pyExport.cmake`` files
whose ``INTERFACE_INCLUDE_DIRECTORIES`` name the wheel build machine's headers
(``/opt/python/cp311-cp311/include/python3.11`` and its numpy's ``.../numpy/_core/include``).
Any package that generates Python bindings against them (our ``msg/``) then fails to configure.
This rewrites those entries to the running interpreter's include dir and numpy's include dir.

Usage: ``python scripts/fix_rosidl_exports.py VENV`` (run with the venv's Python, so that the
include dirs found are the venv's). Idempotent; re-run after reinstalling a message wheel.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

EXPORT_GLOB = "share/*/cmake/export_*__rosidl_generator_pyExport.cmake"

# The property line of the imported target; its value is a ';'-separated CMake list.
_PROPERTY = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')
# A CPython header dir (".../include/python3.11") and a numpy header dir (numpy 1 and 2 layouts).
_PYTHON_INCLUDE = re.compile(r".*/include/python3\.\d+$")
_NUMPY_INCLUDE = re.compile(r".*/numpy/(_core|core)/include$")


def local_include_dirs() -> tuple[str, str]:
    """Return (Python include dir, numpy include dir) of the interpreter running this script."""
    try:
        import numpy
    except ImportError as exc:  # the message wheels depend on numpy; without it nothing can build
        raise SystemExit(f"numpy is not importable by {sys.executable}: {exc}") from exc
    return sysconfig.get_paths()["include"], numpy.get_include()


def rewrite_include_list(value: str, python_include: str, numpy_include: str) -> str:
    """Replace Python/numpy header dirs in a CMake list, keep other entries, drop duplicates."""
    out: list[str] = []
    for entry in value.split(";"):
        if _PYTHON_INCLUDE.match(entry):
            entry = python_include
        elif _NUMPY_INCLUDE.match(entry):
            entry = numpy_include
        if entry and entry not in out:
            out.append(entry)
    return ";".join(out)


def fix_file(path: Path, python_include: str, numpy_include: str) -> bool:
    """Rewrite one export file in place; return True if its content changed."""
    text = path.read_text()
    new_text = _PROPERTY.sub(
        lambda m: m.group(1) + rewrite_include_list(m.group(2), python_include, numpy_include) + m.group(3),
        text,
    )
    if new_text == text:
        return False
    path.write_text(new_text)
    return True


def fix_prefix(prefix: Path, python_include: str, numpy_include: str) -> tuple[int, int]:
    """Fix every export file under an install prefix; return (files changed, files seen)."""
    files = sorted(prefix.glob(EXPORT_GLOB))
    changed = sum(fix_file(f, python_include, numpy_include) for f in files)
    return changed, len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="install prefix holding share/<pkg>/cmake (the venv)")
    args = parser.parse_args(argv)
    if not (args.venv / "share").is_dir():
        print(f"error: {args.venv}/share does not exist; is {args.venv} the venv with the ROS wheels?")
        return 2
    python_include, numpy_include = local_include_dirs()
    changed, seen = fix_prefix(args.venv, python_include, numpy_include)
    print(
        f"fix_rosidl_exports: changed {changed} of {seen} export files "
        f"(python include {python_include}, numpy include {numpy_include})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
