"""One Euro smoother: still input is kept, noise is reduced, motion is followed, confidence gates."""

from __future__ import annotations

import numpy as np
import pytest

from edgepose.core.config import SmoothingConfig
from edgepose.core.pose import Pose
from edgepose.inference.smoothing import OneEuroSmoother, alpha, confidence_weight, from_config

BASE = np.array([[100.0, 50.0], [100.0, 150.0], [60.0, 250.0], [140.0, 250.0]])  # a 200 px pose


def run(sm, xys, scores=None, fps=30.0):
    scores = np.ones(len(xys[0])) if scores is None else scores
    return np.stack([sm.filter(xy, scores, t / fps) for t, xy in enumerate(xys)])


def test_first_frame_passes_through_and_still_input_stays():
    sm = OneEuroSmoother()
    out = run(sm, [BASE] * 10)
    assert np.allclose(out, BASE)


def test_white_noise_is_reduced_more_than_3x():
    rng = np.random.default_rng(0)
    xs = [BASE + rng.normal(0, 1.0, BASE.shape) for _ in range(300)]  # 0.5 % of the pose size
    out = run(OneEuroSmoother(), xs)  # the defaults
    raw_std = np.std(np.stack(xs)[50:], axis=0).mean()
    assert raw_std / np.std(out[50:], axis=0).mean() > 3.0


def test_fast_motion_is_followed_with_little_lag():
    speed = 300.0  # px/s, 1.5 pose sizes per second
    xs = [BASE + [speed * t / 30, 0] for t in range(60)]
    slow = run(OneEuroSmoother(min_cutoff=1.0, beta=0.0), xs)
    fast = run(OneEuroSmoother(), xs)
    target = np.stack(xs)
    lag_fast = np.abs(fast[-1] - target[-1])[:, 0].mean() / (speed / 30)  # in frames
    lag_slow = np.abs(slow[-1] - target[-1])[:, 0].mean() / (speed / 30)
    assert lag_fast < 1.0 < lag_slow


def test_low_confidence_keypoint_does_not_drag():
    sm = OneEuroSmoother(score_floor=0.1, score_full=0.4)
    s = np.array([0.9, 0.9, 0.9, 0.05])
    sm.filter(BASE, s, 0.0)
    jumped = BASE.copy()
    jumped[3] += 80  # an occluded ankle jumping around with a tiny score
    out = sm.filter(jumped, s, 1 / 30)
    assert np.allclose(out[3], BASE[3])
    half = sm.filter(jumped, np.array([0.9, 0.9, 0.9, 0.25]), 2 / 30)
    full = OneEuroSmoother()
    full.filter(BASE, np.ones(4), 0.0)
    full.filter(BASE, np.ones(4), 1 / 30)
    assert 0 < half[3, 0] - BASE[3, 0] < full.filter(jumped, np.ones(4), 2 / 30)[3, 0] - BASE[3, 0]


def test_reset_gap_and_repeated_timestamp():
    sm = OneEuroSmoother()
    sm.filter(BASE, np.ones(4), 0.0)
    moved = BASE + 50
    assert np.all(np.isfinite(sm.filter(moved, np.ones(4), 0.0)))  # same ts: no division by zero
    out = sm.filter(moved, np.ones(4), 5.0)  # after a long gap: start again
    assert np.allclose(out, moved)
    sm.reset()
    assert np.allclose(sm.filter(BASE, np.ones(4), 6.0), BASE)


def test_pose_interface_keeps_scores_and_presence():
    sm = OneEuroSmoother()
    names = ["a", "b", "c", "d"]
    p = Pose.from_arrays(names, BASE, [0.9, 0.8, 0.2, 0.6], 0.3)
    q = sm(p, 0.0)
    assert q.present == p.present and q.score == p.score
    assert [k.name for k in q.keypoints] == names and q.scores().tolist() == p.scores().tolist()


def test_helpers_and_config():
    assert alpha(1 / 30, 1e6) == pytest.approx(1.0, abs=1e-3)
    assert confidence_weight(np.array([0.0, 0.25, 1.0]), 0.1, 0.4).tolist() == pytest.approx([0, 0.5, 1])
    assert from_config(SmoothingConfig(enabled=False)) is None
    assert isinstance(from_config(SmoothingConfig()), OneEuroSmoother)
    with pytest.raises(ValueError):
        OneEuroSmoother(min_cutoff=0)


def test_parts_not_found_keep_their_place_and_a_part_found_first_starts_where_it_is():
    """A multi-person model's person lists the parts found in each frame (NaN for the rest): a part not
    found does not move the filter (nor makes NaN of the others), a part found for the first time starts
    where it is found, and one found again after a gap is smoothed from where it was."""
    rng = np.random.default_rng(1)
    sm = OneEuroSmoother()
    first = BASE.copy()
    first[3] = np.nan  # the fourth part is not found at first
    out = [sm.filter(first, np.ones(4), 0.0)]
    assert np.isnan(out[0][3]).all() and np.allclose(out[0][:3], BASE[:3])
    for t in range(1, 20):
        xy = BASE + rng.normal(0, 1.0, BASE.shape)
        xy[3] = np.nan if t < 10 else xy[3]
        xy[0] = np.nan if 12 <= t < 16 else xy[0]
        out.append(sm.filter(xy, np.ones(4), t / 30))
        if t == 10:  # found for the first time: exactly there
            assert np.array_equal(out[-1][3], xy[3])
    out = np.stack(out)
    assert np.isfinite(out[10:]).all() and np.isfinite(out[:, :3]).all()
    assert np.array_equal(out[12:16, 0], np.repeat(out[11:12, 0], 4, axis=0))  # unseen: held
    assert np.abs(out[16, 0] - BASE[0]).max() < 1.0  # found again: smoothed from its place, no jump
