"""Topic names shared by the tracker node, ``glus-ros record`` and ``convert-bag`` (no ROS imports).

Why a module of its own: the tracker node publishes the targets topic and the recorder and the bag
converter read it; importing the name from here keeps the three in step without making the ROS-free
converter (or the node) import the other's dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence

# Latched (reliable, transient-local, depth 1) snapshots of the tracker's whole target set as a
# glus_ros_msgs/ReferringCommandArray: one ADD per current target, empty = no target; header.stamp = when
# the set changed. Published on every change however it came (topics, service, --expression, parameters).
TARGETS_TOPIC = "/glus/targets"
COMMAND_TOPIC = "/glus/command"  # std_msgs/String: the text replaces target_0
COMMANDS_TOPIC = "/glus/commands"  # glus_ros_msgs/ReferringCommandArray: ADD/REPLACE/REMOVE/CLEAR
SEGMENTATION_TOPIC = "/glus/segmentation"  # glus_ros_msgs/TargetResultArray: masks + target_id + expression
IMAGE_TOPIC = "/camera/image_raw"

DEFAULT_COMMAND_TOPICS = (COMMAND_TOPIC, COMMANDS_TOPIC)
# What `glus-ros record` records without --topics: everything `convert-bag` needs for a labelled split.
DEFAULT_RECORD_TOPICS = (IMAGE_TOPIC, TARGETS_TOPIC, COMMAND_TOPIC, COMMANDS_TOPIC, SEGMENTATION_TOPIC)


def topics_to_record(topics: Sequence[str] | None, with_targets: bool = True) -> list[str]:
    """The topics ``glus-ros record`` subscribes to: ``topics`` (default DEFAULT_RECORD_TOPICS) plus the
    targets topic, so that a bag always holds what the tracker was told; ``with_targets=False`` leaves it
    out unless ``topics`` names it."""
    chosen = list(topics) if topics else [t for t in DEFAULT_RECORD_TOPICS if with_targets or t != TARGETS_TOPIC]
    if with_targets and TARGETS_TOPIC not in chosen:
        chosen.append(TARGETS_TOPIC)
    return chosen
