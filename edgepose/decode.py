"""Heatmaps -> keypoints (pure numpy + one OpenCV blur, vectorized over all keypoints).

A *decoder* is a function ``heatmaps (H, W, K) float32 -> (xy (K, 2), scores (K,))``
where ``xy`` is in continuous heatmap coordinates: the centre of cell
``(row i, col j)`` is ``(j + 0.5, i + 0.5)``.  :func:`decode_pose` maps those
through the preprocessing transform to frame pixels, so every decoder gets the
same exact geometry.

Decoders (``DECODERS``):

``subpixel`` (default)
    Integer peak, then one Newton step on the *log* of the map after a small
    Gaussian blur (a second-order Taylor expansion around the peak, as in
    DARK, Zhang et al. 2020); the blur is evaluated only in the 3x3 cells
    around each peak, for all channels at once.  For a Gaussian-shaped peak
    the log is exactly quadratic, so the step lands on the true sub-cell
    maximum.
``argmax``
    Integer peak, placed at the cell centre.
``upstream``
    What PoseEstimationForMobile's ``benchmark.py`` does: a ``sigma=5``
    Gaussian blur (scipy ``reflect`` border, truncate 4), integer argmax and
    ``(index + 1) / scale`` back to the image, i.e. a position of ``j + 1``
    in these coordinates (half a cell right/down of the cell centre).
    Kept for comparison only.

Every decoder's score is the raw (unblurred) maximum of its channel.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import cv2
import numpy as np

from .geometry import CropTransform
from .pose import Pose

Decoder = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]

# blur before the Taylor step, as a fraction of the map's longer side: 1 cell on a 48x48
# Hourglass map, 2 cells on CPM's 96x96 map (a 4x upsampling of 24x24); 4 input pixels for both.
SUBPIXEL_SIGMA = 1.0 / 48
UPSTREAM_SIGMA = 5.0  # cells; upstream's gaussian_filter(heat, sigma=5)


def _channels_first(maps: np.ndarray) -> np.ndarray:
    """(H, W, K) -> contiguous (K, H*W); reductions along rows are much faster than strided ones."""
    h, w, k = maps.shape
    flat = np.ascontiguousarray(maps, dtype=np.float32).reshape(h * w, k)
    return cv2.transpose(flat) if k <= 512 else np.ascontiguousarray(flat.T)


def _peaks(maps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Integer (row, col) of the maximum of each channel of an (H, W, K) array."""
    w = maps.shape[1]
    idx = _channels_first(maps).argmax(axis=1)
    return idx // w, idx % w


def _raw_scores(heatmaps: np.ndarray) -> np.ndarray:
    return _channels_first(heatmaps).max(axis=1).astype(np.float64)


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


def blurred_windows(heatmaps: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float,
                    half: int = 1, truncate: float = 3.0) -> np.ndarray:
    """The Gaussian-blurred map in a (2*half+1)^2 window around each channel's (row, col).

    Equal to :func:`gaussian_blur` (replicated border) evaluated there, but only
    the cells needed are computed: one gathered patch per channel and two small
    separable products, for all channels at once.  Returns (K, 2h+1, 2h+1).
    """
    h, w, k = heatmaps.shape
    r = max(1, int(truncate * sigma + 0.5))
    kern = cv2.getGaussianKernel(2 * r + 1, sigma, cv2.CV_64F)[:, 0]
    offs = np.arange(-(r + half), r + half + 1)
    ys = np.clip(rows[:, None] + offs, 0, h - 1)
    xs = np.clip(cols[:, None] + offs, 0, w - 1)
    patch = heatmaps[ys[:, :, None], xs[:, None, :], np.arange(k)[:, None, None]].astype(np.float64)
    win = np.lib.stride_tricks.sliding_window_view(patch, 2 * r + 1, axis=1) @ kern  # (K, 2h+1, P)
    return np.lib.stride_tricks.sliding_window_view(win, 2 * r + 1, axis=2) @ kern  # (K, 2h+1, 2h+1)


def taylor_step(log_win: np.ndarray) -> np.ndarray:
    """Newton step (K, 2) as (dx, dy) from the centre of (K, 3, 3) windows of a log map.

    Where the 2x2 Hessian is not negative definite each axis falls back to its
    own 1-D quadratic, and to 0 where that is not concave either.
    """
    c0 = log_win[:, 1, 1]
    l, r, u, d = log_win[:, 1, 0], log_win[:, 1, 2], log_win[:, 0, 1], log_win[:, 2, 1]
    gx, gy = (r - l) / 2.0, (d - u) / 2.0
    hxx, hyy = r - 2.0 * c0 + l, d - 2.0 * c0 + u
    hxy = (log_win[:, 2, 2] - log_win[:, 2, 0] - log_win[:, 0, 2] + log_win[:, 0, 0]) / 4.0
    det = hxx * hyy - hxy * hxy
    full = (hxx < 0) & (det > 1e-12)
    safe_det = np.where(full, det, 1.0)
    cx, cy = hxx < 0, hyy < 0
    dx = np.where(full, -(hyy * gx - hxy * gy) / safe_det, np.where(cx, -gx / np.where(cx, hxx, -1.0), 0.0))
    dy = np.where(full, -(hxx * gy - hxy * gx) / safe_det, np.where(cy, -gy / np.where(cy, hyy, -1.0), 0.0))
    return np.stack([dx, dy], axis=1)


def subpixel_decoder(heatmaps: np.ndarray, sigma: float = SUBPIXEL_SIGMA,
                     max_step: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Integer peak, then a Newton step on the log of the map blurred by ``sigma``.

    ``sigma`` is a fraction of the map's longer side.  The blur (evaluated only
    around the peaks) turns the model's blocky or flat-topped peaks into
    smooth bumps whose log is close to quadratic, so one Taylor step finds the
    sub-cell maximum (DARK, Zhang et al. 2020).  Offsets are clipped to
    ``max_step`` cells and are 0 along an axis where the peak is on the border.
    """
    h, w, _ = heatmaps.shape
    rows, cols = _peaks(heatmaps)
    xy = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
    cells = sigma * max(h, w)
    if cells > 0:
        win = blurred_windows(heatmaps, rows, cols, cells)
    else:
        ys = np.clip(rows[:, None] + np.arange(-1, 2), 0, h - 1)
        xs = np.clip(cols[:, None] + np.arange(-1, 2), 0, w - 1)
        win = heatmaps[ys[:, :, None], xs[:, None, :], np.arange(len(rows))[:, None, None]]
    step = taylor_step(np.log(np.maximum(win, 1e-10)))
    inside = np.stack([(cols > 0) & (cols < w - 1), (rows > 0) & (rows < h - 1)], axis=1)
    step = np.where(inside & np.isfinite(step), np.clip(step, -max_step, max_step), 0.0)
    scores = heatmaps[rows, cols, np.arange(len(rows))].astype(np.float64)
    return xy + step, scores


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
