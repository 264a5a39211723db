"""Tracker: crops around a confident pose, falls back to the whole frame when the person is lost."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgepose.core.geometry import CropTransform, whole_frame_box
from edgepose.core.pose import KEYPOINT_NAMES, Pose
from edgepose.inference.tracking import Tracker, search_boxes

from conftest import MIRROR, REPO

W, H = 1280, 720


def pose_at(cx, cy, height=180.0, score=0.8):
    rng = np.random.default_rng(0)
    xy = np.stack([cx + rng.uniform(-0.2, 0.2, 14) * height, cy + np.linspace(-0.5, 0.5, 14) * height], 1)
    return Pose.from_arrays(KEYPOINT_NAMES, xy, np.full(14, score), 0.3)


def test_starts_whole_frame_then_follows_a_confident_pose():
    tr = Tracker(192, 192, min_score=0.25, margin=1.5, search=0)
    whole = whole_frame_box(W, H, 192, 192)
    assert tr.crop_box(W, H) == whole
    tr.update(pose_at(400, 300), CropTransform(whole, 192, 192))
    b = tr.crop_box(W, H)
    assert b.w == pytest.approx(b.h) and b.h == pytest.approx(180 * 1.5)
    assert b.x + b.w / 2 == pytest.approx(400, abs=40) and b.y + b.h / 2 == pytest.approx(300, abs=1)


def test_falls_back_after_patience_and_searches_tiles():
    tr = Tracker(192, 192, patience=1, search=0.5)
    whole = whole_frame_box(W, H, 192, 192)
    t = CropTransform(whole, 192, 192)
    tr.update(pose_at(400, 300), t)
    kept = tr.crop_box(W, H)
    tr.update(pose_at(400, 300, score=0.05), t)  # one bad frame: keep the box
    assert tr.crop_box(W, H) == kept
    tr.update(pose_at(400, 300, score=0.05), t)  # still bad: lost
    assert not tr.tracking and tr.crop_box(W, H) == whole
    tiles = search_boxes(W, H, 192, 192, tile=0.5)[1:]
    seen = []
    for _ in range(2 * len(tiles)):
        tr.update(pose_at(0, 0, score=0.0), t)
        seen.append(tr.crop_box(W, H))
    assert set(seen) == set(tiles) | {whole}  # whole frame alternates with every tile
    assert all(b.x >= 0 and b.y >= 0 and b.x + b.w <= W and b.y + b.h <= H for b in tiles)


@pytest.mark.parametrize("tile", [0.1, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("frame,model", [((1280, 720), (192, 192)), ((720, 1280), (192, 192)),
                                         ((1280, 720), (256, 192))])
def test_search_tiles_keep_the_model_aspect_and_cover_the_frame(tile, frame, model):
    """Tiles are never squeezed (a 1280x720 frame with search 1.0 gets 720x720 tiles, not one 1280x720
    crop the square model would see squashed), stay inside the frame and reach all of it."""
    (fw, fh), (mw, mh) = frame, model
    tiles = search_boxes(fw, fh, mw, mh, tile=tile)[1:]
    assert tiles and all(b.w / b.h == pytest.approx(mw / mh) for b in tiles)
    assert all(b.x >= -1e-9 and b.y >= -1e-9 and b.x + b.w <= fw + 1e-9 and b.y + b.h <= fh + 1e-9 for b in tiles)
    assert min(b.x for b in tiles) == pytest.approx(0) and max(b.x + b.w for b in tiles) == pytest.approx(fw)
    assert min(b.y for b in tiles) == pytest.approx(0) and max(b.y + b.h for b in tiles) == pytest.approx(fh)


def test_search_below_a_tenth_is_refused():
    from edgepose.core import config
    from edgepose.core.errors import ConfigError
    from edgepose.inference import tracking

    cfg = config.Config()
    cfg.tracking.search = 0.01  # 22,000 tiles of 13 px
    with pytest.raises(ConfigError, match="tracking.search must be 0"):
        tracking.from_config(cfg, 192, 192)
    cfg.tracking.search = 0.0
    assert tracking.from_config(cfg, 192, 192).search == 0.0


def test_pipeline_falls_back_when_the_person_leaves_the_frame():
    """Real CPM model on frames built from an eval photo; then the person walks out of view."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import clips

    from edgepose.inference.engine import Engine
    from edgepose.inference.pipeline import Pipeline

    eng = Engine(Path(MIRROR) / "cpm" / "model.tflite", threads=2)
    person = max(clips.people(), key=lambda s: s.visible.sum() + s.box.h / 1000)
    clip = clips.moving_clip(person, frame_w=640, frame_h=480, height_frac=0.6, frames=4, seed=1)
    empty = clips.background(640, 480, seed=1)
    tr = Tracker(192, 192, search=0, refine=0)  # refine=0: the first frame is the whole-frame pass alone
    pipe = Pipeline(eng, box_policy=tr)
    whole = whole_frame_box(640, 480, 192, 192)
    boxes = []
    for i, f in enumerate(clip.frames + [empty] * 4):
        boxes.append(pipe.process(f, i / 30).transform.box)
    assert boxes[0] == whole
    assert any(b != whole for b in boxes[1:4])  # the person was followed
    assert boxes[-1] == whole and not tr.tracking  # gone: back to the whole frame


