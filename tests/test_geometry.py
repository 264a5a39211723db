"""Geometry round trips: frame -> crop -> model input -> heatmap -> frame, exactly."""

import numpy as np
import pytest

from edgepose.core.geometry import Box, CropTransform, whole_frame_box
from edgepose.core.pose import KEYPOINT_NAMES
from edgepose.inference.decode import argmax_decoder, decode_pose
from edgepose.inference.pipeline import crop_to_input


@pytest.mark.parametrize("frame", [(640, 480), (1280, 720), (480, 640), (192, 192)])
@pytest.mark.parametrize("grid", [96, 48, 24])
def test_heatmap_cell_centres_round_trip(frame, grid):
    fw, fh = frame
    t = CropTransform(whole_frame_box(fw, fh, 192, 192), 192, 192)
    rng = np.random.default_rng(fw + grid)
    # choose peaks at cell centres, build one-hot heatmaps, decode, compare in frame pixels
    cells = rng.integers(0, grid, size=(14, 2))
    hm = np.zeros((grid, grid, 14), np.float32)
    hm[cells[:, 1], cells[:, 0], np.arange(14)] = 0.9
    pose = decode_pose(hm, t, KEYPOINT_NAMES, 0.3, argmax_decoder)
    # written out: the cell centre's fraction of the grid, of the box (x, y, w, h) fed to the model
    box = t.box
    expected = np.stack([box.x + (cells[:, 0] + 0.5) / grid * box.w,
                         box.y + (cells[:, 1] + 0.5) / grid * box.h], axis=1)
    assert np.allclose(pose.xy(), expected, atol=1e-9)
    back = t.frame_to_heatmap(pose.xy(), grid, grid)
    assert np.allclose(back, cells + 0.5, atol=1e-9)
    assert pose.present and pose.score == pytest.approx(0.9)


def test_pad_box_keeps_aspect_and_centres_frame():
    b = whole_frame_box(640, 480, 192, 192, "pad")
    assert (b.w, b.h) == (640, 640) and (b.x, b.y) == (0, -80)
    s = whole_frame_box(640, 480, 192, 192, "stretch")
    assert (s.x, s.y, s.w, s.h) == (0, 0, 640, 480)
    with pytest.raises(ValueError):
        whole_frame_box(640, 480, 192, 192, "zoom")


def _centroid(img):
    ys, xs = np.nonzero(img > 8)
    w = img[ys, xs].astype(float)
    return np.array([(xs + 0.5) @ w / w.sum(), (ys + 0.5) @ w / w.sum()])


@pytest.mark.parametrize("frame,box", [
    ((640, 480), None), ((1280, 720), None), ((960, 540), None),
    ((1280, 720), Box(500.0, 100.0, 300.0, 300.0)), ((640, 480), Box(-50.0, 200.0, 400.0, 400.0)),
])
def test_crop_to_input_puts_a_frame_point_where_the_transform_says(frame, box):
    fw, fh = frame
    box = box or whole_frame_box(fw, fh, 192, 192)
    t = CropTransform(box, 192, 192)
    img = np.zeros((fh, fw, 3), np.uint8)
    # a bright square centred on a known point inside the box
    cx, cy = box.x + box.w * 0.37, box.y + box.h * 0.61
    half = max(box.w, box.h) / 40
    img[int(cy - half):int(cy + half), int(cx - half):int(cx + half)] = 255
    true_c = np.array([(int(cx - half) + int(cx + half)) / 2, (int(cy - half) + int(cy + half)) / 2])
    out = crop_to_input(img, t, out=np.empty((192, 192, 3), np.uint8))
    got = t.input_to_frame(_centroid(out[..., 0]))
    # within a quarter of a model-input pixel, in frame pixels
    assert np.abs(got - true_c).max() < 0.25 * box.w / 192 + 0.3


def test_outside_of_frame_is_black():
    img = np.full((100, 200, 3), 200, np.uint8)
    t = CropTransform(whole_frame_box(200, 100, 192, 192), 192, 192)
    out = crop_to_input(img, t)
    assert out[:40].max() == 0 and out[-40:].max() == 0  # padding rows
    assert out[60:130].min() > 150
