"""Several people per frame: persistent ids (inference/people.py), the letterboxed multi-person
pipeline (inference/multipose.py), the v2 payload with `people`, and `edgepose run` with the real
OpenPose model built from the mirror."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_paf import standing

from edgepose.core.payload import make_payload, pose_problem
from edgepose.core.people import Person, lead_pose
from edgepose.core.pose import OPENPOSE_KEYPOINT_NAMES as NAMES
from edgepose.core.pose import Keypoint
from edgepose.inference.engine import Engine
from edgepose.inference.multipose import MultiPipeline
from edgepose.inference.people import IdParams, PeopleTracker

from conftest import CALIB, payloads, run_cli


def body(cx: float, top: float = 40.0) -> np.ndarray:
    """A standing person in frame pixels (about 200 px tall)."""
    return standing(cx, top, 8.0)


def test_two_people_crossing_keep_their_ids():
    tracker = PeopleTracker()
    ids_a, ids_b = [], []
    for f in range(21):  # a walks right, b walks left; they pass through each other at frame 10
        a, b = body(100 + 15 * f), body(400 - 15 * f, 46)
        order = [a, b] if f % 2 else [b, a]  # the decoder's order says nothing about who is who
        got = dict(zip(("a", "b") if f % 2 else ("b", "a"), tracker.assign(order)))
        ids_a.append(got["a"])
        ids_b.append(got["b"])
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1 and ids_a[0] != ids_b[0]


def test_one_leaves_and_returns_within_the_grace_frames_keeps_the_id_later_gets_a_new_one():
    tracker = PeopleTracker(IdParams(max_missed=5))
    stay = body(100)
    first = tracker.assign([stay, body(400)])
    for _ in range(4):  # the second person is hidden for 4 frames
        assert tracker.assign([stay]) == first[:1]
    assert tracker.assign([body(404), stay]) == [first[1], first[0]]
    for _ in range(7):  # now gone longer than max_missed: retired
        assert tracker.assign([stay]) == first[:1]
    again = tracker.assign([stay, body(400)])
    assert again[0] == first[0] and again[1] not in first  # ids are never reused


def test_partial_people_still_match_and_a_stranger_is_new():
    tracker = PeopleTracker()
    a = body(100)
    [ida] = tracker.assign([a])
    half = a.copy()
    half[8:] = np.nan  # only the upper body found this frame
    assert tracker.assign([half]) == [ida]
    assert tracker.assign([a, body(500)])[0] == ida
    assert tracker.assign([]) == []


def test_v2_payload_carries_everyone_and_v1_fields_for_the_lead_person():
    people = [Person(3, 0.5, (Keypoint("nose", 10, 20, 0.9), Keypoint("neck", 12, 40, 0.8))),
              Person(7, 0.7, (Keypoint("neck", 100, 40, 0.8),))]
    pose = lead_pose(people, NAMES)
    doc = make_payload("dev", 1, 2.0, (640, 480), "openpose-thin-float32", pose, {}, people=people)
    assert doc["v"] == 2 and pose_problem(doc) is None
    assert [p["id"] for p in doc["people"]] == [3, 7]
    assert doc["people"][0]["box"] == {"x": 10, "y": 20, "width": 2, "height": 20}
    assert doc["people"][0]["keypoints"]["neck"] == {"x": 12, "y": 40, "score": 0.8}
    # the v1 view: the best person, every keypoint listed (not found: score 0)
    assert doc["present"] and doc["score"] == 0.7 and len(doc["keypoints"]) == 18
    assert doc["keypoints"][1] == {"name": "neck", "x": 100, "y": 40, "score": 0.8}
    nobody = make_payload("dev", 1, 2.0, (640, 480), "m", lead_pose([], NAMES), {}, people=[])
    assert nobody["v"] == 2 and nobody["people"] == [] and not nobody["present"]
    assert make_payload("dev", 1, 2.0, (640, 480), "m", pose, {})["v"] == 1  # single-person models: v1
    for bad in ([{"id": "x", "score": 1, "keypoints": {}}], [{"id": 1, "score": 1, "keypoints": {"a": {"x": 1}}}],
                {"id": 1}, [{"id": 1, "score": 1, "keypoints": {"a": {"x": 1e9, "y": 0, "score": 1}}}]):
        assert pose_problem(dict(doc, people=bad)) is not None


def test_one_person_made_of_two_crossing_people_does_not_stop_either_track():
    """While B passes in front of A the decoder finds one person made of both (here: every part half way
    between A's and B's, which stands still while A and B walk on).  The track it is matched to coasts on
    its velocity instead of stopping with the mix: when both are found again each has their own id."""
    tracker = PeopleTracker()
    ids = []
    for f in range(26):
        a, b = body(100 + 14 * f), body(380 - 14 * f, 46)
        if 9 <= f <= 14:
            assert len(tracker.assign([(a + b) / 2])) == 1
        else:
            ids.append(tuple(tracker.assign([a, b])))
    assert ids[0][0] != ids[0][1]
    assert all(i == ids[0] for i in ids), ids


@pytest.fixture(scope="module")
def openpose(built):
    return built("openpose-thin", "float32", variant="openpose-thin-float32")[0]


@pytest.mark.slow
def test_frames_are_letterboxed_and_people_mapped_back_to_frame_pixels(openpose):
    engine = Engine(openpose, threads=2)
    photo = cv2.imread(str(CALIB / "p2.jpg"))
    # the same photo inside a tall portrait frame, 37 px right and 300 px down: the same people, shifted
    tall = np.zeros((photo.shape[0] * 3, photo.shape[1] + 60, 3), np.uint8)
    tall[300:300 + photo.shape[0], 37:37 + photo.shape[1]] = photo
    pipe = MultiPipeline(engine, NAMES)
    res = pipe.process(tall, 0.0, still=True)
    box = res.transform.box
    assert abs(box.w / box.h - 432 / 368) < 1e-9 and box.h == tall.shape[0]  # padded, not stretched
    direct = pipe.process(photo, 0.0, still=True).people
    assert len(direct) == len(res.people) == 2
    for p in direct:  # each person found in both, same parts within the grid's resolution at each scale
        neck = next(k for k in p.keypoints if k.name == "neck")
        q = min(res.people, key=lambda r: abs(next(k.x for k in r.keypoints if k.name == "neck") - 37 - neck.x))
        qneck = next(k for k in q.keypoints if k.name == "neck")
        assert abs(qneck.x - 37 - neck.x) < 8 and abs(qneck.y - 300 - neck.y) < 8
    assert sorted(p.id for p in res.people) == [1, 2]


@pytest.mark.slow
def test_run_publishes_v2_payloads_with_every_person(openpose, quant_env, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("p2.jpg", "p3.jpg"):
        (frames / name).write_bytes((CALIB / name).read_bytes())
    r = run_cli(["run", "--source", frames, "--model", openpose, "--sink", "stdout", "--max-frames", "2"], quant_env,
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    docs = payloads(r.stdout)
    assert [d["v"] for d in docs] == [2, 2] and [len(d["people"]) for d in docs] == [2, 3]
    for d in docs:
        assert pose_problem(d) is None and d["present"]
        for p in d["people"]:
            assert set(p) == {"id", "score", "box", "keypoints"} and len(p["keypoints"]) >= 4
            assert set(p["keypoints"]) <= set(NAMES)
            assert all(0 <= k["x"] <= d["frame"]["width"] and 0 <= k["y"] <= d["frame"]["height"]
                       for k in p["keypoints"].values())


def _two_people_payload():
    a, b = body(100), body(400, 46)
    people = [Person(i, 0.8, tuple(Keypoint(n, float(x), float(y), 0.8) for n, (x, y) in zip(NAMES, xy)))
              for i, xy in ((4, a), (9, b))]
    return make_payload("dev", 5, 1.0, (640, 480), "openpose-thin-float32", lead_pose(people, NAMES), {},
                        people=people), a, b


def test_sub_view_and_preview_drawing_show_everyone_with_their_id():
    from edgepose.output import draw
    from edgepose.tools.sub import format_pose
    from edgepose.tools.viewer import Canvas

    doc, a, b = _two_people_payload()
    assert " 2 people [#4=0.80 #9=0.80] " in format_pose(doc)
    canvas = draw.blank_canvas(640, 480)
    img = draw.render(canvas, doc, fps=10.0)
    changed = np.abs(img.astype(int) - canvas.astype(int)).sum(axis=2) > 0
    for xy in (a, b):  # each person's hips (bones and dots drawn there), not just the lead person's
        hx, hy = xy[NAMES.index("right_hip")]
        assert changed[int(hy) - 3:int(hy) + 3, int(hx) - 3:int(hx) + 3].any()
    # a person's missing parts are not drawn at (0, 0)
    one = dict(doc, people=[dict(doc["people"][0], keypoints={"neck": doc["people"][0]["keypoints"]["neck"],
                                                               "nose": doc["people"][0]["keypoints"]["nose"]})])
    img = draw.render(canvas, one)
    assert (img[470:, :10] == canvas[470:, :10]).all()
    # the viewer scales everyone to its canvas
    _, fitted = Canvas((320, 240)).fit(doc)
    neck_x = doc["people"][1]["keypoints"]["neck"]["x"]
    assert fitted["people"][1]["keypoints"]["neck"]["x"] == pytest.approx(neck_x / 2)


@pytest.mark.slow
def test_calibrate_fps_sweeps_a_multi_person_model(openpose, quant_env):
    """calibrate-fps builds a multi-person model's own pipeline (it once built the single-person one and
    failed on its decoder with exit 65). A float32 build has no fidelity report, so it needs --allow-unverified."""
    r = run_cli(["calibrate-fps", "--source", "synthetic:320x240", "--model", openpose, "--config", "/dev/null",
                 "--quick", "--seconds", "2", "--threads", "1", "--xnnpack", "on", "--allow-unverified", "--json"],
                quant_env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    rep = json.loads(r.stdout)
    assert rep["choice"]["model"] == str(openpose) and rep["candidates"][0]["fps"] > 0


def test_python_api_gives_everyone_and_the_drop_thresholds_are_config(openpose):
    from edgepose import PoseEstimator

    frame = cv2.imread(str(CALIB / "p3.jpg"))
    est = PoseEstimator(openpose, threads=2)
    people = est.process(frame, still=True).people
    assert len(people) == 3 and est.estimate(frame, still=True).present
    parts = sorted(len(p.keypoints) for p in people)
    strict = PoseEstimator(openpose, threads=2, min_parts=parts[-1]).process(frame, still=True).people
    assert len(strict) == sum(n >= parts[-1] for n in parts) < 3
    assert PoseEstimator(openpose, threads=2, min_person_score=10.0).process(frame, still=True).people == ()


@pytest.mark.slow
def test_mqtt_meta_status_and_v2_poses_of_a_multi_person_model(openpose, quant_env, tmp_path):
    import subprocess
    import sys

    import broker as brokers
    from conftest import REPO
    from mqtt_util import Collector, wait_for

    if not brokers.available():
        pytest.skip("mosquitto is not installed")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):  # a long enough run for a status to carry the people count
        (frames / f"{i:03d}.jpg").write_bytes((CALIB / "p3.jpg").read_bytes())
    b = brokers.Broker(tmp_path).start()
    c = Collector(b, "edgepose/multi/#")
    env = dict(quant_env, EDGEPOSE_MQTT_STATUS_INTERVAL="0.5")
    proc = subprocess.Popen([sys.executable, "-m", "edgepose.cli", "run", "--source", str(frames), "--model",
                             str(openpose), "--sink", "mqtt", "--broker", f"{b.host}:{b.port}", "--device", "multi",
                             "--fps", "4"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "log").open("w"))
    try:
        status = wait_for(lambda: [m.json() for m in c.of("status") if "people" in m.json()], 200)
        assert status, (tmp_path / "log").read_text()[-2000:]
        assert status[-1]["people"] == 3
        meta = c.of("meta")[-1].json()
        assert meta["family"] == "paf" and meta["keypoints"] == list(NAMES) and len(meta["skeleton"]) == 17
        poses = [m.json() for m in c.of("pose")]
        assert poses and all(p["v"] == 2 and len(p["people"]) == 3 for p in poses)
        # photos (image files) are stills: each numbers its people 1..n
        assert all(sorted(q["id"] for q in p["people"]) == [1, 2, 3] for p in poses)
    finally:
        proc.kill()
        proc.wait()
        c.close()
        b.kill()


def test_a_person_found_by_a_few_parts_is_still_matched_at_their_whole_size():
    """The matching scale is the size of all the parts the track knows (found now or carried), so a frame
    where only the head is found does not make the next frame's step (a walk) look like a stranger."""
    tracker = PeopleTracker()
    [ida] = tracker.assign([body(100)])
    head = np.full((len(NAMES), 2), np.nan)
    head[[0, 14, 15, 16, 17]] = body(100)[[0, 14, 15, 16, 17]]  # nose, eyes and ears only
    assert tracker.assign([head]) == [ida]
    assert tracker.assign([body(110)]) == [ida]


