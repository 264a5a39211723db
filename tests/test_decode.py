"""Decoders: sub-cell exactness on synthetic Gaussian heatmaps, upstream reproduction, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from edgepose.core.errors import ModelError
from edgepose.core.geometry import Box, CropTransform
from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.inference import decode


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
    from scipy import ndimage  # the reference implementation upstream used (in the test extra)
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


def legacy_upsample(low, f):
    """TensorFlow ResizeBilinear(align_corners=False, half_pixel_centers=False): out[i] = low(i / f)."""
    n_h, n_w = low.shape[:2]

    def axis(n):
        s = np.arange(n * f) / f
        j0 = np.floor(s).astype(int)
        return j0, np.minimum(j0 + 1, n - 1), (s - j0)

    r0, r1, ty = axis(n_h)
    c0, c1, tx = axis(n_w)
    rows = low[r0] * (1 - ty)[:, None, None] + low[r1] * ty[:, None, None]
    out = rows[:, c0] * (1 - tx)[None, :, None] + rows[:, c1] * tx[None, :, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def test_knot_factors_detect_legacy_upsampling_only():
    import cv2
    rng = np.random.default_rng(5)
    low = gaussian_maps(24, rng.uniform(4, 20, size=(14, 2)), 0.75)
    up = legacy_upsample(low, 4)
    rows, cols = decode._peaks(up)
    assert (rows % 4 == 0).all() and (cols % 4 == 0).all()  # maxima of the upsampled map sit on knots
    assert decode.knot_factors(up, rows, cols).tolist() == [4] * 14
    # something added away from the peaks (like Hourglass' skip branch) does not matter
    bumped = up.copy()
    bumped[:3, :3] += 0.2
    assert decode.knot_factors(bumped, *decode._peaks(bumped)).tolist() == [4] * 14
    # half-pixel-centre resize, native Gaussians and noise are not taken for it
    for maps in (cv2.resize(low, (96, 96), interpolation=cv2.INTER_LINEAR),
                 gaussian_maps(96, rng.uniform(8, 88, size=(14, 2)), 3.0),
                 rng.random((96, 96, 14)).astype(np.float32)):
        assert (decode.knot_factors(maps, *decode._peaks(maps)) == 1).all()


def test_subpixel_refines_an_upsampled_map_on_its_knots():
    rng = np.random.default_rng(11)
    centres = rng.uniform(5, 19, size=(14, 2))  # continuous coords of the 24x24 map
    up = legacy_upsample(gaussian_maps(24, centres, 0.75), 4)
    # coarse cell centre u + 0.5 sits on fine index 4u, i.e. continuous 4u + 0.5
    want = 4 * (centres - 0.5) + 0.5
    xy, scores = decode.subpixel_decoder(up)
    assert np.abs(xy - want).max() < 0.25  # fine cells (= 1/16 of a coarse cell)
    assert np.allclose(scores, up.reshape(-1, 14).max(axis=0))
    plain, _ = decode.subpixel_decoder(up, upsampled=1)  # the Taylor step on the ramps of the fine map
    assert np.abs(plain - want).max() > 0.6
    forced, _ = decode.subpixel_decoder(up, upsampled=4)
    assert np.allclose(forced, xy)


@pytest.mark.parametrize("name", ["subpixel", "argmax"])
def test_cut_model_gives_the_same_frame_coordinates(name):
    """A model cut before its 4x resize (24x24 output) decodes to where the 96x96 model's keypoints are."""
    rng = np.random.default_rng(2)
    low = gaussian_maps(24, rng.uniform(4, 20, size=(14, 2)), 0.75)
    t = CropTransform(Box(40.0, 10.0, 300.0, 300.0), 192, 192)
    full = decode.decode_pose(legacy_upsample(low, 4), t, [f"k{i}" for i in range(14)], 0.0,
                              decode.get_decoder(name))
    cut = decode.decode_pose(low, t, [f"k{i}" for i in range(14)], 0.0, decode.get_decoder(name, cut_upsample=4))
    plain = decode.decode_pose(low, t, [f"k{i}" for i in range(14)], 0.0, decode.get_decoder(name))
    assert np.abs(cut.xy() - full.xy()).max() < 1e-6 * 300
    assert np.abs(plain.xy() - full.xy()).max() > 4  # 3/8 of a 24-cell = 4.7 frame px off without it
    with pytest.raises(ValueError):
        decode.get_decoder(name, cut_upsample=0)


