"""`edgepose calibrate-fps`: the sweep with a real model and a real clip, selection and the fidelity
gate, the JSON schema, the TOML writer round trip, --apply, and every error path with its exit code.

Speeds are never asserted (the machine is shared); only the logic on the numbers measured here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import types

import pytest

from edgepose.core import config as config_mod
from edgepose.core import config_write as cw
from edgepose.core.errors import ConfigError, ModelError, RuntimeMissingError, UsageError
from edgepose.daemon import board
from edgepose.daemon import systemd as sd
from edgepose.inference.engine import Engine, Runtime, load_runtime
from edgepose.models import fidelity as fid
from edgepose.models import registry
from edgepose.tools import calibrate as cal
from edgepose.tools import calibrate_report as rep
from edgepose.tools import sweep

from conftest import MIRROR, REPO, VIDEOS, error_lines, run_cli, run_cli_inproc

CLIP = VIDEOS / "demo.mp4"
TINY = sweep.Plan(budget_s=2.5, screen_share=0.4, final_rounds=2, keep=0.5, max_finalists=4, warmup=1,
                min_frames=2, min_slice_s=0.1)


def _cfg(model_cache, source=CLIP, model="hourglass", **sections):
    cfg = config_mod.load(None, {"camera": {"source": str(source)},
                                 "model": {"name": model, "dir": str(model_cache), "mirror": str(MIRROR)},
                                 **sections}, environ={})
    return cfg


def _check_schema(report):
    import jsonschema  # the test extra (setup.py)

    jsonschema.validate(report, rep.REPORT_SCHEMA)


# --- the sweep on a real model and clip ---------------------------------------------------------------

@pytest.mark.slow
def test_sweep_measures_every_configuration_of_the_family_on_a_real_clip(model_cache):
    cfg = _cfg(model_cache)
    seen = []
    report = cal.calibrate(cfg, cal.Options(plan=TINY), progress=seen.append)
    cores = cal.default_threads()
    combos = {(c["model"], c["threads"], c["xnnpack"]) for c in report["candidates"]}
    # every variant found (the float one at least; quantized ones only if some test built them here)
    # x threads 1..cores x XNNPACK on/off
    names = {c["model"] for c in report["candidates"]}
    assert "hourglass" in names and all(n.startswith("hourglass") for n in names)
    assert combos == {(n, t, x) for n in names for t in range(1, cores + 1) for x in (True, False)}
    assert report["source"] == {"uri": str(CLIP), "kind": "file", "live": False, "width": 960, "height": 540,
                                "frames": 5, "decode_ms": report["source"]["decode_ms"]}
    assert report["source"]["decode_ms"] > 0
    for c in report["candidates"]:
        assert c["error"] == "" and c["fps"] > 0 and c["frames"] >= TINY.min_frames
        assert c["backend"] == "litert" and (c["verified"] or c["model"] != "hourglass")
        for stage in sweep.STAGES:
            lat = c["latency_ms"][stage]
            assert 0 <= lat["p50"] <= lat["p95"], (stage, lat)
        assert c["latency_ms"]["infer"]["p50"] > 0
        # sustained fps is frames over wall time: it cannot beat 1 / mean frame time by much
        assert c["fps"] <= 1.5 * 1000 / c["latency_ms"]["total"]["p50"]
    finals = [c for c in report["candidates"] if c["stage"] == "final"]
    assert finals and all(len(c["fps_rounds"]) == TINY.final_rounds for c in finals)
    ch = report["choice"]
    best = max(c["fps"] for c in finals)
    assert ch["fps"] >= 0.95 * best - 0.01  # the tie band of select()
    assert (ch["model"], ch["threads"], ch["xnnpack"]) in {(c["model"], c["threads"], c["xnnpack"]) for c in finals}
    assert 0 <= ch["fps"] * 0.9 - ch["max_fps"] < 0.11  # 90% of sustained, rounded down to 0.1 fps
    assert ch["config"] == {"model": {"name": "hourglass"},
                            "runtime": {"threads": ch["threads"], "xnnpack": ch["xnnpack"],
                                        "max_fps": ch["max_fps"]}}
    # progress: one report per measurement, time left shrinking to zero at the end
    assert len(seen) == sum(1 + len(c["fps_rounds"]) if c["stage"] == "final" else 1
                            for c in report["candidates"])
    assert seen[-1].eta_s == 0 and seen[-1].fraction == 1.0
    _check_schema(report)


def test_synthetic_frames_replay_as_fresh_copies():
    src = sweep.ReplaySource(sweep.synthetic_frames(64, 48, n=3))
    a, b, c, d = (src.read() for _ in range(4))
    assert a.image.shape == (48, 64, 3) and a.image.std() > 5  # not blank
    assert d.image is not a.image and (d.image == a.image).all()  # looped, as a copy
    assert [f.index for f in (a, b, c, d)] == [0, 1, 2, 3]
    assert sweep.parse_synthetic("synthetic:320x240", 640, 480) == (320, 240)
    assert sweep.parse_synthetic("synthetic", 640, 480) == (640, 480)
    assert sweep.parse_synthetic("clip.mp4", 640, 480) is None
    with pytest.raises(UsageError):
        sweep.parse_synthetic("synthetic:big", 640, 480)


# --- selection and the fidelity gate --------------------------------------------------------------------

def _variant(name, verified, kind="float32"):
    return sweep.Variant(name, kind, MIRROR / "hourglass" / "model.tflite", verified, "test")


def _result(variant, threads, xnnpack, fps_list):
    r = sweep.Result(sweep.Candidate(variant, threads, xnnpack))
    mk = lambda f: sweep.Slice(f, 10, 10 / f, {k: [1.0] for k in sweep.STAGES}, 0.1, xnnpack, "litert")  # noqa: E731
    r.screen = mk(fps_list[0])
    r.finals = [mk(f) for f in fps_list[1:]]
    return r


def test_select_never_picks_an_unverified_variant_unless_allowed():
    f32, q = _variant("hourglass", True), _variant("hourglass-int8", False, "int8")
    results = [_result(f32, 2, True, [30, 31, 29, 30]), _result(q, 2, True, [60, 61, 59, 60])]
    choice = sweep.select(results)
    assert choice.result.candidate.variant.name == "hourglass" and choice.max_fps == 27.0
    assert sweep.select(results, allow_unverified=True).result.candidate.variant.name == "hourglass-int8"
    with pytest.raises(ModelError, match="--allow-unverified"):
        sweep.select([results[1]])


def test_select_prefers_fewer_threads_within_the_tie_band_and_uses_final_medians():
    v = _variant("hourglass", True)
    results = [_result(v, 1, True, [50, 40.0, 40.2, 39.8]),  # fast screen, median of finals 40.0
               _result(v, 2, True, [30, 41.5, 41.6, 41.4]),  # 41.5: within 5% of it
               _result(v, 2, False, [60])]  # screened only: never chosen
    pick = sweep.select(results).result
    assert (pick.candidate.threads, pick.fps) == (1, 40.0)
    results[1] = _result(v, 2, True, [30, 45, 45, 45])  # clearly faster now
    assert sweep.select(results).result.candidate.threads == 2


def test_sweep_screens_then_measures_contenders_in_alternating_order():
    v = _variant("hourglass", True)
    q = _variant("hourglass-int8", False, "int8")
    speed = {("hourglass", 1): 10.0, ("hourglass", 2): 19.0, ("hourglass-int8", 2): 40.0, ("hourglass", 3): 20.0}
    calls = []
    now = [0.0]

    def fake_slice(cand, seconds, plan, phase):  # the measurement itself is tested with the real model above
        calls.append((cand.variant.name, cand.threads, round(seconds, 3), phase))
        now[0] += seconds + 0.05
        return sweep.Slice(speed[(cand.variant.name, cand.threads)], 5, seconds, {k: [1.0] for k in sweep.STAGES},
                         0.05, True, "litert")

    cands = [sweep.Candidate(v, 1, True), sweep.Candidate(v, 2, True), sweep.Candidate(v, 3, True),
             sweep.Candidate(q, 2, True)]
    plan = sweep.Plan(budget_s=10, final_rounds=3, keep=0.8)
    results = sweep.sweep(cands, fake_slice, plan, clock=lambda: now[0])
    screen = calls[:4]
    assert [c[:2] for c in screen] == [("hourglass", 1), ("hourglass", 2), ("hourglass", 3), ("hourglass-int8", 2)]
    finals = [c[:2] for c in calls[4:]]
    assert {c[3] for c in screen} == {"screen"} and {c[3] for c in calls[4:]} == {"final"}
    # within 80% (keep) of the best *verified* screen (20): threads 2 and 3; int8 unverified stays out
    assert finals == [("hourglass", 3), ("hourglass", 2), ("hourglass", 2), ("hourglass", 3),
                      ("hourglass", 3), ("hourglass", 2)]
    assert [r.finalist for r in results] == [False, True, True, False]
    # the time budget is spent: screening + finals ~ budget (setup 0.05 s each)
    assert sum(c[2] + 0.05 for c in calls) == pytest.approx(plan.budget_s, rel=0.1)


def _report(pck_float=(0.80, 0.40), pck_quant=(0.80, 0.40), people=600, agreement=0.85):
    """The fidelity part of a `edgepose models quantize` report (model.report.json): (PCK@0.1, PCK@0.05)
    of float and quantized against the truth on ``people`` annotated people.  The default agreement with
    float (85%) is below issue #5's old 97% goal: the verdict judges accuracy, agreement is information."""
    pck = lambda v: {"pck@0.1": v[0], "pck@0.05": v[1], "pckh@0.5": v[0]}  # noqa: E731
    return {"fidelity": {"agreement": agreement, "pck_float": pck(pck_float), "pck_quant": pck(pck_quant),
                         "keypoints": 14 * people, "people": people, "decoder": "subpixel"}}