def test_a_hidden_person_is_predicted_with_their_walking_velocity_not_the_last_noisy_step():
    """A walks right, 12 px a frame, behind B (who walks left); A's last detection before A is hidden is
    8 px off (the decoder mixing the two), then only B is found for 6 frames.  A's velocity is the
    smoothed walk, a poor match moves it less, and the longer A is unseen the further from the
    prediction A may be found: when both are found again each has their own id."""
    tracker = PeopleTracker()
    ids = []
    for f in range(30):
        a, b = body(60 + 12 * f), body(440 - 12 * f, 46)
        if f == 12:
            a = a + [8.0, 0.0]
        got = tracker.assign([b] if 13 <= f <= 18 else [a, b])
        ids.append(got if len(got) == 2 else [None, got[0]])
    first = ids[0]
    assert all(i[1] == first[1] for i in ids)
    assert all(i == first for i in ids[19:])


@pytest.fixture(scope="module")
def openpose_fast(built):
    return built("openpose-thin", "float32", variant="openpose-thin-fast-float32")[0]


@pytest.mark.slow
def test_no_id_swap_between_people_who_stay_in_view_on_a_clip_of_real_people(openpose_fast):
    """issue 22's id goal: three real people cut out of eval-multi photos (benchmarks/clips.py), A and B
    crossing (B in front, A hidden for a few frames), C walking out of the frame and back after longer
    than tracking.max_missed; the real fast model through the pipeline `edgepose run` builds (smoothing
    on). A and B each keep one id whenever found; C comes back with a new id (retired meanwhile), never
    someone else's."""
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import clips
    import people_ids

    from edgepose import PoseEstimator

    clip = clips.crossing_clip(frames=48, gone=16)
    tracks = people_ids.score(clip, people_ids.run_clip(PoseEstimator(openpose_fast, threads=2), clip))
    a, b, c = tracks
    assert a.stays and b.stays and not c.stays
    assert sum(t.swaps for t in tracks) == 0
    for t in (a, b):  # found in most frames (a tracker that finds nobody has no swaps either) under one id
        assert t.found() >= 0.85 * len(clip.frames) and t.continuity() == 1.0, t.runs()
    assert a.main_id() != b.main_id()
    assert c.found() >= 0.8 * c.in_view() and c.fragments_after_leaving == 1, c.runs()


