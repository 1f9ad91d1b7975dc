"""Synthetic MeViS-like referring-video data: scenes, rendering, expressions, and the split writer."""

from glus_ros.data.config import SynthConfig
from glus_ros.data.expressions import SynthExpression
from glus_ros.data.render import Intrinsics
from glus_ros.data.synth import (
    ObjectFacts,
    SyntheticVideo,
    generate_video,
    split_seed,
    write_split,
    write_video_frames,
)

__all__ = [
    "Intrinsics",
    "ObjectFacts",
    "SynthConfig",
    "SynthExpression",
    "SyntheticVideo",
    "generate_video",
    "split_seed",
    "write_split",
    "write_video_frames",
]
