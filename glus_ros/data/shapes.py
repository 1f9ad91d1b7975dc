"""Geometry of the synthetic objects: exact pixel masks and how far each shape reaches from its centre.

All shapes of the same ``radius`` cover the same area (pi * r^2), so size words compare areas and a
triangle is not "small" just because it is a triangle. Masks are not anti-aliased: the painted pixels
are exactly the mask, so the ground truth is exact.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# half side of a square and circumradius of an equilateral triangle with the area of a unit circle
_SQUARE_HALF = math.sqrt(math.pi) / 2.0
_TRIANGLE_R = math.sqrt(4.0 * math.pi / (3.0 * math.sqrt(3.0)))


def shape_extent(shape: str, radius: float) -> float:
    """Largest distance from the centre to any pixel of the shape (used to keep shapes in frame)."""
    if shape == "circle":
        return radius
    if shape == "square":
        return radius * _SQUARE_HALF * math.sqrt(2.0)
    if shape == "triangle":
        return radius * _TRIANGLE_R
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of a shape centred at (cx, cy) px, clipped to the frame.

    Pixel (row i, column j) is inside when its centre (x=j, y=i) is inside the shape. Triangles point up
    and are centred on their centroid.
    """
    if radius <= 0:
        raise ValueError(f"shape radius must be > 0, got {radius}")
    mask = np.zeros((height, width), dtype=bool)
    reach = shape_extent(shape, radius)
    x0, x1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        half = radius * _SQUARE_HALF
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:  # triangle: below the two slanted edges and above the base
        big_r = radius * _TRIANGLE_R
        # edges through the apex (0, -R) and the base corners (+-R*sqrt(3)/2, R/2): |dx| * sqrt(3) <= dy + R
        inside = (dy <= big_r / 2.0) & (np.abs(dx) * math.sqrt(3.0) <= dy + big_r)
    mask[y0:y1, x0:x1] = inside
    return mask