def _jittered_outputs(rng, frames: int, noise: float):
    """Rendered (perfect-model) outputs of two still people a and b on the 432x368 model's 54x46 grid, each
    part jittered by ``noise`` px per frame; a's right ankle is missing on odd frames, which drops a below b in
    the decoder's order (so a smoother kept per position in that order would mix the two)."""
    from edgepose.inference import paf

    a, b = body(120, 60), body(300, 70)
    outs = []
    for f in range(frames):
        ja = a + rng.normal(0, noise, a.shape)
        jb = b + rng.normal(0, noise, b.shape)
        if f % 2:
            ja[NAMES.index("right_ankle")] = np.nan
        outs.append(paf.render([ja / 8, jb / 8], (54, 46)))
    return a, b, outs


def test_each_person_is_smoothed_with_their_own_filter(openpose):
    """Per-id smoothing at the decoder level (rendered outputs through the real decoder, tracker and
    smoother; the engine only gives the pipeline its input size): each person's jitter drops, and the two
    people never blend although the decoder lists them in alternating order."""
    from edgepose.core.config import SmoothingConfig
    from edgepose.core.geometry import Box, CropTransform
    from edgepose.inference import smoothing

    engine = Engine(openpose, threads=1)
    transform = CropTransform(Box(0, 0, 432, 368), 432, 368)  # grid * 8 = frame pixels
    a, b, outs = _jittered_outputs(np.random.default_rng(0), 60, 3.0)
    errors = {}
    for kind, make in (("raw", None), ("smoothed", smoothing.factory(SmoothingConfig()))):
        pipe = MultiPipeline(engine, NAMES, tracker=PeopleTracker(), smoother=make)
        truth, orders, errors[kind] = {}, set(), []
        for f, out in enumerate(outs):
            people = pipe.people(out, transform, ts=f / 15)
            assert len(people) == 2
            orders.add(tuple(p.id for p in people))
            for p in people:
                xy = np.array([[k.x, k.y] for k in p.keypoints])
                idx = [NAMES.index(k.name) for k in p.keypoints]
                if p.id not in truth:  # the id's person: a (left) or b (right), from its first frame
                    truth[p.id] = a if xy[:, 0].mean() < 210 else b
                err = np.hypot(*(xy - truth[p.id][idx]).T)
                assert err.max() < 15, (kind, f, p.id)  # a blend of a and b (180 px apart) is ~90 px off
                if f >= 10:  # once the filter has settled
                    errors[kind] += list(err)
        assert len(truth) == 2 and len(orders) == 2  # two ids, listed in both orders
    raw, smoothed = np.mean(errors["raw"]), np.mean(errors["smoothed"])
    assert smoothed < 0.6 * raw, (raw, smoothed)


