"""Model outputs -> keypoints (pure numpy + one OpenCV blur, vectorized over all keypoints).

Nothing here knows the catalogue: which decoder a model needs, and its output
geometry, come from its resolved model (:mod:`edgepose.models.resolved`).
Heatmap models (CPM, Hourglass) use the heatmap decoders below; models that
regress keypoints directly (MoveNet) use :func:`regression_decoder`.

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
    maximum.  Where the map is a bilinear upsampling made inside the model
    (CPM: 24x24 -> 96x96; see :func:`knot_factors`), the step is taken on
    the coarse map recovered from the upsampled one: the upsampled map is
    piecewise linear, its maxima sit on the coarse grid's knots and a Taylor
    step on it only sees flat ramps.
``argmax``
    Integer peak, placed at the cell centre.
``upstream``
    What PoseEstimationForMobile's ``benchmark.py`` does: a ``sigma=5``
    Gaussian blur (scipy ``reflect`` border, truncate 4), integer argmax and
    ``(index + 1) / scale`` back to the image, i.e. a position of ``j + 1``
    in these coordinates (half a cell right/down of the cell centre).
    Kept for comparison only.

Every decoder's score is the raw (unblurred) maximum of its channel.

Upsampling geometry.  TensorFlow's ``ResizeBilinear`` with
``align_corners=False`` and no ``half_pixel_centers`` (what the CPM graph
uses) maps output index ``i`` to source index ``i / f``: source cell ``u``
lands on output index ``f * u`` (continuous ``f * u + 0.5``) and the last
``f - 1`` rows/columns repeat the last source cell.  A model whose graph was
cut before such a resize (``cut_upsample`` below) outputs the coarse map
itself; its keypoints are still placed in the geometry the model was trained
in, ``u + 0.5 / f`` in the coarse map's own coordinates.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.core.errors import ModelError
from edgepose.core.geometry import CropTransform
from edgepose.core.pose import Pose

Decoder = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]

# blur before the Taylor step, as a fraction of the (coarse) map's longer side: 1 cell on a 48x48
# Hourglass map, 0.5 cell on the 24x24 map under CPM's 4x upsampled 96x96; 4 input pixels for both.
SUBPIXEL_SIGMA = 1.0 / 48
UPSTREAM_SIGMA = 5.0  # cells; upstream's gaussian_filter(heat, sigma=5)
UPSAMPLING_FACTORS = (4, 2)  # tried largest first by knot_factors
UPSAMPLING_RTOL = 0.01  # linearity tolerance, relative to the peak (int8 outputs round to ~1/255)


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
    return np.asarray(_channels_first(heatmaps).max(axis=1), dtype=np.float64)


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


@functools.lru_cache(maxsize=32)
def _blur_band(sigma: float, half: int, truncate: float) -> np.ndarray:
    """(P, 2h+1) matrix B with B[i + j, j] = Gaussian tap i: ``patch_row @ B`` blurs a row at 2h+1 cells."""
    r = max(1, int(truncate * sigma + 0.5))
    kern = cv2.getGaussianKernel(2 * r + 1, sigma, cv2.CV_64F)[:, 0]
    band = np.zeros((2 * (r + half) + 1, 2 * half + 1))
    for j in range(2 * half + 1):
        band[j:j + 2 * r + 1, j] = kern
    band.setflags(write=False)
    return band


def blurred_windows(heatmaps: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float,
                    half: int = 1, truncate: float = 3.0) -> np.ndarray:
    """The Gaussian-blurred map in a (2*half+1)^2 window around each channel's (row, col).

    Equal to :func:`gaussian_blur` (replicated border) evaluated there, but only
    the cells needed are computed: one gathered patch per channel and two small
    matrix products (``B.T @ patch @ B``, B a band of Gaussian taps), for all
    channels at once.  Returns (K, 2h+1, 2h+1).
    """
    h, w, k = heatmaps.shape
    band = _blur_band(float(sigma), int(half), float(truncate))
    reach = (band.shape[0] - 1) // 2
    offs = np.arange(-reach, reach + 1)
    ys = np.clip(rows[:, None] + offs, 0, h - 1)
    xs = np.clip(cols[:, None] + offs, 0, w - 1)
    patch = heatmaps[ys[:, :, None], xs[:, None, :], np.arange(k)[:, None, None]].astype(np.float64)
    return np.asarray(band.T @ patch @ band)


def taylor_step(log_win: np.ndarray) -> np.ndarray:
    """Newton step (K, 2) as (dx, dy) from the centre of (K, 3, 3) windows of a log map.

    Where the 2x2 Hessian is not negative definite each axis falls back to its
    own 1-D quadratic, and to 0 where that is not concave either.
    """
    c0 = log_win[:, 1, 1]
    left, r, u, d = log_win[:, 1, 0], log_win[:, 1, 2], log_win[:, 0, 1], log_win[:, 2, 1]
    gx, gy = (r - left) / 2.0, (d - u) / 2.0
    hxx, hyy = r - 2.0 * c0 + left, d - 2.0 * c0 + u
    hxy = (log_win[:, 2, 2] - log_win[:, 2, 0] - log_win[:, 0, 2] + log_win[:, 0, 0]) / 4.0
    det = hxx * hyy - hxy * hxy
    full = (hxx < 0) & (det > 1e-12)
    safe_det = np.where(full, det, 1.0)
    cx, cy = hxx < 0, hyy < 0
    dx = np.where(full, -(hyy * gx - hxy * gy) / safe_det, np.where(cx, -gx / np.where(cx, hxx, -1.0), 0.0))
    dy = np.where(full, -(hxx * gy - hxy * gx) / safe_det, np.where(cy, -gy / np.where(cy, hyy, -1.0), 0.0))
    return np.stack([dx, dy], axis=1)


def knot_factors(heatmaps: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 factors: Sequence[int] = UPSAMPLING_FACTORS, rtol: float = UPSAMPLING_RTOL) -> np.ndarray:
    """Per channel, the factor ``f`` by which the map around its peak is a bilinear upsampling.

    ``rows, cols``: each channel's integer peak.  Only TensorFlow's legacy
    resize (``align_corners=False``, no half-pixel centres; see the module
    notes) is recognised: the peak of such a map sits on a knot (row and
    column multiples of ``f``), and along the row and the column through it
    the map equals the linear interpolation of the knots, within ``rtol`` of
    the peak, over the ``f`` cells on either side.  Factors are tried largest
    first; 1 = not upsampled there.  CPM's whole map is a 4x upsampling;
    Hourglass' 48x48 output is a 2x upsampling plus a skip branch that is
    often zero (ReLU) around the peaks, where the test then holds too.
    """
    h, w, k = heatmaps.shape
    ch = np.arange(k)[:, None]
    peak = np.abs(heatmaps[rows, cols, ch[:, 0]].astype(np.float64))
    tol = rtol * peak[:, None] + 1e-7
    out = np.ones(k, dtype=np.int64)
    for f in factors:
        if h % f or w % f or h // f < 3 or w // f < 3:
            continue
        ok = (out == 1) & (rows % f == 0) & (cols % f == 0)
        if not ok.any():
            continue
        t = np.arange(-f, f + 1)
        # along the peak's row, then its column: fine cells, the knot at/before, the next knot
        x = np.clip(cols[:, None] + t, 0, w - 1)  # (K, 2f+1)
        y = np.clip(rows[:, None] + t, 0, h - 1)
        x0, y0 = np.minimum(x // f * f, w - f), np.minimum(y // f * f, h - f)  # last knot repeats
        along_row = heatmaps[rows[:, None], np.stack([x, x0, np.minimum(x0 + f, w - f)]), ch]  # (3, K, 2f+1)
        along_col = heatmaps[np.stack([y, y0, np.minimum(y0 + f, h - f)]), cols[:, None], ch]
        for (v, a, b), frac in ((along_row, (x - x0) / f), (along_col, (y - y0) / f)):
            ok &= (np.abs(v - a - frac * (b - a)) <= tol).all(axis=1)
        out[ok] = f
    return out


def _refine(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float,
            max_step: float) -> np.ndarray:
    """Sub-cell peak (K, 2) from integer peaks: Newton step on the log of the blurred map."""
    h, w, k = maps.shape
    cells = sigma * max(h, w)
    if cells > 0:
        win = blurred_windows(maps, rows, cols, cells)
    else:
        ys = np.clip(rows[:, None] + np.arange(-1, 2), 0, h - 1)
        xs = np.clip(cols[:, None] + np.arange(-1, 2), 0, w - 1)
        win = maps[ys[:, :, None], xs[:, None, :], np.arange(k)[:, None, None]]
    step = taylor_step(np.log(np.maximum(win, 1e-10)))
    inside = np.stack([(cols > 0) & (cols < w - 1), (rows > 0) & (rows < h - 1)], axis=1)
    step = np.where(inside & np.isfinite(step), np.clip(step, -max_step, max_step), 0.0)
    return np.asarray(np.stack([cols + 0.5, rows + 0.5], axis=1) + step)


def subpixel_decoder(heatmaps: np.ndarray, sigma: float = SUBPIXEL_SIGMA, max_step: float = 1.0,
                     upsampled: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Integer peak, then a Newton step on the log of the map blurred by ``sigma``.

    ``sigma`` is a fraction of the (coarse) map's longer side.  The blur
    (evaluated only around the peaks) turns the model's blocky or flat-topped
    peaks into smooth bumps whose log is close to quadratic, so one Taylor
    step finds the sub-cell maximum (DARK, Zhang et al. 2020).  Offsets are
    clipped to ``max_step`` cells and are 0 along an axis where the peak is on
    the border.

    ``upsampled``: the factor by which the map is a legacy bilinear upsampling
    of a coarser map (None: detect it per channel with :func:`knot_factors`;
    1: not upsampled).  Where it is ``f`` > 1 the step is taken on the coarse
    map read off the knots (``heatmaps[::f, ::f]``, exact for this resize)
    and mapped back (coarse cell centre ``u + 0.5`` -> ``f * u + 0.5``).
    """
    h, w, k = heatmaps.shape
    rows, cols = _peaks(heatmaps)
    if upsampled is None:
        fac = knot_factors(heatmaps, rows, cols)
    else:
        fac = np.full(k, max(1, int(upsampled)), dtype=np.int64)
    scores = heatmaps[rows, cols, np.arange(k)].astype(np.float64)
    xy = np.empty((k, 2))
    for f in sorted(set(fac.tolist())):
        sel = fac == f
        if f == 1:
            xy[sel] = _refine(heatmaps, rows, cols, sigma, max_step)[sel]
            continue
        coarse = heatmaps[::f, ::f]
        if upsampled is None:
            r, c = rows // f, cols // f  # detected: the peaks are on knots
        else:
            r, c = _peaks(coarse)
        xy[sel] = f * (_refine(coarse, r, c, sigma, max_step)[sel] - 0.5) + 0.5
    return xy, scores


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


