"""ROS-free live streaming: targets referred to by language, segmented and tracked frame by frame."""

from glus_ros.geometry import depth_from_16uc1, lift_point, mask_bbox, mask_point
from glus_ros.streaming.engine import EngineConfig, StreamingEngine, UnknownTargetError
from glus_ros.streaming.types import (
    MODES,
    STATES,
    CameraIntrinsics,
    FrameResult,
    StreamFrame,
    TargetOutput,
    TargetSpec,
)

__all__ = [
    "MODES",
    "STATES",
    "CameraIntrinsics",
    "EngineConfig",
    "FrameResult",
    "StreamFrame",
    "StreamingEngine",
    "TargetOutput",
    "TargetSpec",
    "UnknownTargetError",
    "depth_from_16uc1",
    "lift_point",
    "mask_bbox",
    "mask_point",
]