def test_a_new_id_starts_its_own_smoother_and_a_retired_ids_smoother_is_dropped(openpose):
    """Person a is seen, then nobody for longer than max_missed (a is retired and their smoother dropped);
    a person found where a was gets a new id, published exactly where found (a fresh filter, nothing of
    a's); a still photo is not smoothed."""
    from edgepose.core.config import SmoothingConfig
    from edgepose.core.geometry import Box, CropTransform
    from edgepose.inference import paf, smoothing

    engine = Engine(openpose, threads=1)
    transform = CropTransform(Box(0, 0, 432, 368), 432, 368)
    pipe = MultiPipeline(engine, NAMES, tracker=PeopleTracker(IdParams(max_missed=2)),
                         smoother=smoothing.factory(SmoothingConfig()))
    a, b, outs = _jittered_outputs(np.random.default_rng(2), 10, 3.0)
    empty = paf.render([], (54, 46))
    ids = [pipe.people(paf.render([a / 8 + 0.3 * (f % 2)], (54, 46)), transform, ts=f / 15)[0].id
           for f in range(8)]
    assert len(set(ids)) == 1
    for f in range(8, 12):
        assert pipe.people(empty, transform, ts=f / 15) == []
    assert pipe.tracker.ids() == set()
    assert pipe._smoothers == {}  # (private: the retired id's filter is gone, not kept forever)
    newcomer = a + 2.5  # where a was: within a's filter's reach, had it been kept
    out = paf.render([newcomer / 8], (54, 46))
    [p] = pipe.people(out, transform, ts=12 / 15)
    [raw] = MultiPipeline(engine, NAMES).people(out, transform)
    assert p.id not in ids and p.keypoints == raw.keypoints
    # a still is not smoothed: the same output as a pipeline without smoothing
    assert pipe.people(outs[1], transform, still=True, ts=13 / 15) == MultiPipeline(engine, NAMES).people(
        outs[1], transform, still=True)


