"""Knobs of the synthetic referring-video generator, validated once so the generator can trust them."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SynthConfig:
    """Size, content and difficulty of synthetic videos.

    Lengths are in pixels or frames; ``radius`` and ``speed`` are fractions of the frame's shorter side
    so scenes look alike at every frame size (at 128 px: radius ~8-18 px, speed ~2.3-4.1 px/frame).
    """

    frames: int = 16
    min_side: int = 96
    max_side: int = 160
    min_objects: int = 2
    max_objects: int = 5
    radius: tuple[float, float] = (0.065, 0.14)
    speed: tuple[float, float] = (0.018, 0.032)
    # chance that a scene has a group of look-alikes (same colour, shape and size) told apart by motion
    p_lookalike: float = 0.8
    # chance that a look-alike group has three members instead of two
    p_triple: float = 0.2
    # chance that a look-alike group differs in size only (told apart by appearance)
    p_size_variant: float = 0.15
    # chance, per other object, that it enters or leaves the frame
    p_enter_leave: float = 0.2
    # chance that one still object is placed across a look-alike's path (occlusion)
    p_occluder: float = 0.7
    max_expressions: int = 12
    expressions_per_object: int = 3
    # also write, for each look-alike expression, its twin naming the look-alike (describe_scene)
    twins: bool = False
    fov_deg: float = 60.0
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.frames < 8:
            raise ValueError(f"SynthConfig.frames must be >= 8 (motions need room), got {self.frames}")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(
                f"SynthConfig needs 32 <= min_side <= max_side, got min_side={self.min_side}, "
                f"max_side={self.max_side}"
            )
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(
                f"SynthConfig needs 1 <= min_objects <= max_objects <= 8, got {self.min_objects}.."
                f"{self.max_objects}"
            )
        for name in ("radius", "speed"):
            low, high = getattr(self, name)
            if not 0 < low <= high < 0.5:
                raise ValueError(
                    f"SynthConfig.{name} must be a range 0 < low <= high < 0.5, got {(low, high)}"
                )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthConfig.{f.name} must be a probability in [0, 1], got {value}")
        if self.max_expressions < 1 or self.expressions_per_object < 1:
            raise ValueError(
                "SynthConfig.max_expressions and expressions_per_object must be >= 1, got "
                f"{self.max_expressions} and {self.expressions_per_object}"
            )
        if not 10.0 <= self.fov_deg <= 150.0:
            raise ValueError(f"SynthConfig.fov_deg must be in [10, 150], got {self.fov_deg}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"SynthConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
