"""The environment every glus_ros process that starts rclpy needs (ROS-free: no rclpy import here).

Why it exists: the ROS 2 wheels from PyPI set no environment, and default Fast DDS discovery multicasts
on every network interface. Tests, demos and benchmarks run all their ROS processes on one machine, so
they use the shipped shared-memory-only Fast DDS profile (``config/fastdds_shm.xml``) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``. On a real robot the user's own DDS settings win: see
:func:`apply_ros_environment`.

Environment variables are read when rclpy initialises (``rclpy.init`` / the first node), and Fast DDS
loads its XML profile once per process, so apply this before the first ``rclpy.init`` of a process.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

PROFILE_NAME = "fastdds_shm.xml"
PACKAGE = "glus_ros"
RMW = "rmw_fastrtps_cpp"

# Variables that mean "the user configured DDS themselves"; apply_ros_environment then leaves DDS alone.
_USER_DDS_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def _candidate_profiles(env: Mapping[str, str]) -> list[Path]:
    """Places the profile can be, most specific first: source tree, this prefix, ament prefixes."""
    source_tree = Path(__file__).resolve().parent.parent / "config" / PROFILE_NAME
    prefixes = [sys.prefix] + [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    installed = [Path(p) / "share" / PACKAGE / "config" / PROFILE_NAME for p in prefixes]
    return [source_tree, *installed]


def shm_profile_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the shipped shared-memory-only Fast DDS profile; raise if glus_ros is installed without it."""
    candidates = _candidate_profiles(os.environ if env is None else env)
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n  ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"glus_ros DDS profile {PROFILE_NAME} not found; tried:\n  {tried}")


def _default_log_dir() -> str:
    """A per-user folder under the temp dir, so tests and demos never fill ~/.ros/log."""
    user = os.environ.get("USER") or (str(os.getuid()) if hasattr(os, "getuid") else "user")
    return str(Path(tempfile.gettempdir()) / f"glus_ros-{user}" / "ros_log")


def _with_prefix(path_list: str, prefix: str) -> str:
    """Prepend ``prefix`` to an os.pathsep list unless it is already there."""
    entries = [p for p in path_list.split(os.pathsep) if p]
    if prefix in entries:
        return os.pathsep.join(entries)
    return os.pathsep.join([prefix, *entries])


def ros_environment(base: Mapping[str, str] | None = None, log_dir: str | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default: os.environ) set up for a local, shared-memory-only rclpy process.

    Sets FASTRTPS_DEFAULT_PROFILES_FILE and FASTDDS_DEFAULT_PROFILES_FILE (Jazzy reads the first, Kilted
    the second) to the shipped profile, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST,
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp (the profile is Fast DDS XML), ROS_LOG_DIR (``log_dir``, else
    the one in ``base``, else a per-user temp folder) and AMENT_PREFIX_PATH with sys.prefix in it (the
    wheels install message packages there, and ament_index finds nothing without it).
    ROS_DOMAIN_ID is left as it is: callers isolate parallel runs with it.
    """
    env = dict(os.environ if base is None else base)
    profile = str(shm_profile_path(env))
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = RMW
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(log_dir)
    elif not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = _default_log_dir()
    env["AMENT_PREFIX_PATH"] = _with_prefix(env.get("AMENT_PREFIX_PATH", ""), sys.prefix)
    return env


def user_has_dds_settings(env: Mapping[str, str] | None = None) -> bool:
    """True when a Fast DDS profile is already chosen (e.g. on a robot): glus_ros must not override it."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in _USER_DDS_VARS)


def apply_ros_environment(force: bool = False, log_dir: str | None = None) -> bool:
    """Set :func:`ros_environment`'s variables in this process's os.environ; return whether DDS was set.

    Without ``force`` the DDS, RMW and log settings are left alone when the user has chosen a Fast DDS
    profile (their network setup applies); only AMENT_PREFIX_PATH gets sys.prefix, which the PyPI
    wheels need in any case. Tests and demos pass ``force=True``. ``log_dir`` as in ros_environment.
    Call before the first rclpy.init of the process.
    """
    if not force and user_has_dds_settings():
        os.environ["AMENT_PREFIX_PATH"] = _with_prefix(os.environ.get("AMENT_PREFIX_PATH", ""), sys.prefix)
        return False
    env = ros_environment(log_dir=log_dir)
    for key in (
        "FASTRTPS_DEFAULT_PROFILES_FILE",
        "FASTDDS_DEFAULT_PROFILES_FILE",
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
        "RMW_IMPLEMENTATION",
        "ROS_LOG_DIR",
        "AMENT_PREFIX_PATH",
    ):
        os.environ[key] = env[key]
    return True