@pytest.mark.slow
def test_smoothing_per_id_reduces_real_jitter_of_everyone(openpose_fast):
    """The real fast model on a still two-person photo with fresh sensor noise in every frame (a video:
    not stills): with [smoothing] on (the default) each person's keypoints move less from frame to frame
    than with it off, under the same two ids."""
    from edgepose import PoseEstimator

    photo = cv2.imread(str(CALIB / "p2.jpg"))
    rng = np.random.default_rng(0)
    frames = [np.clip(photo + rng.normal(0, 6, photo.shape), 0, 255).astype(np.uint8) for _ in range(24)]
    jitter = {}
    for smoothing in (False, True):
        est = PoseEstimator(openpose_fast, threads=2, smoothing=smoothing)
        tracks: dict = {}
        for f, frame in enumerate(frames):
            for p in est.process(frame, ts=f / 15).people:
                for k in p.keypoints:
                    tracks.setdefault((p.id, k.name), []).append((f, k.x, k.y))
        assert len({pid for pid, _ in tracks}) == 2
        steps = [np.hypot(x1 - x0, y1 - y0) for seq in tracks.values()
                 for (f0, x0, y0), (f1, x1, y1) in zip(seq[4:], seq[5:]) if f1 == f0 + 1]
        jitter[smoothing] = float(np.mean(steps))
    assert jitter[True] < 0.6 * jitter[False], jitter


def test_one_person_made_of_two_keeps_the_id_it_had_on_a_near_tie():
    """A and B stand close, then only one person is found between them (one hides the other): first nearer
    B (B's id), then a hair nearer A than B.  The person keeps B's id on such a near tie (a track given a
    person last frame is preferred by IdParams.keep) and changes only once clearly nearer A; when both are
    found again each has their own id."""
    tracker = PeopleTracker()
    first = tracker.assign([body(100), body(140)])
    for _ in range(3):
        assert tracker.assign([body(100), body(140)]) == first
    assert tracker.assign([body(121)]) == first[1:]
    for _ in range(2):
        assert tracker.assign([body(119.5)]) == first[1:]  # without the preference: A's id
    assert tracker.assign([body(110)]) == first[:1]
    assert tracker.assign([body(100), body(140)]) == first