def _quantized_stand_in(cache, name, report, sha=True):
    """A cached 'quantized' variant: a copy of the float file stands in for the model (the gate reads
    only the report beside it; real int8 builds are covered by the quantize tests)."""
    d = cache / name
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.tflite"
    shutil.copy(MIRROR / "hourglass" / "model.tflite", path)
    if report is not None:
        if isinstance(report, dict) and sha:
            report = {"sha256": registry.sha256_of(path), **report}
        registry.report_path(path).write_text(report if isinstance(report, str) else json.dumps(report))
    return path


def _catalogue_with_variants():
    cat = registry.load_catalogue()
    for name, recipe in (("hourglass-int8", "int8"), ("hourglass-float16", "float16"),
                         ("hourglass-dynamic", "dynamic")):
        cat[name] = registry.ModelEntry(name=name, description="test", recipe=recipe, source="hourglass-pb",
                                      extra={"reference": "hourglass"})
    # only the family under test, with exactly these three variants (the real catalogue may grow)
    keep = {"hourglass", "hourglass-pb", "hourglass-int8", "hourglass-float16", "hourglass-dynamic"}
    return {k: v for k, v in cat.items() if k in keep}


def test_find_variants_reads_the_fidelity_report_beside_each_quantized_model(tmp_path):
    cache = tmp_path / "cache"
    # int8: 0.5 / 0.9 points below float, agreement 85%: passes by accuracy
    _quantized_stand_in(cache, "hourglass-int8", _report((0.80, 0.40), (0.795, 0.391)))
    # float16: agrees with float on 99% of keypoints, but PCK@0.1 drops 3 points
    _quantized_stand_in(cache, "hourglass-float16", _report((0.80, 0.40), (0.77, 0.40), agreement=0.99))
    cat = _catalogue_with_variants()  # hourglass-dynamic is not built
    variants, skipped = sweep.find_variants("hourglass-int8", cache, str(MIRROR), cat)
    by = {v.name: v for v in variants}
    assert set(by) == {"hourglass", "hourglass-int8", "hourglass-float16"}
    assert by["hourglass"].verified and by["hourglass"].kind == "float32"
    assert by["hourglass-int8"].verified, by["hourglass-int8"].why
    assert "PCK@0.1 float 80.0 / quantized 79.5, PCK@0.05 float 40.0 / quantized 39.1, on 600 people" \
        in by["hourglass-int8"].why and "agreement with float 85.0% (information)" in by["hourglass-int8"].why
    assert not by["hourglass-float16"].verified
    assert "fails its fidelity goals: pck@0.1 drops more than 1.0 point(s)" in by["hourglass-float16"].why
    assert [s.name for s in skipped] == ["hourglass-dynamic"]
    assert "`edgepose models quantize hourglass-dynamic --eval FILE.json`" in skipped[0].reason
    only, skipped = sweep.find_variants("hourglass", cache, str(MIRROR), cat, kinds=["int8"])
    assert [v.name for v in only] == ["hourglass-int8"]


