"""The tracker node's parameters: defaults, validation, and when a change takes effect (ROS-free).

Every parameter belongs to one of three groups, and a change is refused with a message saying what to do
when it could not take effect now (so a parameter's value always describes what the node is running):

* ``live``: applies to the next frame, in any state (schedule, thresholds, output switches);
* ``activate``: read at activation (topics, QoS, sync): accepted unless the node is active
  ("deactivate first");
* ``configure``: read at configuration (model, device, precision, history): accepted only while
  unconfigured ("cleanup first").

Per-topic QoS is ROS 2's own ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` (read-only,
declared with each camera subscription and output publisher; set them in the params file or with -p).
"""

from __future__ import annotations

from typing import Any

from glus_ros.model.config import DEFAULT_MODEL

RELIABILITY_CHOICES = ("best_effort", "reliable")
LIVE, AT_ACTIVATE, AT_CONFIGURE = "live", "activate", "configure"

# name -> (default, when it applies, description). Types follow the defaults (floats need a decimal point in YAML).
PARAMETERS_SPEC: dict[str, tuple[Any, str, str]] = {
    "model": (DEFAULT_MODEL, AT_CONFIGURE, "model config name, YAML file, trained model directory or Molmo2 folder"),
    "checkpoint": ("", AT_CONFIGURE, "official GLUS/LISA checkpoint to load ('' = none)"),
    "vision_tower": ("", AT_CONFIGURE, "released GLUS weights: local CLIP ViT-L/14 folder ('' = none)"),
    "adapter": ("", AT_CONFIGURE, "released GLUS weights: fine-tuning export (LoRA + heads) applied ('' = none)"),
    "model_override": ("", AT_CONFIGURE, "YAML file merged into the model config, e.g. sizes ('' = none)"),
    "sam2_checkpoint": ("", AT_CONFIGURE, "official SAM 2 .pt checkpoint for the SAM 2 head ('' = none)"),
    "device": ("cpu", AT_CONFIGURE, "cpu, cuda, cuda:N or auto"),
    "dtype": ("fp32", AT_CONFIGURE, "fp32 or bf16 (autocast)"),
    "schedule": ("fast", LIVE, "live: the SAM 2 tracker on every frame, the MLLM re-grounds in its own worker; "
                               "full: MLLM re-grounds every frame, inline (paper); fast: inline every reground_every"),
    "reground_every": (8, LIVE, "fast: frames between MLLM re-groundings; live: the most frames a prompt ages"),
    "reground_below": (0.5, LIVE, "fast, live: re-ground a target whose score fell below this"),
    "context_refresh": (1, LIVE, "frames a choice of context frames is kept (> 1: re-groundings reuse a prefix)"),
    "cpu_threads": (0, AT_CONFIGURE, "torch intra-op threads for the process (0: torch's default)"),
    "history": (64, AT_CONFIGURE, "frames kept for context sampling"),
    "max_targets": (8, LIVE, "most targets tracked at once (lowering it removes no target)"),
    "image_topic": ("/camera/image_raw", AT_ACTIVATE, "colour image topic (sensor_msgs/Image)"),
    "compressed": (False, AT_ACTIVATE, "subscribe sensor_msgs/CompressedImage on <image_topic>/compressed instead"),
    "use_depth": (False, AT_ACTIVATE, "also subscribe depth + CameraInfo and publish 3D target points and markers"),
    "depth_topic": ("/camera/depth/image_raw", AT_ACTIVATE,
                    "depth image registered to the colour image (16UC1 mm or 32FC1 m; 0, NaN, inf = no depth)"),
    "camera_info_topic": ("/camera/camera_info", AT_ACTIVATE,
                          "CameraInfo of the colour camera (intrinsics for 3D points)"),
    "sync_slop_s": (0.05, AT_ACTIVATE, "largest colour/depth stamp difference still matched [s]"),
    "sync_queue_size": (10, AT_ACTIVATE, "colour/depth messages buffered per input while matching"),
    "depth_timeout_s": (1.0, LIVE, "with use_depth: track without depth when none arrived for this long [s]"),
    "qos_reliability": ("best_effort", AT_ACTIVATE,
                        "camera subscriptions' reliability (sensor-data default); per topic: qos_overrides"),
    "qos_depth": (5, AT_ACTIVATE, "camera subscriptions' history depth; per topic: qos_overrides"),
    "publish_debug_image": (True, LIVE, "publish the rgb8 overlay on /glus/debug_image (drawn only with subscribers)"),
    "publish_markers": (True, LIVE, "publish RViz markers of 3D targets on /glus/markers (only with subscribers)"),
    "target_frame": ("", LIVE, "frame for /glus/target_point ('' = the camera frame); needs tf2_ros"),
    "release_on_deactivate": (True, LIVE, "deactivate forgets the stream's history and target memories and moves "
                                          "the model off the GPU (back on activate)"),
}

PARAMETERS: dict[str, tuple[Any, str]] = {name: (default, f"{text} [applies: {applies}]")
                                          for name, (default, applies, text) in PARAMETERS_SPEC.items()}
_CHOICES = {"schedule": ("fast", "full", "live"), "dtype": ("fp32", "bf16"), "qos_reliability": RELIABILITY_CHOICES}
_POSITIVE_INTS = ("reground_every", "history", "max_targets", "qos_depth", "sync_queue_size", "context_refresh")


def applies_at(name: str) -> str:
    """``live``, ``activate`` or ``configure``: when a change of parameter ``name`` takes effect."""
    return PARAMETERS_SPEC[name][1]


def check_parameter(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}"
    if name in _POSITIVE_INTS and value < 1:
        return f"{name} must be >= 1, got {value}"
    if name == "cpu_threads" and value < 0:
        return f"cpu_threads must be >= 0 (0: torch's default), got {value}"
    if name == "reground_below" and not 0.0 <= value <= 1.0:
        return f"reground_below must be in [0, 1], got {value}"
    if name in ("sync_slop_s", "depth_timeout_s") and not value >= 0.0:
        return f"{name} must be >= 0, got {value}"
    if name in ("model", "image_topic") and not str(value).strip():
        return f"{name} must not be empty"
    if name == "target_frame" and value != value.strip():
        return f"target_frame must not start or end with spaces, got {value!r}"
    return None


def change_refusal(name: str, state: str) -> str | None:
    """Why parameter ``name`` cannot change in lifecycle state ``state`` (a label), or None when it can."""
    applies = applies_at(name)
    if applies == AT_CONFIGURE and state not in ("unconfigured", "finalized"):
        return (f"{name} is read at configure and the tracker is {state}: deactivate (if active) and clean up "
                "first, set it, then configure again")
    if applies == AT_ACTIVATE and state == "active":
        return f"{name} is read at activate and the tracker is active: deactivate first, set it, then activate"
    return None
