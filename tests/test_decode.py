"""Decoders: sub-cell exactness on synthetic Gaussian heatmaps, upstream reproduction, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from edgepose import decode
from edgepose.geometry import Box, CropTransform


def gaussian_maps(size, centres, sigma):
    """(size, size, K) maps with Gaussian peaks at continuous centres (cell j centre = j + 0.5)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    maps = [np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) for cx, cy in centres]
    return np.stack(maps, axis=2).astype(np.float32)


@pytest.mark.parametrize("size,sigma", [(48, 1.0), (48, 1.5), (96, 2.0), (96, 3.0)])
def test_subpixel_recovers_subcell_peaks(size, sigma):
    rng = np.random.default_rng(size + int(sigma * 10))
    centres = rng.uniform(8, size - 8, size=(14, 2))  # not cut by the border
    maps = gaussian_maps(size, centres, sigma)
    xy, scores = decode.subpixel_decoder(maps)
    assert xy.shape == (14, 2) and scores.shape == (14,)
    assert np.abs(xy - centres).max() < 0.1  # cells
    # argmax is off by up to half a cell on the same maps: the test would notice a no-op refinement
    axy, _ = decode.argmax_decoder(maps)
    assert np.abs(axy - centres).max() > 0.3


def test_subpixel_with_noise_and_upsampled_peaks():
    # CPM's map is a 4x bilinear upsampling of a 24x24 map: blocky peaks, still sub-cell accurate
    import cv2
    centres = np.array([[10.3, 7.8], [15.6, 12.1], [4.4, 19.9]])
    low = gaussian_maps(24, centres, 1.0)
    up = cv2.resize(low, (96, 96), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(1)
    up = up + rng.normal(0, 0.01, up.shape).astype(np.float32)
    xy, _ = decode.subpixel_decoder(up)
    assert np.abs(xy / 4 - centres).max() < 0.1  # in 24x24 cells


def test_scores_are_raw_peak_values_and_argmax_is_cell_centre():
    maps = np.zeros((10, 12, 2), np.float32)
    maps[3, 7, 0] = 0.8
    maps[9, 0, 1] = 0.4
    xy, scores = decode.argmax_decoder(maps)
    assert xy.tolist() == [[7.5, 3.5], [0.5, 9.5]]
    assert np.allclose(scores, [0.8, 0.4])
    sxy, sscores = decode.subpixel_decoder(maps)
    assert np.allclose(sscores, scores)
    assert np.allclose(sxy, xy)  # symmetric single-cell peaks (and a border peak) stay put


def test_degenerate_maps_give_finite_results():
    for maps in (np.zeros((48, 48, 3), np.float32), np.full((48, 48, 3), -1.0, np.float32)):
        for name in decode.DECODERS:
            xy, scores = decode.get_decoder(name)(maps)
            assert np.isfinite(xy).all() and np.isfinite(scores).all()


def test_blurred_windows_equal_a_full_blur():
    rng = np.random.default_rng(3)
    maps = rng.random((40, 40, 5)).astype(np.float32)
    rows, cols = np.array([0, 5, 20, 39, 38]), np.array([3, 0, 20, 39, 1])
    win = decode.blurred_windows(maps, rows, cols, 2.0, half=1)
    full = decode.gaussian_blur(maps, 2.0)
    for k in range(5):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                r, c = rows[k] + dy, cols[k] + dx
                if not (0 <= r < 40 and 0 <= c < 40):
                    continue  # outside the map the window extends the replicated border
                assert win[k, dy + 1, dx + 1] == pytest.approx(full[r, c, k], abs=1e-5)


def test_upstream_reproduces_reference_loop():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(7)
    for size in (48, 96):
        maps = rng.random((size, size, 14)).astype(np.float32)
        xy, _ = decode.upstream_decoder(maps)
        for k in range(14):  # upstream benchmark.py, one channel at a time
            heat = ndimage.gaussian_filter(maps[:, :, k], sigma=5)
            i = np.unravel_index(np.argmax(heat), heat.shape)
            assert xy[k].tolist() == [i[1] + 1, i[0] + 1]


def test_upstream_is_biased_by_half_a_cell():
    maps = gaussian_maps(48, [(20.5, 30.5)], 1.5)
    xy, _ = decode.upstream_decoder(maps)
    assert xy[0].tolist() == [21.0, 31.0]


def test_decode_pose_maps_to_frame_pixels():
    maps = gaussian_maps(48, [(24.0, 12.0)], 1.5)
    t = CropTransform(Box(100.0, 50.0, 384.0, 384.0), 192, 192)
    pose = decode.decode_pose(maps, t, ["a"], 0.5, decode.subpixel_decoder)
    # heatmap 24 of 48 -> input 96 of 192 -> frame 100 + 96 * 2
    assert pose.keypoints[0].x == pytest.approx(292.0, abs=0.4)
    assert pose.keypoints[0].y == pytest.approx(50 + 48 * 2, abs=0.4)


def test_unknown_decoder():
    with pytest.raises(ValueError, match="subpixel"):
        decode.get_decoder("nope")
