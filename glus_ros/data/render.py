"""Pixels of a synthetic scene: a textured background, objects painted far to near, depth and intrinsics.

Textures are muted (low saturation) so object colours keep their names; each frame gets fresh sensor
noise so two still frames are not byte-identical. Depth is what a pinhole RGB-D camera would report: a
background plane a few metres away and each object as a flat plate at its own depth, in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from glus_ros.data.scene import Scene
from glus_ros.data.shapes import shape_mask

BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "checker", "gradient")
_SENSOR_NOISE = 3.0
_SHADING = 0.12  # brightness change across an object, top to bottom


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels, as a ROS ``CameraInfo`` K matrix holds them."""

    fx: float
    fy: float
    cx: float
    cy: float

    def as_dict(self) -> dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}


def intrinsics_for(width: int, height: int, fov_deg: float) -> Intrinsics:
    """Square-pixel pinhole camera with horizontal field of view ``fov_deg``, centred principal point."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return Intrinsics(fx=round(focal, 4), fy=round(focal, 4), cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.uniform(55, 200) + rng.uniform(-28, 28, size=3), 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(H, W) values in [0, 1] varying smoothly over about ``cells`` blobs per side."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def background_texture(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 texture in [0, 255]: a pattern blending two muted colours, plus fine grain."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "noise":
        weight = _smooth_noise(rng, height, width, int(rng.integers(3, 9)))
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(8, 30)
        phase = (x * math.cos(angle) + y * math.sin(angle)) * (2 * math.pi / period)
        weight = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))
    elif kind == "checker":
        block = int(rng.integers(6, 21))
        weight = (((x // block) + (y // block)) % 2).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = x * math.cos(angle) + y * math.sin(angle)
        weight = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUNDS}")
    first, second = _muted_colour(rng), _muted_colour(rng)
    texture = first * (1.0 - weight[..., None]) + second * weight[..., None]
    grain = _smooth_noise(rng, height, width, max(4, min(height, width) // 6)) - 0.5
    return texture + 30.0 * grain[..., None]


def background_depth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) float32 metres: a slightly tilted plane 3.5-5 m away."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(3.5, 5.0)
    tilt_y, tilt_x = rng.uniform(-0.25, 0.25), rng.uniform(-0.1, 0.1)
    plane = base * (1.0 + tilt_y * (y / height - 0.5) + tilt_x * (x / width - 0.5))
    return plane.astype(np.float32)


@dataclass(frozen=True, eq=False)
class RenderedVideo:
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    depth: list[np.ndarray]  # (H, W) float32 metres
    visible: dict[int, np.ndarray]  # obj_id -> (T, H, W) bool, the pixels the object shows (after occlusion)
    visibility: dict[int, np.ndarray]  # obj_id -> (T,) float, visible pixels / the shape's full area
    intrinsics: Intrinsics
    background: str


def render_scene(scene: Scene, rng: np.random.Generator, fov_deg: float = 60.0) -> RenderedVideo:
    """Paint every frame of ``scene``; objects nearer the camera hide those behind them."""
    h, w, t_count = scene.height, scene.width, scene.frames
    kind = str(rng.choice(BACKGROUNDS))
    texture = background_texture(rng, kind, h, w)
    plane = background_depth(rng, h, w)
    far_to_near = sorted(scene.objects, key=lambda o: -o.depth)
    rows = np.arange(h, dtype=np.float32)[:, None]
    visible = {o.obj_id: np.zeros((t_count, h, w), dtype=bool) for o in scene.objects}
    visibility = {o.obj_id: np.zeros(t_count, dtype=np.float64) for o in scene.objects}
    frames: list[np.ndarray] = []
    depths: list[np.ndarray] = []
    for t in range(t_count):
        image = texture + rng.normal(0.0, _SENSOR_NOISE, size=texture.shape).astype(np.float32)
        depth = plane.copy()
        owner = np.full((h, w), -1, dtype=np.int32)
        for obj in far_to_near:
            cx, cy = obj.centres[t]
            mask = shape_mask(obj.shape, float(cx), float(cy), obj.radius, h, w)
            if not mask.any():
                continue
            shade = 1.0 + _SHADING * (0.5 - (rows - cy + obj.reach) / (2 * obj.reach))
            colour = np.array(obj.rgb, dtype=np.float32)[None, None, :] * shade[..., None]
            image = np.where(mask[..., None], colour, image)
            depth[mask] = obj.depth
            owner[mask] = obj.obj_id
        for obj in scene.objects:
            visible[obj.obj_id][t] = owner == obj.obj_id
            visibility[obj.obj_id][t] = min(1.0, visible[obj.obj_id][t].sum() / (math.pi * obj.radius**2))
        frames.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
        depths.append(depth)
    return RenderedVideo(
        frames=frames, depth=depths, visible=visible, visibility=visibility,
        intrinsics=intrinsics_for(w, h, fov_deg),
        background=kind,
    )
