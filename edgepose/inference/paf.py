"""Multi-person decoding of part maps and part affinity fields (OpenPose), in pure numpy.

The model (family ``paf``, :mod:`edgepose.models.resolved`) outputs, on a grid of stride 8,
``K + 1`` part maps (K parts and background) and ``2 * L`` affinity-field channels (an (x, y)
vector field per limb).  :func:`decode_people` turns one such output into people:

1. **Peaks** (:func:`find_peaks`) on the native grid, all parts at once: a cell is a peak when its
   blurred value (a Gaussian of ``blur`` cells: the reference's blur measured on the native grid,
   see below) is the largest of its 3x3 neighbourhood and above ``peak_threshold``; its position is refined inside
   the cell by a quadratic fit through its neighbours in x and in y (no 4x/8x upsampling of the
   maps).  A peak's score is the raw (unblurred) map value at its cell.
2. **Limb candidates** (:func:`limb_candidates`): for each limb, every (part a, part b) pair of
   peaks at once: the field sampled at ``samples`` points along the segment, dotted with the
   segment's unit vector (at t = 0, 1/S, ..., (S-1)/S of the way, as ``pafprocess`` samples; the
   end itself is not sampled).  A pair is kept when more than ``min_vector_count`` samples exceed
   ``vector_threshold`` and the mean, minus a penalty for segments longer than half the grid
   height, is positive.
3. **Greedy assembly** (:func:`assemble`), as tf-pose-estimation's ``pafprocess`` does: per limb,
   candidates by score, each peak used once; limbs are attached to the person already holding one
   of their ends, two people holding both ends are merged when they share no part, and the first
   17 limbs may start a new person.  People with fewer than ``min_parts`` parts, or a mean
   (part + limb) score below ``min_score``, are dropped.

Coordinates are continuous grid coordinates: the centre of cell (row i, col j) is
``(j + 0.5, i + 0.5)``; :meth:`edgepose.core.geometry.CropTransform.heatmap_to_frame` maps them to
frame pixels.  The thresholds' defaults are the reference's (``pafprocess.h``).

The reference's blur: tf-pose-estimation upsamples the maps 4x (``resize_area``: each cell
repeated 4x4), then convolves with its ``Smoother`` kernel: 25 taps spanning +-3.5 standard normal
units (so sigma = 25/7 taps), square root of the 2-D product (which widens it by sqrt 2), i.e. a
standard deviation of 5.19 upsampled pixels = 1.30 cells, truncated at 3 cells (2.3 sigma).  With
the 4x repetition (a one-cell box, variance 1/12) that is 1.33 cells on the native grid, the
default ``blur``; ``benchmarks/paf_reference.py`` measures the agreement with the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from edgepose.core.pose import OPENPOSE_LIMBS, OPENPOSE_PAF_CHANNELS


@dataclass(frozen=True)
class PafParams:
    """The decoder's thresholds (defaults: tf-pose-estimation's ``pafprocess.h``)."""

    peak_threshold: float = 0.05  # part-map value a peak must exceed
    blur: float = 1.33  # Gaussian sigma (cells) of the map peaks are found on (0: none)
    vector_threshold: float = 0.05  # field . limb direction a sample must exceed
    min_vector_count: int = 6  # more than this many of the samples must
    samples: int = 10  # field samples per candidate limb
    min_parts: int = 4  # people with fewer parts are dropped
    min_score: float = 0.3  # people whose mean (part + limb) score is lower are dropped


@dataclass(frozen=True)
class Limbs:
    """The limb table: part pairs and the (x, y) field channels of each (relative to the first field channel)."""

    pairs: Tuple[Tuple[int, int], ...] = OPENPOSE_LIMBS
    channels: Tuple[Tuple[int, int], ...] = OPENPOSE_PAF_CHANNELS
    seeding: int = 17  # only the first this many limbs may start a new person (the last two are helpers)


@dataclass(frozen=True)
class GridPerson:
    """One person on the model's grid: ``xy`` (K, 2) continuous grid coordinates (NaN where a part
    is missing), ``scores`` (K,) part-map peaks (0 where missing), ``score`` the person's mean
    (part + limb) score."""

    xy: np.ndarray
    scores: np.ndarray
    score: float

    @property
    def found(self) -> np.ndarray:
        return np.asarray(~np.isnan(self.xy[:, 0]))


def find_peaks(parts: np.ndarray, params: PafParams = PafParams()) -> List[np.ndarray]:
    """Per part channel of ``parts`` (H, W, K): its peaks as an (n, 3) array of (x, y, score),
    x/y in continuous grid coordinates refined inside the cell."""
    parts = np.ascontiguousarray(parts, dtype=np.float32)
    h, w, k = parts.shape
    smooth = parts
    if params.blur > 0:
        side = 2 * max(1, round(2.3 * params.blur)) + 1  # the reference's 25-tap kernel ends at 2.3 sigma
        smooth = cv2.GaussianBlur(parts, (side, side), params.blur, borderType=cv2.BORDER_CONSTANT)
        smooth = smooth.reshape(h, w, k)
    pad = np.pad(smooth, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    # a tie (a peak exactly between two cells) goes to the cell that comes first in raster order
    before, after = np.full_like(smooth, -np.inf), np.full_like(smooth, -np.inf)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                into = before if (dy, dx) < (1, 1) else after
                np.maximum(into, pad[dy:dy + h, dx:dx + w], out=into)
    iy, ix, ic = np.nonzero((smooth > before) & (smooth >= after) & (smooth > params.peak_threshold))
    # sub-cell refinement: the vertex of the parabola through (left, centre, right), same for y
    c = pad[iy + 1, ix + 1, ic]
    left, right = pad[iy + 1, ix, ic], pad[iy + 1, ix + 2, ic]
    up, down = pad[iy, ix + 1, ic], pad[iy + 2, ix + 1, ic]
    left, right = np.where(np.isfinite(left), left, c), np.where(np.isfinite(right), right, c)
    up, down = np.where(np.isfinite(up), up, c), np.where(np.isfinite(down), down, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ox = np.where(left + right - 2 * c < 0, 0.5 * (left - right) / (left + right - 2 * c), 0.0)
        oy = np.where(up + down - 2 * c < 0, 0.5 * (up - down) / (up + down - 2 * c), 0.0)
    x = ix + 0.5 + np.clip(ox, -0.5, 0.5)
    y = iy + 0.5 + np.clip(oy, -0.5, 0.5)
    peaks = np.stack([x, y, parts[iy, ix, ic]], axis=1).astype(np.float64)
    return [peaks[ic == j] for j in range(k)]


def limb_candidates(a: np.ndarray, b: np.ndarray, fx: np.ndarray, fy: np.ndarray,
                    params: PafParams = PafParams()) -> np.ndarray:
    """Every (peak of a, peak of b) pair scored at once along the limb's field (``fx``, ``fy``: (H, W) each).

    Returns an (m, 3) array of (index in a, index in b, score) for the pairs that pass, best first."""
    if not len(a) or not len(b):
        return np.zeros((0, 3))
    h, w = fx.shape
    d = b[None, :, :2] - a[:, None, :2]  # (na, nb, 2)
    norm = np.linalg.norm(d, axis=-1)
    unit = d / np.maximum(norm, 1e-12)[..., None]
    t = np.arange(params.samples) / params.samples
    pts = a[:, None, None, :2] + t[None, None, :, None] * d[:, :, None, :]  # (na, nb, S, 2)
    cx = np.clip(np.floor(pts[..., 0]).astype(np.intp), 0, w - 1)
    cy = np.clip(np.floor(pts[..., 1]).astype(np.intp), 0, h - 1)
    dots = fx[cy, cx] * unit[:, :, None, 0] + fy[cy, cx] * unit[:, :, None, 1]  # (na, nb, S)
    score = dots.mean(-1) + np.minimum(0.0, 0.5 * h / np.maximum(norm, 1e-12) - 1.0)
    ok = ((dots > params.vector_threshold).sum(-1) > params.min_vector_count) & (score > 0) & (norm > 1e-12)
    ia, ib = np.nonzero(ok)
    s = score[ia, ib]
    order = np.argsort(-s, kind="stable")
    return np.stack([ia[order], ib[order], s[order]], axis=1)


def _connections(cands: np.ndarray) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one choice among candidates (best first): each peak in at most one connection."""
    used_a, used_b, out = set(), set(), []
    for ia, ib, s in cands:
        ia, ib = int(ia), int(ib)
        if ia in used_a or ib in used_b:
            continue
        used_a.add(ia)
        used_b.add(ib)
        out.append((ia, ib, float(s)))
    return out


