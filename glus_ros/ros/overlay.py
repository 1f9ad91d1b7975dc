"""Debug overlay of a streaming result: every target's mask, box, point and label on the input image.

ROS-free (numpy + OpenCV), so ``/glus/debug_image`` and ``glus-ros demo``'s overlay video draw the same picture.
Mask tinting reuses :func:`glus_ros.video_io.overlay`.
"""

from __future__ import annotations

import cv2
import numpy as np

from glus_ros.streaming.types import FrameResult
from glus_ros.video_io import overlay

# distinct, saturated RGB colours, one per target in order
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 32),
    (32, 200, 255),
    (80, 255, 80),
    (255, 220, 40),
    (220, 80, 255),
    (255, 140, 200),
    (40, 120, 255),
    (160, 255, 200),
)


def draw_result(result: FrameResult) -> np.ndarray:
    """An RGB uint8 copy of ``result.image`` with each target drawn; lost targets are listed as such."""
    image = np.ascontiguousarray(result.image).copy()
    for i, target in enumerate(result.targets):
        colour = PALETTE[i % len(PALETTE)]
        if target.mask.any():
            image = overlay(image, target.mask, colour)
        if target.bbox is not None:
            x0, y0, x1, y1 = target.bbox
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, 1)
        if target.point_2d is not None:
            cv2.drawMarker(
                image, (round(target.point_2d[0]), round(target.point_2d[1])), colour, cv2.MARKER_CROSS, 9, 2
            )
        label = f"{target.target_id}: {target.state} {target.score:.2f}"
        if target.point_3d is not None:
            label += f" z={target.point_3d[2]:.2f}m"
        _label(image, label, i, colour)
    return image


def _label(image: np.ndarray, text: str, row: int, colour: tuple[int, int, int]) -> None:
    """Text on a dark box (readable on any background), sized to the image."""
    scale = max(0.35, image.shape[1] / 1600)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = 2 + row * (height + baseline + 4)
    cv2.rectangle(image, (2, top), (6 + width, top + height + baseline + 2), (0, 0, 0), -1)
    cv2.putText(image, text, (4, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
