"""Message types for writing and reading bags with the rosbags library (ROS-free).

Why: rosbags (de)serialises CDR from its own type definitions, not from the installed Python messages.
Its built-in store knows the standard ROS 2 Jazzy messages; glus_ros_msgs and any other package's types
are registered here from their ``.msg`` files, found in the installed ``share/<package>/msg`` folders
(ament index) or, for glus_ros_msgs, in this repository's ``msg/msg``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from rosbags.interfaces import Nodetype, Typestore
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

MSG_PACKAGE = "glus_ros_msgs"
_REPO_MSG_DIR = Path(__file__).resolve().parent.parent.parent / "msg" / "msg"
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/msg/[A-Za-z][A-Za-z0-9_]*$")


def _share_dirs(package: str) -> list[Path]:
    """share/<package> folders of every prefix: AMENT_PREFIX_PATH first, then this Python's prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [Path(p) / "share" / package for p in dict.fromkeys(prefixes)]


def find_msg_file(msgtype: str) -> Path | None:
    """The ``.msg`` definition of ``pkg/msg/Name``, installed or (glus_ros_msgs) in the source tree."""
    package, _, name = msgtype.split("/")
    candidates = [d / "msg" / f"{name}.msg" for d in _share_dirs(package)]
    if package == MSG_PACKAGE:
        candidates.append(_REPO_MSG_DIR / f"{name}.msg")
    return next((c for c in candidates if c.is_file()), None)


def _dependencies(fields: Iterable[tuple[str, tuple[Nodetype, object]]]) -> set[str]:
    """Message type names a rosbags field list refers to (nested, in fixed arrays or in sequences)."""
    found: set[str] = set()
    for _name, desc in fields:
        kind, value = desc
        while kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):  # value = (element description, size)
            kind, value = value[0]
        if kind == Nodetype.NAME:
            found.add(str(value))
    return found


def ensure_type(typestore: Typestore, msgtype: str) -> None:
    """Register ``msgtype`` (and the types it uses) in ``typestore`` if it lacks them; unknown -> ValueError."""
    if not _TYPE_NAME.match(msgtype):
        raise ValueError(f"message type {msgtype!r} is not of the form package/msg/Name")
    pending = [msgtype]
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs:
            continue
        path = find_msg_file(name)
        if path is None:
            dirs = ", ".join(str(d / "msg") for d in _share_dirs(name.split("/")[0]))
            raise ValueError(f"no definition of message type {name} (looked for {name.split('/')[-1]}.msg in {dirs})")
        types = get_types_from_msg(path.read_text(encoding="utf-8"), name)
        typestore.register(types)
        for _, (_consts, fields) in types.items():
            pending.extend(t for t in _dependencies(fields) if t not in typestore.fielddefs)


def glus_typestore() -> Typestore:
    """The Jazzy standard messages plus every glus_ros_msgs message."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    names: set[str] = set()
    for share in _share_dirs(MSG_PACKAGE):
        names.update(p.stem for p in (share / "msg").glob("*.msg"))
    names.update(p.stem for p in _REPO_MSG_DIR.glob("*.msg"))
    for name in sorted(names):
        ensure_type(typestore, f"{MSG_PACKAGE}/msg/{name}")
    return typestore