def test_real_cpm_output_is_refined_on_its_24x24_knots():
    import sys

    from edgepose.core.geometry import whole_frame_box
    from edgepose.inference.engine import Engine
    from edgepose.inference.pipeline import crop_to_input

    from conftest import MIRROR, REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    import clips

    person = clips.people()[0]
    import cv2
    img = cv2.imread(str(person.image_path))
    t = CropTransform(whole_frame_box(img.shape[1], img.shape[0], 192, 192), 192, 192)
    hm = Engine(MIRROR / "cpm" / "model.tflite", threads=2).run(crop_to_input(img, t)).copy()
    assert hm.shape == (96, 96, 14)
    assert decode.knot_factors(hm, *decode._peaks(hm)).tolist() == [4] * 14
    xy, _ = decode.subpixel_decoder(hm)
    cut, _ = decode.get_decoder("subpixel", cut_upsample=4)(np.ascontiguousarray(hm[::4, ::4]))
    assert np.abs(xy - 4 * cut).max() < 1e-6  # both paths agree (96-cells = 4 x 24-cells)


def test_mirror_order_swaps_sides_only():
    from edgepose.core.pose import KEYPOINT_NAMES, mirror_order

    order = mirror_order(KEYPOINT_NAMES)
    assert [KEYPOINT_NAMES[i] for i in order][:5] == ["head_top", "neck", "left_shoulder", "left_elbow", "left_wrist"]
    assert all(order[order[i]] == i for i in range(len(order)))
    assert mirror_order(["nose", "left_eye", "right_eye", "left_tail"]) == (0, 2, 1, 3)  # no partner: itself


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cpm", "hourglass"])
def test_subpixel_decoder_has_no_horizontal_bias_on_mirrored_real_crops(family):
    """Label-free geometry check (evaluate.mirror_offsets, research/flip_bias.py): decode real crops and their mirror
    images with the real model; an unbiased decoder puts the mirrored keypoints back where the plain
    ones are; a decoder that puts keypoints b cells right of the truth measures b.  (Only the
    sub-pixel decoder is checked: integer decoders land on a half-cell lattice, CPM's on 2 cells.)"""
    from edgepose.build import quantize as q
    from edgepose.inference.engine import Engine
    from edgepose.tools.evaluate import mirror_offsets

    from conftest import CALIB, MIRROR

    crops = q.calibration_crops(q.read_photos(CALIB), 192, 192)[::2]
    eng = Engine(MIRROR / family / "model.tflite", threads=2)
    d = mirror_offsets([(eng.run(c).copy(), eng.run(np.ascontiguousarray(c[:, ::-1])).copy()) for c in crops])
    assert len(d) > 100
    # 0.16 (cpm) / 0.04 (hourglass) cells measured here; a half-cell convention error gives >= 0.5
    assert abs(float(np.median(d))) < 0.25


def test_mirror_offsets_measure_a_decoders_horizontal_bias():
    from edgepose.core.pose import KEYPOINT_NAMES, mirror_order
    from edgepose.tools.evaluate import mirror_offsets

    maps = gaussian_maps(48, [(8.3 + 2.1 * k, 20.7) for k in range(len(KEYPOINT_NAMES))], 1.5)
    # what a mirror-symmetric model outputs for the mirror image: the mirrored map, sides swapped
    mirrored = np.ascontiguousarray(maps[:, ::-1][:, :, list(mirror_order(KEYPOINT_NAMES))])
    d = mirror_offsets([(maps, mirrored)])
    assert len(d) == len(KEYPOINT_NAMES) and np.abs(d).max() < 0.05

    def right_by_a_quarter(m):
        xy, s = decode.subpixel_decoder(m)
        return xy + [0.25, 0.0], s

    assert np.allclose(mirror_offsets([(maps, mirrored)], right_by_a_quarter), 0.25 + d)
    assert len(mirror_offsets([(maps * 0.1, mirrored * 0.1)])) == 0  # nothing scored >= 0.3


