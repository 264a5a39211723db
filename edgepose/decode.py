"""Heatmaps -> keypoints (pure numpy + one OpenCV blur, vectorized over all keypoints).

A *decoder* is a function ``heatmaps (H, W, K) float32 -> (xy (K, 2), scores (K,))``
where ``xy`` is in continuous heatmap coordinates: the centre of cell
``(row i, col j)`` is ``(j + 0.5, i + 0.5)``.  :func:`decode_pose` maps those
through the preprocessing transform to frame pixels, so every decoder gets the
same exact geometry.

Decoders (``DECODERS``):

``subpixel`` (default)
    Small Gaussian blur of all channels at once, integer peak, then one
    Newton step on the *log* of the blurred map (a second-order Taylor
    expansion around the peak, as in DARK, Zhang et al. 2020).  For a
    Gaussian-shaped peak the log is exactly quadratic, so the step lands on
    the true sub-cell maximum.
``argmax``
    Integer peak, placed at the cell centre.
``upstream``
    What PoseEstimationForMobile's ``benchmark.py`` does: a ``sigma=5``
    Gaussian blur (scipy ``reflect`` border, truncate 4), integer argmax and
    ``(index + 1) / scale`` back to the image, i.e. a position of ``j + 1``
    in these coordinates (half a cell right/down of the cell centre).
    Kept for comparison only.

Every decoder's score is the raw (unblurred) peak value of its channel.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import cv2
import numpy as np

from .geometry import CropTransform
from .pose import Pose

Decoder = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]

SUBPIXEL_SIGMA = 1.0  # cells; blur before the Taylor step
UPSTREAM_SIGMA = 5.0  # cells; upstream's gaussian_filter(heat, sigma=5)


def _peaks(maps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Integer (row, col) of the maximum of each channel of an (H, W, K) array."""
    h, w, k = maps.shape
    idx = maps.reshape(h * w, k).argmax(axis=0)
    return idx // w, idx % w


def _raw_scores(heatmaps: np.ndarray) -> np.ndarray:
    h, w, k = heatmaps.shape
    return heatmaps.reshape(h * w, k).max(axis=0).astype(np.float64)


def gaussian_blur(heatmaps: np.ndarray, sigma: float, truncate: float = 3.0,
                  border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Blur every channel of an (H, W, K) float32 array with one separable Gaussian."""
    r = max(1, int(truncate * sigma + 0.5))
    r = min(r, max(1, min(heatmaps.shape[:2]) - 1))  # OpenCV needs the kernel inside the map
    maps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    if maps.shape[2] > 512:  # pragma: no cover - OpenCV channel limit
        return np.stack([gaussian_blur(maps[:, :, i:i + 1], sigma, truncate, border)[:, :, 0]
                         for i in range(maps.shape[2])], axis=2)
    out = cv2.GaussianBlur(maps, (2 * r + 1, 2 * r + 1), sigma, sigmaY=sigma, borderType=border)
    return out.reshape(maps.shape)


def argmax_decoder(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Integer peak per channel, placed at the cell centre; score = peak value."""
    rows, cols = _peaks(heatmaps)
    xy = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
    return xy, _raw_scores(heatmaps)


def taylor_refine(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  max_step: float = 0.5) -> np.ndarray:
    """Sub-cell offsets (K, 2) as (dx, dy) from a Newton step on ``log(maps)`` at each peak.

    Uses the 3x3 neighbourhood of each channel's peak (gathered for all
    channels at once).  Where the 2x2 Hessian is not negative definite, each
    axis falls back to its own 1-D quadratic; at the map border or on a flat
    map the offset of that axis is 0.  Offsets are clipped to ``max_step``.
    """
    h, w, k = maps.shape
    ch = np.arange(k)
    xm, xp = np.maximum(cols - 1, 0), np.minimum(cols + 1, w - 1)
    ym, yp = np.maximum(rows - 1, 0), np.minimum(rows + 1, h - 1)
    tiny = np.float64(1e-10)

    def L(r, c):
        return np.log(np.maximum(maps[r, c, ch].astype(np.float64), tiny))

    c0 = L(rows, cols)
    l, r = L(rows, xm), L(rows, xp)
    u, d = L(ym, cols), L(yp, cols)
    gx, gy = (r - l) / 2.0, (d - u) / 2.0
    hxx, hyy = r - 2.0 * c0 + l, d - 2.0 * c0 + u
    hxy = (L(yp, xp) - L(yp, xm) - L(ym, xp) + L(ym, xm)) / 4.0
    det = hxx * hyy - hxy * hxy
    full = (hxx < 0) & (det > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx2 = np.where(full, -(hyy * gx - hxy * gy) / np.where(full, det, 1.0), 0.0)
        dy2 = np.where(full, -(hxx * gy - hxy * gx) / np.where(full, det, 1.0), 0.0)
        dx1 = np.where(hxx < 0, -gx / np.where(hxx < 0, hxx, -1.0), 0.0)
        dy1 = np.where(hyy < 0, -gy / np.where(hyy < 0, hyy, -1.0), 0.0)
    dx = np.where(full, dx2, dx1)
    dy = np.where(full, dy2, dy1)
    inside_x = (cols > 0) & (cols < w - 1)
    inside_y = (rows > 0) & (rows < h - 1)
    dx = np.where(inside_x & np.isfinite(dx), dx, 0.0)
    dy = np.where(inside_y & np.isfinite(dy), dy, 0.0)
    return np.clip(np.stack([dx, dy], axis=1), -max_step, max_step)


def subpixel_decoder(heatmaps: np.ndarray, sigma: float = SUBPIXEL_SIGMA) -> Tuple[np.ndarray, np.ndarray]:
    """Blur (``sigma`` cells), integer peak, then a Taylor step on the log map."""
    maps = gaussian_blur(heatmaps, sigma) if sigma > 0 else np.asarray(heatmaps, dtype=np.float32)
    rows, cols = _peaks(maps)
    base = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
    return base + taylor_refine(maps, rows, cols), _raw_scores(heatmaps)


def upstream_decoder(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Upstream's decode (sigma-5 blur, argmax, ``index + 1``), all channels in one blur.

    Matches ``scipy.ndimage.gaussian_filter(heat, sigma=5)`` per channel
    (``reflect`` border = OpenCV ``BORDER_REFLECT``, radius ``int(4*5+0.5)``).
    """
    maps = gaussian_blur(heatmaps, UPSTREAM_SIGMA, truncate=4.0, border=cv2.BORDER_REFLECT)
    rows, cols = _peaks(maps)
    xy = np.stack([cols + 1.0, rows + 1.0], axis=1).astype(np.float64)
    return xy, _raw_scores(heatmaps)


DECODERS: Dict[str, Decoder] = {
    "subpixel": subpixel_decoder,
    "argmax": argmax_decoder,
    "upstream": upstream_decoder,
}


def get_decoder(name: str) -> Decoder:
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None


def decode_pose(heatmaps: np.ndarray, transform: CropTransform, names: Sequence[str],
                threshold: float, decoder: Decoder = argmax_decoder) -> Pose:
    xy, scores = decoder(heatmaps)
    h, w = heatmaps.shape[:2]
    frame_xy = transform.heatmap_to_frame(xy, w, h)
    return Pose.from_arrays(names, frame_xy, np.clip(scores, 0.0, 1.0), threshold)
