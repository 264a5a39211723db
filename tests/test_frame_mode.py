"""Finding the person without a labelled box: stills refined on the crop around the first pose, small
people found by the tile search, a clip cut between photos re-acquired at once with smoothing
restarted, a frame with nobody, and `edgepose eval --mode frame/both` on a small COCO file.

Real CPM from the ../shared mirror on frames built from the eval photos (benchmarks/clips.py pastes a
labelled person into a plain background with exact keypoint geometry)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgepose.core import config as config_mod
from edgepose.inference.estimator import PoseEstimator

from conftest import EVAL_ANN, MIRROR, REPO, error_lines, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
import clips  # noqa: E402


@pytest.fixture(scope="module")
def estimator(model_cache):
    cfg = config_mod.Config()
    config_mod.apply_mapping(cfg, {"model": {"name": "cpm", "mirror": str(MIRROR), "dir": str(model_cache)},
                                   "runtime": {"threads": 2}}, "test")
    return PoseEstimator.from_config(cfg)


@pytest.fixture(scope="module")
def person():
    return max(clips.people(), key=lambda s: s.visible.sum() + s.box.h / 1000)


def pck(pose, gt, vis, size):
    err = np.linalg.norm(pose.xy()[vis] - gt[vis], axis=1)
    return float((err <= 0.1 * size).mean())


def photo(person, w, h, height_frac, fx, fy, seed=0):
    """The person at ``height_frac`` of the frame height with the patch's top-left at (fx, fy) of the room."""
    patch, kps, vis = clips.cutout(person)
    scale = height_frac * h / patch.shape[0]
    x = fx * (w - patch.shape[1] * scale)
    y = fy * (h - patch.shape[0] * scale)
    img, gt = clips.place(clips.background(w, h, seed), patch, kps, scale, x, y)
    return img, gt, vis, max(person.box.w, person.box.h) * scale


@pytest.mark.parametrize("height_frac,fx,fy", [(0.9, 0.5, 0.5), (0.6, 0.1, 0.3), (0.5, 0.9, 0.8)])
def test_stills_at_several_scales_and_positions_are_found_and_refined(estimator, person, height_frac, fx, fy):
    img, gt, vis, size = photo(person, 960, 540, height_frac, fx, fy)
    r = estimator.process(img, still=True)
    assert r.pose.present and r.new_track
    assert r.passes >= 2  # the whole frame, then the crop around its pose
    box = r.transform.box  # the last pass looked at the crop around the person, not the whole frame
    assert box.w < 960 and box.x <= gt[vis, 0].min() and box.x + box.w >= gt[vis, 0].max()
    assert pck(r.pose, gt, vis, size) >= 0.8
    # the refinement (and the search) is what puts the keypoints on the person: the whole frame alone scores
    # less or equal
    tr = estimator.pipeline.box_policy
    try:
        tr.refine, tr.still_search = 0, False
        first = estimator.process(img, still=True)
    finally:
        tr.refine, tr.still_search = 2, True
    assert first.passes == 1 and first.transform.box.w >= 960
    assert pck(r.pose, gt, vis, size) >= pck(first.pose, gt, vis, size)


def test_small_off_centre_person_is_found_by_the_tile_search(estimator, person):
    """A person 0.4 of a 1280x720 frame's height in its bottom-right corner: the whole frame (192x192) shows
    them about 40 px tall; the still's tile search (tiles of half the frame's width) finds them."""
    img, gt, vis, size = photo(person, 1280, 720, 0.4, 0.95, 0.9)
    tr = estimator.pipeline.box_policy
    tr.still_search = False
    try:
        plain = estimator.process(img, still=True)
    finally:
        tr.still_search = True
    r = estimator.process(img, still=True)
    assert r.passes > plain.passes
    assert r.pose.present and pck(r.pose, gt, vis, size) >= 0.7
    assert pck(r.pose, gt, vis, size) > pck(plain.pose, gt, vis, size)


