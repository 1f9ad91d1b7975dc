"""Point coordinate conventions shared by the pointing code, so every module agrees to the half pixel.

Pixel coordinates are pixel indices: ``(x, y) = (column, row)``, the centre of pixel ``(i, j)`` at
``(i, j)``. Normalised coordinates cover the frame as a continuous square: ``u = (x + 0.5) / W``,
so 0 and 1 are the outer edges of the border pixels (Molmo's percentages are ``100 * u``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Point = tuple[float, float]


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")


def to_pixels(points: Iterable[Point], height: int, width: int) -> list[Point]:
    """Normalised (u, v) in [0, 1] -> pixel (x, y)."""
    _check_size(height, width)
    return [(u * width - 0.5, v * height - 0.5) for u, v in points]


def to_normalised(points: Iterable[Point], height: int, width: int) -> list[Point]:
    """Pixel (x, y) -> normalised (u, v)."""
    _check_size(height, width)
    return [((x + 0.5) / width, (y + 0.5) / height) for x, y in points]


def inside_frame(point: Point, height: int, width: int) -> bool:
    """Whether a pixel point lies on the frame: x in [-0.5, W - 0.5], y in [-0.5, H - 0.5] (normalised [0, 1])."""
    x, y = point
    return math.isfinite(x) and math.isfinite(y) and -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5


def pixel_index(point: Point, height: int, width: int) -> tuple[int, int] | None:
    """The (row, col) of the pixel a pixel point is in (the far edge is in the last pixel); None off the frame."""
    if not inside_frame(point, height, width):
        return None
    x, y = point
    return min(math.floor(y + 0.5), height - 1), min(math.floor(x + 0.5), width - 1)


def frame_to_sam(points: Iterable[Point], height: int, width: int, sam_size: int) -> list[Point]:
    """Pixel points of an HxW frame -> pixel points of the square SAM 2 input (SAM resizes without padding)."""
    _check_size(height, width)
    return [((x + 0.5) * sam_size / width - 0.5, (y + 0.5) * sam_size / height - 0.5) for x, y in points]
