"""Model families and the resolved model: catalogue traits, recognition of a model file by its output,
MoveNet Lightning end to end (payload, meta, tracking a small person, eval by keypoint name), and the
Python API of the README.  Real models from the ../shared mirror throughout."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepose.core.errors import ConfigError, ModelError
from edgepose.core.pose import COCO_KEYPOINT_NAMES, COCO_SKELETON, KEYPOINT_NAMES, SKELETON, skeleton_for
from edgepose.models import registry, resolved

from conftest import CALIB, EVAL_ANN, MIRROR, REPO, VIDEOS, error_lines, payloads, run_cli

MOVENET = MIRROR / "movenet-lightning" / "model.tflite"


def test_entry_traits_come_from_the_entry_and_its_source_chain(tmp_path):
    cat = tmp_path / "catalogue.toml"
    cat.write_text('[base]\ndescription = "b"\noutput = { shape = [1, 48, 48, 14], score_scale = 0.5 }\n'
                   '[cut]\ndescription = "c"\nrecipe = "int8"\nsource = "base"\n'
                   'output = { shape = [1, 24, 24, 14], cut_upsample = 4 }\n'
                   '[reg]\ndescription = "r"\nfamily = "movenet"\n'
                   '[reg-int8]\ndescription = "r8"\nrecipe = "int8"\nsource = "reg"\n'
                   '[bad]\ndescription = "x"\noutput = { score_scale = "high" }\n'
                   '[alien]\ndescription = "x"\nfamily = "posenet"\n')
    c = registry.load_catalogue(cat)
    assert resolved.entry_traits("cut", c) == ("heatmap", 4, 0.5)
    assert resolved.entry_traits("base", c) == ("heatmap", 1, 0.5)
    assert resolved.entry_traits("reg-int8", c) == ("movenet", 1, 1.0)  # a variant inherits its source's family
    assert resolved.entry_traits(None, c) == (None, 1, 1.0)  # not a catalogue model: nothing known
    with pytest.raises(ModelError, match="bad"):
        resolved.entry_traits("bad", c)
    with pytest.raises(ModelError, match="unknown family 'posenet'"):
        resolved.entry_traits("alien", c)
    packaged = registry.load_catalogue()
    assert resolved.entry_traits("hourglass", packaged)[2] < 1
    assert resolved.entry_traits("movenet-lightning", packaged)[0] == "movenet"


def test_resolved_models_of_the_catalogue(model_cache):
    cpm = resolved.resolve_model("cpm", cache_dir=model_cache, mirror=str(MIRROR))
    assert (cpm.family.name, cpm.keypoint_names, cpm.skeleton, cpm.grid) == (
        "heatmap", KEYPOINT_NAMES, SKELETON, (96, 96))
    assert (cpm.input_color, cpm.input_dtype, cpm.input_size, cpm.entry) == ("BGR", "float32", (192, 192), "cpm")
    mn = resolved.resolve_model("movenet-lightning", cache_dir=model_cache, mirror=str(MIRROR))
    assert (mn.family.name, mn.keypoint_names, mn.skeleton, mn.grid) == ("movenet", COCO_KEYPOINT_NAMES,
                                                                         COCO_SKELETON, None)
    assert (mn.input_color, mn.input_dtype, mn.input_size, mn.output_shape) == (
        "RGB", "uint8", (192, 192), (1, 1, 17, 3))
    assert mn.decoder("argmax") is resolved.regression_decoder  # heatmap decoders do not apply
    with pytest.raises(ConfigError, match="'heatmap', but catalogue model 'movenet-lightning' is a 'movenet'"):
        resolved.resolve_model("movenet-lightning", family="heatmap", cache_dir=model_cache, mirror=str(MIRROR))


def _non_pose_model(path: Path) -> Path:
    """A valid .tflite that is no pose model: MoveNet with its output moved to an inner [1, 17] int32
    tensor (ArgMax_1), rewritten with the flatbuffer tools of the build package."""
    from edgepose.build.quantize import read_model, write_model

    m = read_model(MOVENET.read_bytes())
    sg = m.subgraphs[0]
    argmax = next(i for i, t in enumerate(sg.tensors) if t.name == b"ArgMax_1")
    sg.outputs = [argmax]
    path.write_bytes(write_model(m))
    return path


def test_a_model_file_is_recognised_by_its_output(tmp_path):
    """Copies under other names (so no catalogue name helps), one with a byte appended (so its checksum
    is no catalogue entry's either): the family comes from the output signature alone."""
    for src, family, names in (("movenet-lightning", "movenet", COCO_KEYPOINT_NAMES),
                               ("cpm", "heatmap", KEYPOINT_NAMES)):
        copy = tmp_path / f"my-{src}.tflite"
        shutil.copy(MIRROR / src / "model.tflite", copy)
        m = resolved.model_at(copy)
        assert (m.family.name, m.keypoint_names, m.entry, m.name) == (family, names, src, f"my-{src}")
        own = tmp_path / f"own-{src}.tflite"
        own.write_bytes((MIRROR / src / "model.tflite").read_bytes() + b"\0" * 16)
        m = resolved.model_at(own)
        assert (m.family.name, m.keypoint_names, m.entry) == (family, names, None)
        with pytest.raises(ModelError, match="is not a (heatmap|movenet) model"):
            resolved.model_at(own, family="heatmap" if family == "movenet" else "movenet")
    hg = resolved.model_at(tmp_path / "own-cpm.tflite")
    assert hg.score_scale == 1.0 and hg.cut_upsample == 1  # the user's own heatmap model: defaults
    alien = _non_pose_model(tmp_path / "alien.tflite")
    with pytest.raises(ModelError, match=r"cannot tell what kind of pose model .*output \[1, 17\]"):
        resolved.model_at(alien)
    with pytest.raises(ConfigError, match="unknown model family 'bogus'"):
        resolved.model_at(alien, family="bogus")


def test_a_catalogue_model_given_by_path_keeps_its_entry_traits(tmp_path):
    """`--model /path/model.tflite` of a catalogue model is still that model: a byte-identical copy of an
    upstream file (sha256), or a build whose report (`models quantize --out`) names its entry and records
    the file's sha256.  Anything else is a model of the user's own (defaults)."""
    from edgepose.models.registry import sha256_of

    copy = tmp_path / "copy" / "hourglass.tflite"
    copy.parent.mkdir()
    shutil.copy(MIRROR / "hourglass" / "model.tflite", copy)
    assert resolved.model_at(copy).score_scale == resolved.entry_traits("hourglass", registry.load_catalogue())[2] < 1

    own = tmp_path / "built" / "model.tflite"  # stands in for a build: only its bytes and report matter
    own.parent.mkdir()
    own.write_bytes((MIRROR / "hourglass" / "model.tflite").read_bytes() + b"\0" * 16)
    assert resolved.model_at(own).score_scale == 1.0  # no report: the user's own model
    report = own.with_name("model.report.json")
    report.write_text(json.dumps({"model": "hourglass-int8", "sha256": sha256_of(own)}))
    m = resolved.model_at(own)
    assert (m.entry, m.score_scale < 1, m.name) == ("hourglass-int8", True, "model")  # named after the file
    report.write_text(json.dumps({"model": "hourglass-int8", "sha256": "0" * 64}))  # another file's
    assert resolved.model_at(own).entry is None
    for junk in ("[1, 2", "[1, 2]", '{"model": ["hourglass-int8"], "sha256": 1}'):
        report.write_text(junk)
        assert resolved.model_at(own).entry is None


def test_movenet_run_gives_17_named_keypoints_on_the_person(edgepose_env):
    r = run_cli(["run", "--source", VIDEOS / "posetrack_000001.mp4", "--model", "movenet-lightning",
                 "--threads", "1"], edgepose_env)
    assert r.returncode == 0, r.stderr
    got = payloads(r.stdout)
    assert len(got) == 5
    for p in got:
        assert p["v"] == 1 and p["model"] == "movenet-lightning"
        assert [k["name"] for k in p["keypoints"]] == list(COCO_KEYPOINT_NAMES)
        assert all(0 <= k["score"] <= 1 for k in p["keypoints"])
    assert "movenet family" in r.stderr
    # the photo of one person, whole frame: every confident keypoint on the person (the eval box)
    ann = json.loads(EVAL_ANN.read_text())
    image = next(im for im in ann["images"] if sum(a["image_id"] == im["id"] for a in ann["annotations"]) == 1)
    box = next(a["bbox"] for a in ann["annotations"] if a["image_id"] == image["id"])
    r = run_cli(["run", "--source", EVAL_ANN.parent / image["file_name"], "--model", "movenet-lightning"], edgepose_env)
    assert r.returncode == 0, r.stderr
    (p,) = payloads(r.stdout)
    assert p["present"]
    x, y, w, h = box
    confident = [k for k in p["keypoints"] if k["score"] >= 0.3]
    assert len(confident) >= 8
    assert all(x - 0.1 * w <= k["x"] <= x + 1.1 * w and y - 0.1 * h <= k["y"] <= y + 1.1 * h for k in confident)


def test_meta_and_drawing_follow_the_keypoint_set():
    from edgepose.core.payload import make_meta
    from edgepose.output import draw

    meta = make_meta("d", "movenet-lightning", COCO_KEYPOINT_NAMES, (192, 192), None, "t", COCO_SKELETON, "movenet")
    assert meta["keypoints"] == list(COCO_KEYPOINT_NAMES) and len(meta["skeleton"]) == 18
    assert meta["family"] == "movenet" and "heatmap" not in meta
    old = make_meta("d", "cpm", KEYPOINT_NAMES, (192, 192), (96, 96), "t")
    assert old["skeleton"] == [list(e) for e in SKELETON] and old["heatmap"] == {"width": 96, "height": 96}
    assert skeleton_for(COCO_KEYPOINT_NAMES) == COCO_SKELETON and skeleton_for(["a", "b"]) == ()
    # a 17-keypoint payload without meta: the bones are those of its names (COCO), not the 14-point ones
    pts = {"left_shoulder": (40, 40), "left_elbow": (40, 80), "nose": (60, 20)}
    payload = {"keypoints": [{"name": n, "x": float(pts.get(n, (150, 150))[0]), "y": float(pts.get(n, (150, 150))[1]),
                              "score": 0.9 if n in pts else 0.0} for n in COCO_KEYPOINT_NAMES]}
    img = draw.render(np.zeros((200, 200, 3), np.uint8), payload, scores=False)
    assert img[60, 40].any()  # the left_shoulder-left_elbow bone (5, 7) is drawn
    assert draw.skeleton_from_meta({}) is None and draw.skeleton_from_meta(meta) == COCO_SKELETON


@pytest.mark.parametrize("args,code,message", [
    (["--family", "bogus"], 78, "model.family"),
    (["--model", "{alien}"], 65, "cannot tell what kind of pose model"),
    (["--model", "{alien}", "--family", "movenet"], 65, "is not a movenet model"),
    (["--model", "{truncated}"], 65, "not a valid TFLite model"),
])
def test_bad_family_or_unrecognisable_model_is_one_line(args, code, message, tmp_path, edgepose_env):
    alien = _non_pose_model(tmp_path / "alien.tflite")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(MOVENET.read_bytes()[:100000])
    args = [a.format(alien=alien, truncated=truncated) for a in args]
    r = run_cli(["run", "--source", CALIB / "ski.jpg", *args], edgepose_env)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(error_lines(r.stderr)) == 1, r.stderr


def _clip_pck(est, clip) -> tuple:
    """(PCK@0.1 over the clip's labelled joints the model has, by name; frames cropped around the person)."""
    names = list(est.model.keypoint_names)
    idx = [(names.index(n), j) for j, n in enumerate(KEYPOINT_NAMES) if n in names and clip.visible[j]]
    hits = total = cropped = 0
    for i, frame in enumerate(clip.frames):
        result = est.process(frame, i / clip.fps)
        cropped += result.transform.box.w < 0.5 * frame.shape[1]
        xy = result.pose.xy()
        for m, j in idx:
            hits += np.linalg.norm(xy[m] - clip.gt[i, j]) <= 0.1 * clip.size[i]
            total += 1
    return hits / total, cropped


def test_movenet_tracks_a_small_person(model_cache):
    """An eval person pasted at 1/4 of the height of a 1280x720 canvas, walking: on the whole frame
    MoveNet sees them ~48 input pixels tall and misses them; the tracker, with MoveNet's geometry and
    score scale, finds them and crops around them, the keypoints (matched by name) land on the person,
    and once they leave the crop goes back to the whole frame."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import clips

    from edgepose import PoseEstimator

    person = max(clips.people(), key=lambda s: s.visible.sum() + s.box.h / 1000)
    clip = clips.moving_clip(person, frame_w=1280, frame_h=720, height_frac=0.25, frames=12, seed=3)
    opts = dict(threads=2, smoothing=False, mirror=str(MIRROR), model_dir=str(model_cache))
    est = PoseEstimator("movenet-lightning", **opts)
    tracked_pck, cropped = _clip_pck(est, clip)
    whole_pck, none = _clip_pck(PoseEstimator("movenet-lightning", tracking=False, **opts), clip)
    assert none == 0 and cropped >= 8, cropped  # found within the first frames, then followed
    assert tracked_pck >= 0.6 and tracked_pck > whole_pck + 0.3, (tracked_pck, whole_pck)
    empty = clips.background(1280, 720, seed=3)
    boxes = [est.process(empty, 1 + i / 30).transform.box for i in range(4)]
    assert not est.pipeline.box_policy.tracking  # gone: the whole frame again, with the search tiles between
    assert any(b.w >= 1280 for b in boxes[1:])


def test_the_readme_python_api_example_runs(model_cache, monkeypatch, capsys):
    """The README's code block, as written, on a calibration photo (models from the mirror)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("EDGEPOSE_MODEL_DIR", str(model_cache))
    monkeypatch.setenv("EDGEPOSE_MODEL_MIRROR", str(MIRROR))
    exec(compile(code, "README.md", "exec"), {"photo": str(CALIB / "apink1.jpg")})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "True " + lines[0].split()[1]  # a person, and the pose score
    assert [line.split()[0] for line in lines[1:]] == list(COCO_KEYPOINT_NAMES)


def test_the_daemon_and_the_api_give_the_same_poses(model_cache, edgepose_env):
    """No second code path: `edgepose run` on photos publishes what PoseEstimator returns for them."""
    from edgepose import PoseEstimator

    photos = sorted(CALIB.glob("*.jpg"))[:4]
    r = run_cli(["run", "--source", CALIB, "--model", "movenet-lightning", "--max-frames", "4"], edgepose_env)
    assert r.returncode == 0, r.stderr
    est = PoseEstimator("movenet-lightning", mirror=str(MIRROR), model_dir=str(model_cache))
    for p, photo in zip(payloads(r.stdout), photos):
        pose = est.estimate(cv2.imread(str(photo)), still=True)
        assert [k.to_dict() for k in pose.keypoints] == p["keypoints"]
        assert round(pose.score, 4) == p["score"] and pose.present == p["present"]


def test_eval_scores_two_keypoint_sets_by_name(edgepose_env):
    """MoveNet (17 COCO names) on the 14-name eval file: the 12 joints both have are scored, matched by
    name; with --compare both models are scored on exactly those joints of the same people."""
    r = run_cli(["eval", "--model", "movenet-lightning", "--annotations", EVAL_ANN, "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    alone = json.loads(r.stdout)
    shared = [n for n in COCO_KEYPOINT_NAMES if n in KEYPOINT_NAMES]
    assert len(shared) == 12 and alone["family"] == "movenet" and alone["people"] == 23
    assert {n for n, m in alone["per_joint"].items() if m["count"]} == set(shared)
    r = run_cli(["eval", "--model", "movenet-lightning", "--compare", "cpm", "--annotations", EVAL_ANN, "--json"],
                edgepose_env)
    assert r.returncode == 0, r.stderr
    both = json.loads(r.stdout)
    assert both["joints"] == shared
    mn, cpm = both["models"]
    assert (mn["model"], cpm["model"]) == ("movenet-lightning", "cpm")
    assert list(mn["per_joint"]) == list(cpm["per_joint"]) == shared
    assert mn["keypoints"] == cpm["keypoints"] == alone["keypoints"]  # the same labelled joints
    assert all(mn[k] == alone[k] for k in ("pck@0.1", "pck@0.05", "median_error"))  # MoveNet alone: those joints
    r = run_cli(["eval", "--model", "cpm", "--annotations", EVAL_ANN, "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    cpm_alone = json.loads(r.stdout)
    assert all(cpm["per_joint"][n] == cpm_alone["per_joint"][n] for n in shared)
    assert mn["pck@0.1"] > cpm["pck@0.1"]  # issue 21's finding, on this small set too


def test_the_engine_feeds_movenet_rgb_uint8():
    """The resolved model tells the engine its colour order: the same BGR crop gives what the bare
    interpreter gives for its RGB version (and not for the BGR one)."""
    from edgepose.inference.engine import Engine, load_runtime

    model = resolved.model_at(MOVENET)
    crop = cv2.resize(cv2.imread(str(CALIB / "apink1.jpg")), (192, 192), interpolation=cv2.INTER_AREA)
    got = Engine(model, threads=1).run(crop).copy()
    bare = load_runtime().module.Interpreter(model_path=str(MOVENET), num_threads=1)
    bare.allocate_tensors()

    def plain(image):
        bare.set_tensor(bare.get_input_details()[0]["index"], np.ascontiguousarray(image)[None])
        bare.invoke()
        return bare.get_tensor(bare.get_output_details()[0]["index"])[0]

    assert got.shape == (1, 17, 3)
    np.testing.assert_allclose(got, plain(crop[..., ::-1]), atol=1e-6)
    assert np.abs(got - plain(crop)).max() > 0.01
    assert Engine(MOVENET, threads=1).color == "BGR" and Engine(model, threads=1).color == "RGB"


def test_calibrate_fps_sweeps_movenet(model_cache):
    """`calibrate-fps --model movenet-lightning`: its family's variants (MoveNet Lightning itself) x
    threads x XNNPACK, each candidate run through the pipeline of its resolved model on a real clip.
    Speeds are not asserted (shared machine), only that every configuration ran and decoded frames."""
    from edgepose.core import config as config_mod
    from edgepose.tools import calibrate as cal

    cfg = config_mod.load(None, {"camera": {"source": str(VIDEOS / "demo.mp4")},
                                 "model": {"name": "movenet-lightning", "dir": str(model_cache),
                                           "mirror": str(MIRROR)}}, environ={})
    plan = cal.Plan(budget_s=2.5, screen_share=0.4, final_rounds=2, keep=0.5, max_finalists=4, warmup=1,
                    min_frames=2, min_slice_s=0.1)
    report = cal.calibrate(cfg, cal.Options(plan=plan))
    cores = cal.default_threads()
    combos = {(c["model"], c["threads"], c["xnnpack"]) for c in report["candidates"]}
    assert combos == {("movenet-lightning", t, x) for t in range(1, cores + 1) for x in (True, False)}
    for c in report["candidates"]:
        assert c["error"] == "" and c["fps"] > 0 and c["verified"], c
        assert c["latency_ms"]["infer"]["p50"] > 0
    assert report["choice"]["config"]["model"] == {"name": "movenet-lightning"}


def test_regression_decoder_maps_normalised_keypoints_to_frame_pixels():
    from edgepose.core.geometry import Box, CropTransform
    from edgepose.inference.decode import decode_pose, regression_decoder

    out = np.zeros((1, 17, 3), np.float32)
    out[0, :, 0] = 0.25  # y
    out[0, :, 1] = np.linspace(0, 1, 17)  # x
    out[0, :, 2] = 0.5
    t = CropTransform(Box(100.0, 50.0, 384.0, 384.0), 192, 192)  # input 0..1 -> frame 100..484 / 50..434
    pose = decode_pose(out, t, COCO_KEYPOINT_NAMES, 0.3, regression_decoder)
    np.testing.assert_allclose(pose.xy(), np.stack([100 + 384 * out[0, :, 1], np.full(17, 50 + 96.0)], axis=1))
    assert pose.present and pose.score == pytest.approx(0.5)
    with pytest.raises(ModelError, match="gives 17 keypoints, not the 14"):
        decode_pose(out, t, KEYPOINT_NAMES, 0.3, regression_decoder)


def test_models_info_shows_the_family(tmp_path, edgepose_env):
    r = run_cli(["models", "info", "movenet-lightning", "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["family"] == "movenet (17 keypoints: nose ... right_ankle)"
    r = run_cli(["models", "info", _non_pose_model(tmp_path / "alien.tflite")], edgepose_env)
    assert r.returncode == 0, r.stderr  # info describes any .tflite file
    assert "family     not recognised (cannot tell what kind of pose model" in r.stdout


def test_movenet_is_pulled_and_verified_like_the_others(tmp_path, edgepose_env):
    """Fetched from the mirror's movenet-lightning/model.tflite and checked against the catalogue's sha256;
    a mirror copy with other bytes is refused (65) and nothing is cached."""
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(tmp_path / "cache"))
    r = run_cli(["models", "pull", "movenet-lightning"], env)
    assert r.returncode == 0, r.stderr
    assert registry.sha256_of(tmp_path / "cache" / "movenet-lightning" / "model.tflite") == \
        registry.load_catalogue()["movenet-lightning"].sha256
    bad = tmp_path / "mirror" / "movenet-lightning" / "model.tflite"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(MOVENET.read_bytes()[:-1] + b"\0")
    r = run_cli(["models", "--mirror", tmp_path / "mirror", "pull", "movenet-lightning"],
                dict(env, EDGEPOSE_MODEL_DIR=str(tmp_path / "other")))
    assert r.returncode == 65, r.stderr
    assert "checksum mismatch" in r.stderr and len(error_lines(r.stderr)) == 1
    assert not (tmp_path / "other" / "movenet-lightning" / "model.tflite").exists()


def test_pose_estimator_refuses_what_is_not_a_bgr_frame_or_a_good_option(model_cache):
    from edgepose import PoseEstimator

    est = PoseEstimator("cpm", threads=1, mirror=str(MIRROR), model_dir=str(model_cache))
    for bad in (np.zeros((48, 64), np.uint8), np.zeros((0, 0, 3), np.uint8), None):
        with pytest.raises(ValueError, match="H x W x 3"):
            est(bad)
    pose = est(np.zeros((48, 64, 3), np.uint8))
    assert [k.name for k in pose.keypoints] == list(KEYPOINT_NAMES) and est.model.family.name == "heatmap"
    with pytest.raises(ConfigError, match="model.family"):
        PoseEstimator("cpm", family="bogus", mirror=str(MIRROR), model_dir=str(model_cache))
    with pytest.raises(ConfigError, match="threads"):
        PoseEstimator("cpm", threads=-1, mirror=str(MIRROR), model_dir=str(model_cache))
    with pytest.raises(ConfigError, match="unknown config key model.colour"):
        PoseEstimator("cpm", colour="RGB", mirror=str(MIRROR), model_dir=str(model_cache))


def test_the_daemon_retains_movenet_meta_on_a_real_broker(tmp_path, edgepose_env):
    """`edgepose run --sink mqtt` with MoveNet: the retained meta a subscriber draws from carries the 17
    names, the COCO skeleton and the family (and no heatmap size)."""
    import subprocess

    import broker as brokers

    b = brokers.Broker(tmp_path, persistence=True).start()
    try:
        r = run_cli(["run", "--source", CALIB / "apink1.jpg", "--model", "movenet-lightning", "--sink", "mqtt",
                     "--broker", f"{b.host}:{b.port}", "--device", "mn"], edgepose_env)
        assert r.returncode == 0, r.stderr
        got = subprocess.run(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-t", "edgepose/mn/meta", "-C", "1",
                              "-W", "10"], capture_output=True, text=True, timeout=20)
    finally:
        b.kill()
    meta = json.loads(got.stdout)
    assert meta["model"] == "movenet-lightning" and meta["family"] == "movenet" and "heatmap" not in meta
    assert meta["keypoints"] == list(COCO_KEYPOINT_NAMES)
    assert meta["skeleton"] == [list(e) for e in COCO_SKELETON]
    assert meta["input"] == {"width": 192, "height": 192}


def test_the_config_offers_exactly_the_known_families():
    import dataclasses

    from edgepose.core.config import ModelConfig

    field = next(f for f in dataclasses.fields(ModelConfig) if f.name == "family")
    assert field.metadata["choices"] == (resolved.AUTO, *resolved.FAMILIES)