def test_a_clip_cut_between_photos_is_reacquired_without_blending(estimator):
    """Three frames of one photo, then three of another person elsewhere: by the second frame after the
    cut the pose is on the new person, and the smoother restarted (no keypoint dragged towards the old)."""
    a, b = sorted(clips.people(), key=lambda s: -s.visible.sum())[:2]
    fa, ga, va, sa = photo(a, 960, 540, 0.8, 0.05, 0.5, seed=1)
    fb, gb, vb, sb = photo(b, 960, 540, 0.7, 0.95, 0.5, seed=2)
    estimator.reset()
    results = [estimator.process(f, ts=i / 30) for i, f in enumerate([fa] * 3 + [fb] * 3)]
    # the first person is followed: 5 or 6 of their 8 labelled joints (one flips at the PCK radius as the crop
    # moves: 0.625 or 0.75 from frame to frame, whether a new track is refined in its own frame or the next)
    assert pck(results[2].pose, ga, va, sa) >= 0.6
    assert results[3].new_track  # the cut is noticed on its own frame
    assert not results[4].new_track and not results[5].new_track
    for r in results[4:]:
        assert pck(r.pose, gb, vb, sb) >= 0.7
        # nothing of the old person left: every labelled keypoint nearer the new person's than the old one's
        old = np.linalg.norm(r.pose.xy()[vb] - gb[vb], axis=1)
        assert (old <= 0.25 * sb).mean() >= 0.9


def test_a_person_leaving_is_noticed_within_one_frame(estimator, person):
    """Cut detection off: the tracker itself sees that its crop no longer holds the person."""
    img, gt, vis, size = photo(person, 960, 540, 0.8, 0.5, 0.5)
    empty = clips.background(960, 540, seed=0)
    cut = estimator.pipeline.cut
    estimator.pipeline.cut = None
    try:
        estimator.reset()
        results = [estimator.process(f, ts=i / 30) for i, f in enumerate([img] * 3 + [empty] * 2)]
    finally:
        estimator.pipeline.cut = cut
    assert results[2].pose.present and not results[2].new_track
    assert not results[3].pose.present  # the first empty frame
    assert results[3].passes == 2  # the tracked crop, then the whole frame again at once
    assert not estimator.pipeline.box_policy.tracking


def test_a_frame_with_nobody(estimator):
    empty = clips.background(640, 480, seed=3)
    for still in (True, False):
        r = estimator.process(empty, still=still)
        assert not r.pose.present
        assert all(np.isfinite([k.x, k.y, k.score]).all() for k in r.pose.keypoints)
    assert not estimator.pipeline.box_policy.tracking


def test_eval_frame_mode_on_a_small_coco_file(edgepose_env):
    out = run_cli(["eval", "--annotations", EVAL_ANN, "--mode", "both", "--json"], edgepose_env, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    crop, frame = doc["crop"], doc["frame"]
    assert doc["mode"] == "both" and frame["images"] == 9 and frame["people"] == 9  # one pose per image
    assert crop["people"] == 9  # the crop mode on the same (matched) people
    assert doc["difference"]["pck@0.1"] == pytest.approx(frame["pck@0.1"] - crop["pck@0.1"])
    assert frame["found"] >= 8 and frame["pck@0.1"] > 0.5
    assert 1 <= frame["passes_first"] and frame["passes_tracked"] is None
    video = run_cli(["eval", "--annotations", EVAL_ANN, "--mode", "frame", "--frames", "3", "--json"],
                    edgepose_env, timeout=300)
    assert video.returncode == 0, video.stderr
    v = json.loads(video.stdout)
    assert v["mode"] == "frame" and v["frames"] == 3 and v["score_frame"] == 3
    assert v["passes_tracked"] is not None and v["pck@0.1"] > 0.5
    text = run_cli(["eval", "--annotations", EVAL_ANN, "--mode", "both", "--limit", "3"], edgepose_env, timeout=300)
    assert text.returncode == 0 and "crop   frame    diff" in text.stdout


def test_eval_frame_mode_bad_options(edgepose_env):
    for args in (["--frames", "3", "--score-frame", "4"], ["--frames", "0"], ["--limit", "0"]):
        out = run_cli(["eval", "--annotations", EVAL_ANN, "--mode", "frame", *args], edgepose_env)
        assert out.returncode == 64, out.stderr
        assert len(error_lines(out.stderr)) == 1 and "Traceback" not in out.stderr
