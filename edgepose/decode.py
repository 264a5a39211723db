"""Heatmaps -> keypoints (pure numpy, vectorized over all keypoints).

A *decoder* is a function ``heatmaps (H, W, K) float32 -> (xy (K, 2), scores (K,))``
where ``xy`` is in continuous heatmap coordinates: the centre of cell
``(row i, col j)`` is ``(j + 0.5, i + 0.5)``.  :func:`decode_pose` maps those
through the preprocessing transform to frame pixels, so every decoder gets the
same exact geometry.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from .geometry import CropTransform
from .pose import Pose

Decoder = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


def argmax_decoder(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Integer peak per channel, placed at the cell centre; score = peak value."""
    h, w, k = heatmaps.shape
    flat = heatmaps.reshape(h * w, k)
    idx = flat.argmax(axis=0)
    scores = flat[idx, np.arange(k)]
    xy = np.stack([idx % w + 0.5, idx // w + 0.5], axis=1).astype(np.float64)
    return xy, scores.astype(np.float64)


DECODERS: Dict[str, Decoder] = {
    "argmax": argmax_decoder,
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