def test_the_real_catalogue_groups_variants_by_their_reference():
    cat = registry.load_catalogue()
    assert sweep.family_of("cpm-int8", cat) == "cpm" and sweep.family_of("hourglass-float16", cat) == "hourglass"
    assert sweep.family_of("hourglass") == "hourglass"


@pytest.mark.parametrize("report,why", [
    (None, "no fidelity report"),
    ("{not json", "unreadable fidelity report"),
    ({"latency_ms": {}}, "no fidelity results"),
    ({"fidelity": None}, "no fidelity results"),
    ({"fidelity": {"agreement": 0.99}}, "incomplete"),
    ({"fidelity": {**_report()["fidelity"], "pck_quant": {"pck@0.1": 0.80}}}, "incomplete (no 'pck@0.05')"),
    # each PCK may drop at most 1.0 point: PCK@0.05 alone failing is enough
    (_report((0.80, 0.40), (0.80, 0.389)), "fails its fidelity goals: pck@0.05 drops more than 1.0"),
    (_report((0.80, 0.40), (0.789, 0.40), agreement=0.99), "fails its fidelity goals: pck@0.1 drops"),
    # a 1-point verdict needs a few hundred people: 23 (../shared/data/eval) is too few, however good
    (_report(people=23, agreement=1.0), "measured on fewer than 200 people"),
])
def test_a_missing_incomplete_or_failing_report_is_not_verified(tmp_path, report, why):
    path = _quantized_stand_in(tmp_path, "hourglass-int8", report)
    ok, text = fid.read_verdict(path)
    assert not ok and why in text, text


