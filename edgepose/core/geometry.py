"""The preprocessing transform and its exact inverse.

Convention everywhere: continuous pixel coordinates, pixel ``k`` covers
``[k, k+1)`` and its centre is ``k + 0.5``.  ``cv2.resize`` with
``INTER_LINEAR`` uses the same half-pixel convention, so the map from model
input pixels to frame pixels is a pure scale plus offset, and heatmap cell
``j`` has its centre at ``(j + 0.5) * input_w / grid_w`` input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

FIT_MODES = ("pad", "stretch")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in frame pixels (may extend past the frame)."""

    x: float
    y: float
    w: float
    h: float

    def expand(self, factor: float) -> Box:
        cx, cy = self.x + self.w / 2, self.y + self.h / 2
        w, h = self.w * factor, self.h * factor
        return Box(cx - w / 2, cy - h / 2, w, h)

    def to_aspect(self, aspect: float) -> Box:
        """Grow the shorter side (about the centre) so that w / h == aspect."""
        cx, cy = self.x + self.w / 2, self.y + self.h / 2
        w, h = self.w, self.h
        if w / h < aspect:
            w = h * aspect
        else:
            h = w / aspect
        return Box(cx - w / 2, cy - h / 2, w, h)


@dataclass(frozen=True)
class CropTransform:
    """Maps the model input (in_w x in_h) onto a box of the frame.

    ``input -> frame``: ``x_f = box.x + x_in * box.w / in_w`` (same for y).
    """

    box: Box
    in_w: int
    in_h: int

    @property
    def scale(self) -> Tuple[float, float]:
        return self.box.w / self.in_w, self.box.h / self.in_h

    def input_to_frame(self, pts: np.ndarray) -> np.ndarray:
        sx, sy = self.scale
        pts = np.asarray(pts, dtype=np.float64)
        return np.stack([self.box.x + pts[..., 0] * sx, self.box.y + pts[..., 1] * sy], axis=-1)

    def frame_to_input(self, pts: np.ndarray) -> np.ndarray:
        sx, sy = self.scale
        pts = np.asarray(pts, dtype=np.float64)
        return np.stack([(pts[..., 0] - self.box.x) / sx, (pts[..., 1] - self.box.y) / sy], axis=-1)

    def heatmap_to_frame(self, pts: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
        """Continuous heatmap coordinates (cell j centre at j + 0.5) to frame pixels."""
        pts = np.asarray(pts, dtype=np.float64)
        inp = np.stack([pts[..., 0] * (self.in_w / grid_w), pts[..., 1] * (self.in_h / grid_h)], axis=-1)
        return self.input_to_frame(inp)

    def frame_to_heatmap(self, pts: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
        inp = self.frame_to_input(pts)
        return np.stack([inp[..., 0] * (grid_w / self.in_w), inp[..., 1] * (grid_h / self.in_h)], axis=-1)

    def affine(self) -> np.ndarray:
        """2x3 matrix mapping frame pixels to input pixels (for cv2.warpAffine)."""
        sx, sy = self.scale
        return np.array([[1 / sx, 0, -self.box.x / sx], [0, 1 / sy, -self.box.y / sy]], dtype=np.float64)


def whole_frame_box(frame_w: int, frame_h: int, in_w: int, in_h: int, fit: str = "pad") -> Box:
    """The box that feeds the whole frame to the model.

    ``pad`` keeps the aspect ratio (the box grows past the frame on the short
    side and the outside is filled with black); ``stretch`` resizes the frame
    as it is.
    """
    if fit == "stretch":
        return Box(0.0, 0.0, float(frame_w), float(frame_h))
    if fit != "pad":
        raise ValueError(f"fit must be one of {FIT_MODES}, not {fit!r}")
    return Box(0.0, 0.0, float(frame_w), float(frame_h)).to_aspect(in_w / in_h)
