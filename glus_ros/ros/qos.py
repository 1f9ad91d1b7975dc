"""QoS profiles from node parameters, validated with clear errors.

Why these defaults: camera drivers publish sensor data either reliable or best-effort. A best-effort
subscriber matches both (a reliable one would not match a best-effort camera), and keeping only the
newest few frames is right for a tracker that can never catch up on a backlog anyway. Results are
published reliable, which best-effort and reliable subscribers (rviz, recorders) both accept.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}
HISTORY = {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}


def _choice(kind: str, value: str, options: dict) -> object:
    key = str(value).strip().lower()
    if key not in options:
        raise ValueError(f"unknown QoS {kind} {value!r}; choose one of {', '.join(options)}")
    return options[key]


def qos_profile(
    reliability: str = "best_effort", depth: int = 5, durability: str = "volatile", history: str = "keep_last"
) -> QoSProfile:
    """A QoSProfile from parameter strings, e.g. ``qos_profile("reliable", 10)``; bad values raise ValueError."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"QoS history depth must be an integer >= 1, got {depth!r}")
    return QoSProfile(
        depth=depth,
        reliability=_choice("reliability", reliability, RELIABILITY),
        durability=_choice("durability", durability, DURABILITY),
        history=_choice("history", history, HISTORY),
    )


def sensor_qos(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """Subscriber QoS for camera streams (best-effort by default: matches reliable and best-effort cameras)."""
    return qos_profile(reliability, depth)


def results_qos(depth: int = 5) -> QoSProfile:
    """Publisher QoS for the tracker's outputs: reliable, so subscribers of either reliability match."""
    return qos_profile("reliable", depth)


def latched_qos() -> QoSProfile:
    """Reliable + transient-local depth 1: late subscribers still get the last message (e.g. a command)."""
    return qos_profile("reliable", 1, "transient_local")