def get_decoder(name: str, cut_upsample: int = 1) -> Decoder:
    """The decoder called ``name``.

    ``cut_upsample`` > 1: the model's graph ends just before a legacy bilinear
    upsampling by that factor (e.g. a CPM variant that outputs the 24x24 map
    instead of its 96x96 upsampling).  The returned decoder places keypoints
    where the upsampled map would have put them (``+ 0.5 / f - 0.5`` cells),
    so both variants give the same frame coordinates.
    """
    try:
        dec = DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None
    f = int(cut_upsample)
    if f < 1:
        raise ValueError(f"cut_upsample must be >= 1, not {cut_upsample!r}")
    if f == 1:
        return dec
    shift = 0.5 / f - 0.5

    def cut_decoder(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        xy, scores = dec(heatmaps)
        return xy + shift, scores

    return cut_decoder


def regression_decoder(output: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoints regressed directly (MoveNet): an output (1, K, 3) or (K, 3) of (y, x, score).

    ``y, x`` are normalised to the model input (0..1 across it), so they are
    returned as continuous coordinates of a 1x1 grid (:data:`REGRESSION_GRID`,
    which :func:`decode_pose` maps to frame pixels like a heatmap grid).
    """
    out = np.asarray(output, dtype=np.float64).reshape(-1, 3)
    return out[:, [1, 0]], out[:, 2].copy()


REGRESSION_GRID = (1, 1)  # (w, h) of the coordinates regression_decoder returns
regression_decoder.grid = REGRESSION_GRID  # type: ignore[attr-defined]


def decode_pose(heatmaps: np.ndarray, transform: CropTransform, names: Sequence[str],
                threshold: float, decoder: Decoder = argmax_decoder) -> Pose:
    """The model output decoded into a pose in frame pixels.

    A decoder returns continuous coordinates of a grid: the heatmap's own
    (H, W) for heatmap decoders, or the ``(w, h)`` it declares as its
    ``grid`` attribute (:func:`regression_decoder`: normalised coordinates).
    """
    xy, scores = decoder(heatmaps)
    if len(scores) != len(names):
        raise ModelError(f"the model gives {len(scores)} keypoints, not the {len(names)} named {names[0]} ... "
                         f"{names[-1]}: the model file does not match its family")
    if not np.isfinite(scores).all():  # every decoder's score is its channel's raw maximum: NaN shows there
        raise ModelError("the model's output is not finite numbers (NaN or inf): the model file is broken")
    grid = getattr(decoder, "grid", None)
    w, h = grid if grid is not None else heatmaps.shape[1::-1][:2]
    frame_xy = transform.heatmap_to_frame(xy, w, h)
    return Pose.from_arrays(names, frame_xy, np.clip(scores, 0.0, 1.0), threshold)
