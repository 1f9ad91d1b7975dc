"""Region prompts (GLaMM's region token): a user box or point on a frame becomes one LLM input embedding.

A ``<region>`` token in the question is replaced by the RoI average of the frame's un-pooled vision-tower
patch features inside the box, passed through the same vision-to-language projector as the frames.

The tower attends globally, so patch features inside a box would still depend on every pixel of the frame;
the region is therefore encoded from its own pass over the frame with everything outside the box set to
the CLIP mean colour (zero after normalisation). The region embedding then describes the box's content
alone ("what is this?" is not swayed by the surroundings, which the LLM sees anyway through the frame
tokens) and changing pixels outside the box cannot change it.

Coordinates are continuous pixels of the frame (origin top-left, x right, y down; a box covers
``[x0, x1] x [y0, y1]``, the whole image is ``[0, W] x [0, H]``), as ``glus_ros_msgs/RegionPrompt``.
A point region stands for the vision-tower patch under the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from glus_ros.model.transforms import CLIP_MEAN, check_frame, clip_input

REGION_TOKEN = "<region>"  # reserved by the tokenizer (glus_ros.model.tokenizer.EXTRA_SPECIAL_TOKENS)
# the instructions training teaches and inference asks with (kept together so they cannot drift apart)
TRACK_REGION_QUESTION = f"track {REGION_TOKEN}"
WHAT_REGION_QUESTION = f"what is {REGION_TOKEN}?"


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else repr(value)


@dataclass(frozen=True)
class Region:
    """A box (``x0, y0`` top-left to ``x1, y1`` bottom-right) or a point (``x0, y0``) on frame ``frame``.

    ``frame`` indexes the images the region is given with: the sample's context + query frames for the
    model API, the video's frames for offline use.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    frame: int = 0
    kind: Literal["box", "point"] = "box"

    @classmethod
    def point(cls, x: float, y: float, frame: int = 0) -> Region:
        return cls(float(x), float(y), float(x), float(y), frame, "point")

    @classmethod
    def from_inclusive_box(cls, x_min: int, y_min: int, x_max: int, y_max: int, frame: int = 0) -> Region:
        """From integer pixel corners that are both inclusive (``BoundingBox2D``, synthetic regions)."""
        return cls(float(x_min), float(y_min), float(x_max) + 1.0, float(y_max) + 1.0, frame, "box")

    def describe(self) -> str:
        if self.kind == "point":
            return f"point ({_num(self.x0)}, {_num(self.y0)})"
        return f"box ({_num(self.x0)}, {_num(self.y0)}, {_num(self.x1)}, {_num(self.y1)})"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "frame": int(self.frame),
                "xyxy": [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]}

    def validate(self, width: int, height: int) -> Region:
        """Raise ValueError naming the values and the image size when the region is unusable."""
        where = f"region {self.describe()} on frame {self.frame} of a {width}x{height} image"
        if self.kind not in ("box", "point"):
            raise ValueError(f"region kind must be 'box' or 'point', got {self.kind!r}")
        try:
            finite = all(math.isfinite(float(v)) for v in (self.x0, self.y0, self.x1, self.y1))
        except (TypeError, ValueError):
            finite = False
        if not finite or isinstance(self.frame, bool) or not isinstance(self.frame, (int, np.integer)):
            raise ValueError(f"{where}: coordinates must be finite numbers and the frame an integer")
        if self.kind == "point":
            if not (0 <= self.x0 < width and 0 <= self.y0 < height):
                raise ValueError(f"{where}: the point lies outside the image (x in [0, {width}), y in [0, {height}))")
            return self
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError(f"{where}: x1 < x0 or y1 < y0 (give the top-left corner first)")
        if self.x1 == self.x0 or self.y1 == self.y0:
            raise ValueError(f"{where}: the box has zero area")
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise ValueError(f"{where}: the box reaches outside the image [0, {width}] x [0, {height}]")
        return self

    def grid_box(self, width: int, height: int, grid: int) -> tuple[float, float, float, float]:
        """The pooled area in normalised [0, 1] coordinates; a point becomes its patch cell on ``grid``."""
        if self.kind == "point":
            col = min(int(self.x0 / width * grid), grid - 1)
            row = min(int(self.y0 / height * grid), grid - 1)
            return col / grid, row / grid, (col + 1) / grid, (row + 1) / grid
        return self.x0 / width, self.y0 / height, self.x1 / width, self.y1 / height


def parse_region(text: str, frame: int = 0) -> Region:
    """``"x0,y0,x1,y1"`` (a box) or ``"x,y"`` (a point) in pixels, as typed on a command line."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 4:
        return Region(*values, frame=frame)
    if len(values) == 2:
        return Region.point(*values, frame=frame)
    raise ValueError(f"region {text!r}: expected x0,y0,x1,y1 (a box) or x,y (a point) in pixels")


def roi_average(features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean of patch features inside normalised boxes.

    features (R, G, G, D) on a G x G patch grid (row = y), boxes (R, 4) as (x0, y0, x1, y1) in [0, 1].
    Each patch weighs the fraction of its cell the box covers: the exact integral of the piecewise
    constant feature map over the box (what RoIAlign approximates by sampling), so a box inside one
    patch returns that patch.
    """
    if features.dim() != 4 or features.shape[1] != features.shape[2]:
        raise ValueError(f"features must be (R, G, G, D), got {tuple(features.shape)}")
    if boxes.dim() != 2 or boxes.shape != (features.shape[0], 4):
        raise ValueError(f"boxes must be ({features.shape[0]}, 4), got {tuple(boxes.shape)}")
    grid = features.shape[1]
    cells = torch.arange(grid, device=features.device, dtype=torch.float32)
    scaled = boxes.to(features.device, torch.float32).clamp(0.0, 1.0) * grid

    def overlap(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:  # (R,) -> (R, G) covered length per cell
        return (torch.minimum(cells + 1, hi[:, None]) - torch.maximum(cells, lo[:, None])).clamp(min=0.0)

    wx = overlap(scaled[:, 0], scaled[:, 2])
    wy = overlap(scaled[:, 1], scaled[:, 3])
    weights = wy[:, :, None] * wx[:, None, :]                  # (R, G rows, G cols)
    total = weights.flatten(1).sum(dim=1)
    if bool((total <= 0).any()):
        raise ValueError("a region covers no patch (zero-area box)")
    weights = (weights / total[:, None, None]).to(features.dtype)
    return torch.einsum("rij,rijd->rd", weights, features)


def region_input(image: np.ndarray, region: Region, image_size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLIP input of the frame with everything outside the region blanked (3, S, S), normalised box (4,)).

    A pixel is kept when its square overlaps the pooled area at all, so every box keeps at least one pixel.
    """
    check_frame(image, f"frame {region.frame} of {region.describe()}")
    height, width = image.shape[:2]
    region.validate(width, height)
    box = region.grid_box(width, height, grid)
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    cols = np.arange(width)
    rows = np.arange(height)
    keep_x = (cols + 1 > x0) & (cols < x1)
    keep_y = (rows + 1 > y0) & (rows < y1)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)  # a copy
    keep = torch.from_numpy(keep_y[:, None] & keep_x[None, :])
    mean = torch.tensor(CLIP_MEAN, dtype=pixels.dtype).view(3, 1, 1)
    blanked = torch.where(keep[None], pixels, mean)
    return clip_input(blanked[None], image_size)[0], torch.tensor(box, dtype=torch.float32)