def test_window_spread_measures_sub_cell_precision():
    """evaluate.window_spread on maps that follow the content exactly: one frame point seen through
    windows moved by 0..7 input pixels (two 4-pixel cells of a 48x48 map)."""
    from edgepose.core.pose import KEYPOINT_NAMES
    from edgepose.tools.evaluate import shifted_windows, window_spread

    k = len(KEYPOINT_NAMES)
    points = np.array([(250.0 + 15.3 * i, 205.3 + 11.1 * i) for i in range(k)])  # frame pixels
    windows = shifted_windows(Box(100.0, 80.0, 480.0, 480.0), 192, 192, range(8))  # 2.5 frame px per input px
    scene = [(gaussian_maps(48, t.frame_to_heatmap(points, 48, 48), 1.5), t) for t in windows]
    spread, drift = window_spread([scene])
    assert len(spread) == 2 * k and np.median(spread) < 0.1 * 4  # < 0.1 cell, in input pixels
    assert np.abs(drift).max() < 0.1
    coarse, _ = window_spread([scene], "argmax")
    assert 0.8 < np.median(coarse) < 1.6  # a sawtooth over 2 cells: about 4 px / sqrt(12)
    moved = [(m, t) for m, t in scene[:4]] + [(np.roll(m, 1, axis=1), t) for m, t in scene[4:]]
    spread_moved, drift_moved = window_spread([moved])  # a network whose maps jump a cell right half-way
    assert np.allclose(spread_moved.reshape(k, 2).mean(axis=0), [2, 0], atol=0.2)  # x: +-2 of 4 input px
    assert np.allclose(drift_moved, [-1, -1, -1, -1, 1, 1, 1, 1], atol=0.1)  # shared; mean over x and y
    assert len(window_spread([[(m * 0.1, t) for m, t in scene]])[0]) == 0  # nothing scored >= 0.3


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cpm", "hourglass"])
def test_subpixel_follows_sub_cell_shifts_on_real_crops(family):
    """Label-free (research/shift_consistency.py): real photos through windows moved by 0..7 input
    pixels; the sub-pixel decoder's keypoints stay put far better than the integer argmax's."""
    from edgepose.build import quantize as q
    from edgepose.core.geometry import whole_frame_box
    from edgepose.inference.engine import Engine
    from edgepose.tools.evaluate import window_spread, window_views

    from conftest import CALIB, MIRROR

    eng = Engine(MIRROR / family / "model.tflite", threads=2)
    scenes = [window_views(eng, frame, whole_frame_box(frame.shape[1], frame.shape[0], 192, 192), range(8))
              for frame in q.read_photos(CALIB)[::2]]
    fine, _ = window_spread(scenes)
    coarse, _ = window_spread(scenes, "argmax")
    assert len(fine) >= 40
    # measured over all 13 photos and 3 zooms: 0.62 vs 2.29 px (cpm), 0.85 vs 2.29 px (hourglass)
    assert np.median(fine) < 0.5 * np.median(coarse), (np.median(fine), np.median(coarse))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's "invalid value" on the NaN maps
@pytest.mark.parametrize("decoder", sorted(decode.DECODERS))
def test_non_finite_heatmaps_are_a_model_error(decoder):
    """A broken model that outputs NaN/inf: one ModelError (exit 65), not a JSON error deep in a sink."""
    maps = np.zeros((48, 48, 14), np.float32)
    maps[10, 10, :] = 1.0
    for bad in (np.nan, np.inf):
        maps[30, 30, 3] = bad
        with pytest.raises(ModelError, match="not finite"):
            decode.decode_pose(maps, CropTransform(Box(0, 0, 192, 192), 192, 192), KEYPOINT_NAMES, 0.3,
                               decode.DECODERS[decoder])