def test_score_scale_adapts_thresholds_to_the_model():
    """Hourglass-like scores (about 0.6 of CPM's) are followed once the thresholds are scaled."""
    whole = CropTransform(whole_frame_box(W, H, 192, 192), 192, 192)
    pose = pose_at(400, 300, score=0.2)  # pose score 0.2 < min_score 0.25
    raw = Tracker(192, 192, min_score=0.25, search=0)
    raw.update(pose, whole)
    assert not raw.tracking
    scaled = Tracker(192, 192, min_score=0.25, search=0, score_scale=0.59)
    scaled.update(pose, whole)
    assert scaled.tracking
    scaled.update(pose_at(400, 300, score=0.1), whole)  # 0.1 < 0.25 * 0.59: a miss (patience 1)
    scaled.update(pose_at(400, 300, score=0.1), whole)
    assert not scaled.tracking
    with pytest.raises(ValueError):
        Tracker(192, 192, score_scale=0)


class ScriptedLook:
    """The model's answers for one frame, in order: a scripted ``look`` (the tracker's logic alone; the real
    model runs in test_pipeline_restarts_smoothing_on_the_first_crop_of_a_new_track)."""

    def __init__(self, *poses):
        self.poses, self.boxes = list(poses), []

    def __call__(self, box):
        self.boxes.append(box)
        return self.poses.pop(0), CropTransform(box, 192, 192)


def test_a_video_new_track_is_refined_on_the_next_frame_not_the_same_one():
    """refine_video 0 (default): the frame that finds the person costs one model run; the next frames run on
    the crop around the last pose and, until one moves the pose by less than refine_tolerance (refine
    frames at most), are judged as refining passes are (no jump test against the coarser pose) with
    smoothing restarted from each; then the jump test is back."""
    tr = Tracker(192, 192, search=0)
    assert tr.refine_video == 0 and tr.refine == 2 and tr.refine_tolerance == 0.05
    coarse, refined = pose_at(400, 300), pose_at(400 + 0.7 * 180, 300)  # 0.7 pose sizes apart: a "jump"
    found = tr.locate(ScriptedLook(coarse), W, H)
    assert found.passes == 1 and found.new_track and not found.restart
    look = ScriptedLook(refined)
    nxt = tr.locate(look, W, H)
    assert nxt.passes == 1 and not nxt.new_track and nxt.restart and nxt.pose is refined
    assert look.boxes == [tr.box_for(coarse)]
    settled = tr.locate(ScriptedLook(pose_at(400 + 0.7 * 180, 302)), W, H)  # moved 0.01: settled here
    assert settled.passes == 1 and not settled.new_track and settled.restart
    steady = tr.locate(ScriptedLook(pose_at(400 + 0.7 * 180, 304)), W, H)
    assert steady.passes == 1 and not steady.new_track and not steady.restart
    jumped = tr.locate(ScriptedLook(pose_at(400, 300), pose_at(400, 300)), W, H)  # 0.7 pose sizes back
    assert jumped.passes == 2 and jumped.new_track  # the jump test applies again: searched at once