def test_a_report_of_another_file_does_not_verify(tmp_path):
    path = _quantized_stand_in(tmp_path, "hourglass-int8", {"sha256": "0" * 64, **_report()}, sha=False)
    ok, text = fid.read_verdict(path)
    assert not ok and "describes another file" in text


def test_the_verdict_judges_accuracy_against_the_truth_not_agreement_with_float():
    # exactly 1.0 point below float on both passes; a quantized model more accurate than float passes
    assert fid.fidelity_verdict(_report((0.80, 0.40), (0.79, 0.39), agreement=0.5))[0]
    assert fid.fidelity_verdict(_report((0.80, 0.40), (0.82, 0.43)))[0]
    # perfect agreement with float does not rescue a model measured on too few people
    ok, why = fid.fidelity_verdict(_report(people=199, agreement=1.0))
    assert not ok and "fewer than 200 people" in why
    assert fid.fidelity_verdict(_report(people=200))[0]
    # the goals are parameters (a stricter site can ask for less drop)
    assert not fid.fidelity_verdict(_report((0.80, 0.40), (0.795, 0.40)), fid.Goals(max_pck_drop=0.004))[0]


def test_calibrate_chooses_an_int8_variant_that_passes_by_accuracy(tmp_path, edgepose_env):
    """A report that fails issue #5's 97% agreement (85%) but keeps PCK@0.1/@0.05 within 1.0 point of
    float on 600 people: calibrate-fps may choose the variant without --allow-unverified."""
    cache = tmp_path / "cache"
    path = _quantized_stand_in(cache, "hourglass-int8", _report((0.80, 0.40), (0.792, 0.394)))
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(cache))
    r = run_cli(["calibrate-fps", "--source", "synthetic:320x240", "--model", "hourglass", "--config", os.devnull,
                 "--variants", "int8", "--quick", "--seconds", "1", "--threads", "1", "--xnnpack", "on",
                 "--json"], env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    _check_schema(rep)
    assert rep["choice"]["model"] in ("hourglass-int8", str(path)) and rep["choice"]["verified"] is True, rep["choice"]


def test_calibrate_refuses_a_model_without_passing_report_unless_allowed(tmp_path, edgepose_env):
    path = _quantized_stand_in(tmp_path, "mine", _report((0.80, 0.40), (0.70, 0.30), agreement=0.99))
    args = ["calibrate-fps", "--source", "synthetic:320x240", "--model", path, "--config", os.devnull,
            "--quick", "--seconds", "1", "--threads", "1", "--xnnpack", "on"]
    r = run_cli_inproc(args, edgepose_env)
    assert r.returncode == 65, r.stderr
    assert "fails its fidelity goals" in r.stderr and "--allow-unverified" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    r = run_cli_inproc(args + ["--allow-unverified", "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["choice"]["model"] == str(path) and rep["choice"]["verified"] is False
    r = run_cli_inproc(args + ["--allow-unverified"], edgepose_env)  # the table says why, not only --json
    assert r.returncode == 0, r.stderr
    assert f"not verified: {path}: fails its fidelity goals" in r.stdout


# --- the CLI, JSON and the table ---------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_json_report_matches_the_schema(edgepose_env, tmp_path):
    r = run_cli_inproc(["calibrate-fps", "--source", CLIP, "--model", "hourglass", "--config", os.devnull,
                        "--quick", "--seconds", "2", "--json"], edgepose_env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)  # stdout is exactly one JSON document
    _check_schema(rep)
    assert rep["written"] is None and rep["service"] is None and rep["family"] == "hourglass"
    assert "about" in r.stderr and "left" in r.stderr  # the progress bar with time left
    # what this host exposes (no thermal zones or vcgencmd on the CI VM; a laptop may have a passive trip)
    assert rep["thermal"]["available"] is board.throttled().available


@pytest.mark.slow
def test_cli_table_names_the_choice_and_the_cap(edgepose_env):
    r = run_cli_inproc(["calibrate-fps", "--source", "synthetic", "--model", "hourglass", "--config", os.devnull,
                        "--quick", "--seconds", "1", "--threads", "1"], edgepose_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    for col in ("threads", "xnnpack", "fps", "capture", "infer p50/p95", "total p50/p95", "verified"):
        assert col in header
    assert sum("<- chosen" in line for line in lines) == 1
    chosen = next(line for line in lines if line.startswith("chosen: hourglass, 1 thread(s)"))
    assert "fps sustained; recommended cap" in chosen
    assert "not saved: add --write" in r.stdout


# --- writing the config ------------------------------------------------------------------------------------

VALUES = {"model": {"name": "hourglass-int8"}, "runtime": {"threads": 3, "xnnpack": False, "max_fps": 12.5}}


def _flat(text):
    import tomllib
    return {(s, k): v for s, t in tomllib.loads(text).items() for k, v in t.items()}


def test_update_toml_changes_only_the_chosen_keys_and_keeps_comments():
    original = (REPO / "deploy" / "edgepose.toml").read_text()
    new = cw.update_toml(original, VALUES)
    before, after = _flat(original), _flat(new)
    changed = {(s, k) for s, kv in VALUES.items() for k in kv}
    assert {k: v for k, v in after.items() if k in changed} == {(s, k): v for s, kv in VALUES.items()
                                                               for k, v in kv.items()}
    assert {k: v for k, v in after.items() if k not in changed} == {k: v for k, v in before.items()
                                                                   if k not in changed}
    comments = [line for line in original.splitlines() if line.strip().startswith("#")]
    assert comments and all(c in new.splitlines() for c in comments)
    assert cw.update_toml(new, VALUES) == new  # idempotent


def test_update_toml_adds_missing_sections_and_keeps_trailing_comments():
    text = '# mine\n[camera]\nsource = "1"  # the USB one\n\n[runtime]\nthreads = 1  # keep me\n'
    new = cw.update_toml(text, VALUES)
    assert 'source = "1"  # the USB one' in new and "threads = 3  # keep me" in new
    assert _flat(new)[("model", "name")] == "hourglass-int8"
    assert cw.update_toml("", VALUES)  # a new file
    inline = cw.update_toml('runtime = { threads = 1 }\n', VALUES)
    assert _flat(inline)[("runtime", "threads")] == 3


@pytest.mark.parametrize("text,values,msg", [
    ("[runtime\nthreads = 1\n", VALUES, "not valid TOML"),
    ("runtime = 3\n", VALUES, "not a table"),
    ("", {"runtime": {"threads": 100}}, "runtime.threads"),
    ("[camera]\nbogus = 1\n", VALUES, "unknown config key camera.bogus"),
])
def test_update_toml_refuses_to_write_a_broken_config(text, values, msg):
    with pytest.raises(ConfigError, match=msg):
        cw.update_toml(text, values, "t.toml")


@pytest.mark.slow
def test_cli_write_round_trip_keeps_the_rest_of_the_file(edgepose_env, tmp_path):
    target = tmp_path / "edgepose.toml"
    shutil.copy(REPO / "deploy" / "edgepose.toml", target)
    target.chmod(0o640)
    original = target.read_text()
    r = run_cli_inproc(["calibrate-fps", "--source", "synthetic:320x240", "--model", "hourglass", "--config",
                        os.devnull, "--quick", "--seconds", "1", "--threads", "1", "--json", "--write", target],
                       edgepose_env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["written"] == str(target)
    ch = rep["choice"]
    after, before = _flat(target.read_text()), _flat(original)
    assert after[("model", "name")] == "hourglass"
    assert after[("runtime", "threads")] == ch["threads"] == 1
    assert after[("runtime", "xnnpack")] is ch["xnnpack"]
    assert after[("runtime", "max_fps")] == ch["max_fps"] > 0
    owned = {("model", "name"), ("runtime", "threads"), ("runtime", "xnnpack"), ("runtime", "max_fps")}
    assert {k: v for k, v in after.items() if k not in owned} == {k: v for k, v in before.items() if k not in owned}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["edgepose.toml"]  # no temp file left behind
    cfg = config_mod.load(str(target), environ={})  # the service can read it
    assert cfg.runtime.max_fps == ch["max_fps"] and cfg.mqtt.host == "localhost"


@pytest.mark.slow
def test_write_follows_a_link_keeps_crlf_and_stores_an_absolute_model_path(edgepose_env, tmp_path):
    """A config managed through a symbolic link is updated where the link points; a CRLF file stays CRLF
    (the added keys too); `--model ./m.tflite` is written as an absolute path, since the service reads the
    config from another working directory."""
    import subprocess
    import sys

    real = tmp_path / "conf" / "edgepose.toml"
    real.parent.mkdir()
    real.write_bytes(b"# mine\r\n[runtime]\r\nthreads = 2\r\n")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    shutil.copy(MIRROR / "hourglass" / "model.tflite", tmp_path / "m.tflite")
    r = subprocess.run([sys.executable, "-m", "edgepose.cli", "calibrate-fps", "--source", "synthetic:320x240",
                        "--model", "./m.tflite", "--config", os.devnull, "--quick", "--seconds", "1",
                        "--threads", "1", "--xnnpack", "on", "--write", "link.toml"],
                       cwd=tmp_path, env=dict(edgepose_env, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and link.resolve() == real
    data = real.read_bytes()
    assert data.startswith(b"# mine\r\n") and b"\n" not in data.replace(b"\r\n", b""), data
    cfg = config_mod.load(str(link), environ={})
    assert cfg.model.name == str(tmp_path / "m.tflite") and cfg.runtime.threads == 1


def test_a_new_config_is_readable_by_the_service_user(tmp_path):
    """`sudo edgepose calibrate-fps --write /etc/edgepose/edgepose.toml` where the file does not exist yet (or
    a link points at a missing file): 0644 less the umask, not mkstemp's 0600 that User=edgepose cannot read."""
    old = os.umask(0o022)
    try:
        cw.write_config(str(tmp_path / "new.toml"), VALUES)
        (tmp_path / "link.toml").symlink_to(tmp_path / "missing.toml")
        cw.write_config(str(tmp_path / "link.toml"), VALUES)
        os.umask(0o027)
        cw.write_config(str(tmp_path / "private.toml"), VALUES)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.toml").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "missing.toml").stat().st_mode) == 0o644
    assert (tmp_path / "link.toml").is_symlink()
    assert stat.S_IMODE((tmp_path / "private.toml").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.toml", "missing.toml", "new.toml", "private.toml"]


def test_write_errors_are_clear_and_come_before_the_sweep(edgepose_env, tmp_path):
    r = run_cli_inproc(["calibrate-fps", "--source", "synthetic", "--config", os.devnull,
                        "--write", tmp_path / "no" / "dir" / "x.toml"], edgepose_env, timeout=30)
    assert r.returncode == 78 and "directory" in r.stderr and "does not exist" in r.stderr
    assert "sweeping" not in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ConfigError, match="is a directory"):
        cw.check_writable(str(tmp_path))
    # a directory where no file can be created, though os.access says yes to root (sysfs)
    r = run_cli_inproc(["calibrate-fps", "--source", "synthetic", "--config", os.devnull,
                        "--write", "/sys/edgepose.toml"], edgepose_env, timeout=30)
    assert r.returncode == 78 and "cannot write /sys/edgepose.toml" in r.stderr, r.stderr
    assert "sweeping" not in r.stderr and "Traceback" not in r.stderr
    # an existing file that is not a valid config (the sweep's result could not be merged into it)
    for name, content in (("broken.toml", b"[runtime\n"), ("binary.toml", b"\xff\xfe\x00"),
                          ("badkey.toml", b"[runtime]\nthreadz = 2\n")):
        (tmp_path / name).write_bytes(content)
        r = run_cli_inproc(["calibrate-fps", "--source", "synthetic", "--config", os.devnull,
                            "--write", tmp_path / name], edgepose_env, timeout=30)
        assert r.returncode == 78 and name in r.stderr, r.stderr
        assert "sweeping" not in r.stderr and "Traceback" not in r.stderr


# --- --apply -------------------------------------------------------------------------------------------

class Systemctl:
    """Records systemctl calls (the test must not restart a real service on this machine)."""

    def __init__(self, active=True, missing=False):
        self.calls, self.active, self.missing = [], active, missing

    def __call__(self, argv):
        self.calls.append(list(argv))
        if self.missing:
            raise FileNotFoundError("systemctl not found")
        if argv[1] == "is-active" and not self.active:
            raise OSError("inactive")
        return ""


def test_restart_service_only_restarts_a_running_service():
    run = Systemctl(active=True)
    assert sd.restart_service(run=run) == "restarted edgepose"
    assert run.calls == [["systemctl", "is-active", "--quiet", "edgepose"], ["systemctl", "try-restart", "edgepose"]]
    run = Systemctl(active=False)
    assert sd.restart_service(run=run, booted=lambda: True) == (
        "edgepose is not running; it will use the new settings when it starts") and len(run.calls) == 1
    said = sd.restart_service(run=Systemctl(active=False), booted=lambda: False)  # e.g. in a container
    assert said.startswith("systemd is not this system's init") and "restart edgepose yourself" in said
    with pytest.raises(RuntimeMissingError, match="systemctl not found"):
        sd.restart_service(run=Systemctl(missing=True))


def test_apply_writes_then_restarts(model_cache, tmp_path, monkeypatch, capsys):
    from edgepose import cli

    target = tmp_path / "svc.toml"
    target.write_text("[model]\nname = \"cpm\"\n")
    monkeypatch.setenv("EDGEPOSE_MODEL_DIR", str(model_cache))
    monkeypatch.setenv("EDGEPOSE_MODEL_MIRROR", str(MIRROR))
    argv = ["calibrate-fps", "--source", "synthetic:320x240", "--model", "hourglass", "--config", os.devnull,
            "--quick", "--seconds", "1", "--threads", "1", "--xnnpack", "on", "--write", str(target), "--apply"]
    args = cli.build_parser(argv).parse_args(argv)
    run = Systemctl(active=True)
    assert cal.command(args, runner=run) == 0
    out = capsys.readouterr().out
    assert "restarted edgepose" in out and f"to {target}" in out
    assert run.calls[-1] == ["systemctl", "try-restart", "edgepose"]
    assert _flat(target.read_text())[("model", "name")] == "hourglass"


# --- error paths ----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args,code,msg", [
    (["--camera", "0"], 69, "cannot open camera 0"),  # this machine has no camera (real, not mocked)
    (["--source", "/dev/video7"], 69, "cannot open camera /dev/video7"),
    (["--source", "/nonexistent/clip.mp4"], 66, "does not exist"),
    (["--source", "synthetic", "--model", "/nonexistent/model.tflite"], 66, "does not exist"),
    (["--source", "synthetic", "--model", "nosuchmodel"], 78, "unknown model 'nosuchmodel'"),
    (["--source", "synthetic", "--threads", "0"], 64, "--threads"),
    (["--source", "synthetic", "--variants", "int4"], 64, "--variants"),
    (["--source", "synthetic", "--seconds", "0"], 64, "--seconds"),
    (["--source", "synthetic", "--model", "hourglass", "--variants", "int8"], 66, "no variant of model family"),
])
def test_error_paths_exit_with_one_clear_line(edgepose_env, args, code, msg):
    # a process: OpenCV's native messages about the camera (fd 2) must stay quiet too
    r = run_cli(["calibrate-fps", "--config", os.devnull, "--quick", "--seconds", "1", *args]
                if "--seconds" not in args else ["calibrate-fps", "--config", os.devnull, *args],
                edgepose_env, timeout=60)
    assert r.returncode == code, (r.returncode, r.stderr)
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and msg in errors[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_file_that_is_not_a_model_fails_clearly(edgepose_env, tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer" * 100)
    r = run_cli_inproc(["calibrate-fps", "--config", os.devnull, "--source", "synthetic", "--model", bad,
                        "--quick", "--seconds", "1", "--threads", "1"], edgepose_env, timeout=60)
    assert r.returncode == 65 and "no configuration could be measured" in r.stderr, r.stderr
    assert "not a valid TFLite model" in r.stderr and "Traceback" not in r.stderr


def test_parse_helpers():
    assert sweep.parse_int_list("1-3,5", "--threads") == [1, 2, 3, 5]
    assert sweep.parse_int_list("2,2", "--threads") == [2]
    with pytest.raises(UsageError):
        sweep.parse_int_list("a", "--threads")
    for bad in ("1-2000000000", "0-2", "4-1", "65"):  # a huge range is refused before it is built
        with pytest.raises(UsageError, match="from 1 to 64"):
            sweep.parse_int_list(bad, "--threads")
    assert sweep.recommend_cap(33.37) == 30.0 and sweep.recommend_cap(33.37, 1.0) == 33.3
    assert sweep.recommend_cap(0.05) == 0.1 and sweep.recommend_cap(0) == 0.0
    assert sweep.family_of("cpm-int8") == "cpm" and sweep.family_of("hourglass") == "hourglass"


def test_writing_a_locally_built_choice_warns_when_the_service_cache_lacks_it(edgepose_env, tmp_path):
    cache = tmp_path / "cache"
    _quantized_stand_in(cache, "hourglass-int8", _report())  # passes its goals
    target = tmp_path / "svc.toml"
    target.write_text(f'[model]\nname = "cpm"\ndir = "{tmp_path / "service-cache"}"\n')
    env = dict(edgepose_env, EDGEPOSE_MODEL_DIR=str(cache))
    r = run_cli_inproc(["calibrate-fps", "--source", "synthetic:320x240", "--model", "hourglass", "--config",
                        os.devnull, "--variants", "int8", "--quick", "--seconds", "1", "--threads", "1",
                        "--xnnpack", "on", "--write", target], env)
    assert r.returncode == 0, r.stderr
    assert "chosen: hourglass-int8" in r.stdout
    assert f"hourglass-int8 is not in the model cache {tmp_path / 'service-cache'}" in r.stdout
    assert _flat(target.read_text())[("model", "name")] == "hourglass-int8"


def test_int8_rows_on_a_runtime_without_int8_xnnpack_say_why(tiny_int8, model_cache):
    """calibrate-fps with an int8 model on a runtime whose XNNPACK takes no int8 operators.

    tflite-runtime 2.14 needs numpy<2 and cannot be imported in this process, so a runtime object
    standing in for it is injected: LiteRT's real interpreter with its default delegates (XNNPACK)
    left out, named tflite-runtime 2.14.0 -- XNNPACK then takes none of the int8 ops, as the real
    tflite-runtime does (tests/test_delegation.py checks the real one, in its own venv)."""
    m = load_runtime("litert").module
    no_xnnpack = types.SimpleNamespace(OpResolverType=m.OpResolverType, Interpreter=lambda **kw: m.Interpreter(
        **{**kw, "experimental_op_resolver_type": m.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}))
    stand_in = Runtime("tflite-runtime", "2.14.0", no_xnnpack)
    cfg = _cfg(model_cache, source="synthetic", model=str(tiny_int8))
    opts = cal.Options(plan=TINY, threads=[1], xnnpack=(True,), allow_unverified=True)
    rep = cal.calibrate(cfg, opts, engine_factory=lambda path, **kw: Engine(path, runtime=stand_in, **kw))
    _check_schema(rep)
    x = rep["candidates"][0]["xnnpack_delegation"]
    assert x["int8_ops"] == x["total_ops"] > 0 and x["int8_delegated"] == x["delegated_ops"] == 0
    slow = [w for w in rep["warnings"] if "is slow here" in w]
    assert len(slow) == 1 and "ai-edge-litert>=1.4,<1.5" in slow[0] and 'runtime.backend = "litert"' in slow[0]
    table = cal.format_table(rep)
    assert f"on 0/{x['total_ops']}" in table and f"warning: {slow[0]}" in table


def test_xnnpack_column_shows_the_ops_it_took(model_cache):
    cfg = _cfg(model_cache, source="synthetic")
    rep = cal.calibrate(cfg, cal.Options(plan=TINY, threads=[1]))
    x = next(c for c in rep["candidates"] if c["xnnpack"])["xnnpack_delegation"]
    assert x["partitions"] == 1 and x["delegated_ops"] == x["total_ops"] > 0  # hourglass whole under LiteRT
    assert next(c for c in rep["candidates"] if not c["xnnpack"])["xnnpack_delegation"] is None
    table = cal.format_table(rep)
    assert f"on {x['total_ops']}/{x['total_ops']}" in table and not [w for w in rep["warnings"] if "slow" in w]