def assemble(peaks: Sequence[np.ndarray], fields: np.ndarray, limbs: Limbs = Limbs(),
             params: PafParams = PafParams()) -> List[GridPerson]:
    """Group part peaks (:func:`find_peaks`) into people along the limbs' fields (H, W, 2L)."""
    k = len(peaks)
    offsets = np.cumsum([0] + [len(p) for p in peaks])  # global peak id = offsets[part] + index
    all_scores = np.concatenate([p[:, 2] for p in peaks]) if offsets[-1] else np.zeros(0)
    rows: List[np.ndarray] = []  # per person: global peak id per part (-1: none)
    totals: List[float] = []  # sum of part and limb scores
    counts: List[int] = []
    for li, ((pa, pb), (chx, chy)) in enumerate(zip(limbs.pairs, limbs.channels)):
        cands = limb_candidates(peaks[pa], peaks[pb], fields[..., chx], fields[..., chy], params)
        for ia, ib, s in _connections(cands):
            ga, gb = offsets[pa] + ia, offsets[pb] + ib
            hits = [r for r, row in enumerate(rows) if row[pa] == ga or row[pb] == gb]
            if len(hits) == 1:
                r = hits[0]
                if rows[r][pb] != gb:
                    rows[r][pb] = gb
                    counts[r] += 1
                    totals[r] += all_scores[gb] + s
            elif len(hits) == 2:
                r1, r2 = hits
                if not np.any((rows[r1] >= 0) & (rows[r2] >= 0)):  # disjoint: one person
                    rows[r1] = np.maximum(rows[r1], rows[r2])
                    counts[r1] += counts[r2]
                    totals[r1] += totals[r2] + s
                    del rows[r2], counts[r2], totals[r2]
                else:
                    rows[r1][pb] = gb
                    counts[r1] += 1
                    totals[r1] += all_scores[gb] + s
            elif not hits and li < limbs.seeding:
                row = np.full(k, -1, dtype=np.intp)
                row[pa], row[pb] = ga, gb
                rows.append(row)
                counts.append(2)
                totals.append(float(all_scores[ga] + all_scores[gb] + s))
    all_xy = np.concatenate([p[:, :2] for p in peaks]) if offsets[-1] else np.zeros((0, 2))
    people = []
    for row, total, count in zip(rows, totals, counts):
        if count < params.min_parts or total / count < params.min_score:
            continue
        have = row >= 0
        xy = np.full((k, 2), np.nan)
        sc = np.zeros(k)
        xy[have] = all_xy[row[have]]
        sc[have] = all_scores[row[have]]
        people.append(GridPerson(xy, sc, float(total / count)))
    return sorted(people, key=lambda p: -p.score)


