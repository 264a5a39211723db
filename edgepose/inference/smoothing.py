"""Temporal smoothing of keypoints: a confidence-aware One Euro filter.

The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter
whose cutoff rises with speed: ``cutoff = min_cutoff + beta * |speed|``.  A
still keypoint is smoothed hard (jitter goes away), a moving one is followed
with little lag.  Here it runs on all keypoint coordinates at once (one numpy
update per frame) and:

* speed is measured in *pose sizes per second* (the longer side of the box
  around the confident keypoints), so ``beta`` does not depend on the camera
  resolution or on how far away the person is;
* each keypoint's update is weighted by its confidence: below ``score_floor``
  a keypoint does not move the filter at all, between ``score_floor`` and
  ``score_full`` its step is scaled down, so an occluded joint that jumps
  around with a low score cannot drag the smoothed pose with it;
* time comes from the frames' timestamps, so the filter behaves the same at
  5 or 30 frames per second;
* a keypoint given as NaN (a multi-person model's part not found in this frame) does not move the
  filter either, and a keypoint seen for the first time starts where it is found.

A multi-person pipeline keeps one filter per person id
(:class:`edgepose.inference.multipose.MultiPipeline`), made by :func:`factory`.

A ``OneEuroSmoother`` implements the pipeline's Smoother protocol
(``__call__(pose, ts) -> Pose`` and ``reset()``).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from edgepose.core.pose import Keypoint, Pose

if TYPE_CHECKING:
    from edgepose.core.config import SmoothingConfig


def alpha(dt: float, cutoff: np.ndarray) -> np.ndarray:
    """Smoothing factor of an exponential low-pass with ``cutoff`` Hz for a step of ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return np.asarray(1.0 / (1.0 + tau / dt))


def confidence_weight(scores: np.ndarray, floor: float, full: float) -> np.ndarray:
    """0 below ``floor``, 1 from ``full`` on, linear in between."""
    if full <= floor:
        return (scores >= floor).astype(np.float64)
    return np.clip((np.asarray(scores, dtype=np.float64) - floor) / (full - floor), 0.0, 1.0)


def pose_size(xy: np.ndarray, scores: np.ndarray, floor: float) -> float:
    """Longer side of the box around keypoints scoring at least ``floor`` (all if fewer than 2; NaN ignored)."""
    known = ~np.isnan(xy[:, 0])
    pts = xy[known & (scores >= floor)]
    if len(pts) < 2:
        pts = xy[known]
    if len(pts) < 2:
        return 1.0
    span = pts.max(axis=0) - pts.min(axis=0)  # np.ptp per column, without its wrapper's cost
    return float(max(span[0], span[1], 1.0))


class OneEuroSmoother:
    """Confidence-aware One Euro filter over every keypoint coordinate.

    ``min_cutoff`` (Hz): cutoff when still — lower is smoother.  ``beta``
    (per pose-size/s): how fast the cutoff rises with speed — higher is less
    lag.  ``d_cutoff`` (Hz): cutoff of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 0.5, beta: float = 5.0, d_cutoff: float = 1.0,
                 score_floor: float = 0.1, score_full: float = 0.4, max_gap: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.score_floor, self.score_full = score_floor, score_full
        self.max_gap = max_gap
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None  # (K, 2) filtered position
        self._dx: Optional[np.ndarray] = None  # (K, 2) filtered speed, pose sizes per second
        self._ts: float = 0.0
        self._size: float = 1.0

    def filter(self, xy: np.ndarray, scores: np.ndarray, ts: float) -> np.ndarray:
        """One step on raw (K, 2) positions (NaN: not found, the filter keeps its place) and (K,) scores;
        returns the filtered (K, 2) (NaN for a keypoint never found yet)."""
        xy = np.asarray(xy, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        dt = ts - self._ts
        if self._x is None or self._dx is None or self._x.shape != xy.shape or dt > self.max_gap:
            self._x, self._dx, self._ts = xy.copy(), np.zeros_like(xy), ts
            self._size = pose_size(xy, scores, self.score_full)
            return np.array(xy, dtype=np.float64)
        if dt <= 0:  # repeated or out-of-order timestamp: do not divide by zero
            dt = 1e-3
        missing = np.isnan(xy[:, 0])
        if missing.any() or np.isnan(self._x[:, 0]).any():
            first = ~missing & np.isnan(self._x[:, 0])  # found for the first time: start there, still
            self._x[first], self._dx[first] = xy[first], 0.0
            xy = np.where(missing[:, None], self._x, xy)  # not found: no step, and weight 0 below
            scores = np.where(missing, 0.0, scores)
        size = pose_size(xy, scores, self.score_full)
        a_d = alpha(dt, np.asarray(self.d_cutoff))
        self._size += float(a_d * (size - self._size))
        w = confidence_weight(scores, self.score_floor, self.score_full)[:, None]
        speed = (xy - self._x) / (dt * self._size)
        self._dx = self._dx + w * a_d * (speed - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + w * alpha(dt, cutoff) * (xy - self._x)
        self._ts = ts
        return np.array(self._x, dtype=np.float64)

    def __call__(self, pose: Pose, ts: float) -> Pose:
        out = self.filter(pose.xy(), pose.scores(), ts)
        kps = tuple(Keypoint(k.name, x, y, k.score) for k, (x, y) in zip(pose.keypoints, out.tolist()))
        return Pose(kps, pose.score, pose.present)


def factory(section: SmoothingConfig) -> Optional[Callable[[], OneEuroSmoother]]:
    """What makes a new smoother of a ``[smoothing]`` config section (one per person id of a multi-person
    model), or None when disabled."""
    if not section.enabled:
        return None
    return functools.partial(OneEuroSmoother, section.min_cutoff, section.beta, section.d_cutoff)


def from_config(section: SmoothingConfig) -> Optional[OneEuroSmoother]:
    """The smoother of a ``[smoothing]`` config section, or None when disabled."""
    make = factory(section)
    return None if make is None else make()