def test_deferred_refinement_ends_after_refine_frames():
    tr = Tracker(192, 192, search=0, refine=1)
    tr.locate(ScriptedLook(pose_at(400, 300)), W, H)
    assert tr.locate(ScriptedLook(pose_at(440, 300)), W, H).restart  # moved 0.22: would settle further
    assert not tr.locate(ScriptedLook(pose_at(480, 300)), W, H).restart  # but refine 1 was its last
    off = Tracker(192, 192, search=0, refine=0)  # no refinement at all: tracked as usual from the next frame
    off.locate(ScriptedLook(pose_at(400, 300)), W, H)
    assert not off.locate(ScriptedLook(pose_at(410, 300)), W, H).restart


def test_refine_video_refines_a_new_track_in_its_own_frame_and_stills_use_refine():
    tr = Tracker(192, 192, search=0, refine_video=2)
    found = tr.locate(ScriptedLook(pose_at(400, 300), pose_at(420, 300), pose_at(420, 300)), W, H)
    assert found.passes == 3 and found.new_track and not found.restart
    nxt = tr.locate(ScriptedLook(pose_at(420, 300)), W, H)
    assert not nxt.restart
    still = Tracker(192, 192, search=0)  # refine 2, refine_video 0: stills are refined all the same
    r = still.locate(ScriptedLook(pose_at(400, 300), pose_at(420, 300), pose_at(420, 300)), W, H, still=True)
    assert r.passes == 3 and r.new_track


def test_pipeline_restarts_smoothing_on_the_first_crop_of_a_new_track(model_cache):
    """Real MoveNet on a clip of a walking person: the first frame is the whole-frame pass alone, the second
    (on the crop around it) is published as the model decoded it, not blended with the coarse first pose;
    from the fourth on (refine 2: two deferred refining frames at most) poses are smoothed."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import clips

    from edgepose.inference.estimator import PoseEstimator

    person = max(clips.people(), key=lambda s: s.visible.sum() + s.box.h / 1000)
    clip = clips.moving_clip(person, frame_w=640, frame_h=480, height_frac=0.5, frames=4, seed=2)
    kw = dict(threads=1, model_dir=model_cache, mirror=str(MIRROR))
    smooth, raw = PoseEstimator("movenet-lightning", **kw), PoseEstimator("movenet-lightning", smoothing=False, **kw)
    got = [(smooth.process(f, ts=i / 30), raw.process(f, ts=i / 30)) for i, f in enumerate(clip.frames)]
    assert [s.passes for s, _ in got] == [1, 1, 1, 1] and got[0][0].new_track
    assert not any(s.new_track for s, _ in got[1:])
    assert got[1][0].transform.box != got[0][0].transform.box  # the second frame ran on the crop
    assert got[1][0].pose == got[1][1].pose  # restarted: the model's own pose
    assert got[3][0].pose != got[3][1].pose  # smoothed again


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (320, 240), (642, 480), (1920, 1080)])
def test_scene_cut_thumbnail_is_opencvs_area_resize(size):
    """The scene-cut thumbnail (a faster path for frame sides that are multiples of 16) gives exactly the
    pixels of ``cv2.resize(..., INTER_AREA)``: on photos, on noise (many roundings at .5) and on sizes
    that take OpenCV's own path."""
    import cv2

    from edgepose.inference.tracking import thumbnail

    from conftest import CALIB

    rng = np.random.default_rng(1)
    photos = [cv2.resize(cv2.imread(str(p)), size) for p in sorted(Path(CALIB).glob("*.jpg"))[:4]]
    noise = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8),
             (rng.integers(0, 3, (size[1], size[0], 3)) * 127 + rng.integers(0, 2, (size[1], size[0], 3)))
             .astype(np.uint8)]
    for img in photos + noise:
        want = cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA)
        got = thumbnail(img, 16)
        assert got.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got, want)