def decode_people(output: np.ndarray, params: PafParams = PafParams(), limbs: Limbs = Limbs()) -> List[GridPerson]:
    """People in one model output (H, W, K + 1 + 2L): part maps, background, affinity fields."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 4 and output.shape[0] == 1:
        output = output[0]
    k = max(max(p) for p in limbs.pairs) + 1
    n_fields = 2 * len(limbs.pairs)
    if output.ndim != 3 or output.shape[2] != k + 1 + n_fields:
        raise ValueError(f"a part-affinity output is (H, W, {k + 1 + n_fields}), not {output.shape}")
    peaks = find_peaks(output[..., :k], params)
    return assemble(peaks, output[..., k + 1:], limbs, params)


def render(people: Sequence[np.ndarray], grid: Tuple[int, int], limbs: Limbs = Limbs(), sigma: float = 1.0,
           width: float = 1.0) -> np.ndarray:
    """The output a perfect model would give for ``people`` (each a (K, 2) array of continuous grid
    coordinates, NaN for a part not visible) on a ``grid`` of (width, height): Gaussian part peaks of
    ``sigma`` cells (the maximum over people), background ``1 - max``, and each limb's unit vector in
    the cells within ``width`` of its segment (averaged where people overlap), as OpenPose's training
    targets are made.  For tests and benchmarks of the decoder."""
    gw, gh = grid
    k = max(max(p) for p in limbs.pairs) + 1
    out = np.zeros((gh, gw, k + 1 + 2 * len(limbs.pairs)), np.float32)
    cx, cy = np.meshgrid(np.arange(gw) + 0.5, np.arange(gh) + 0.5)
    count = np.zeros((gh, gw, len(limbs.pairs)), np.float32)
    for xy in people:
        xy = np.asarray(xy, dtype=np.float64)
        for j in range(k):
            if not np.isnan(xy[j, 0]):
                g = np.exp(-((cx - xy[j, 0]) ** 2 + (cy - xy[j, 1]) ** 2) / (2 * sigma ** 2))
                out[..., j] = np.maximum(out[..., j], g)
        for li, ((pa, pb), (chx, chy)) in enumerate(zip(limbs.pairs, limbs.channels)):
            a, b = xy[pa], xy[pb]
            if np.isnan(a[0]) or np.isnan(b[0]):
                continue
            d = b - a
            length = float(np.linalg.norm(d))
            if length < 1e-9:
                continue
            u = d / length
            along = (cx - a[0]) * u[0] + (cy - a[1]) * u[1]
            across = np.abs((cx - a[0]) * u[1] - (cy - a[1]) * u[0])
            on = (along >= -width) & (along <= length + width) & (across <= width)
            out[..., k + 1 + chx][on] += u[0]
            out[..., k + 1 + chy][on] += u[1]
            count[..., li][on] += 1
    for li, (chx, chy) in enumerate(limbs.channels):
        n = np.maximum(count[..., li], 1)
        out[..., k + 1 + chx] /= n
        out[..., k + 1 + chy] /= n
    out[..., k] = 1 - out[..., :k].max(axis=-1)
    return out
