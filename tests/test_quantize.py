"""Quantization: graph rewrites are exact, conversion of both models, the report against the goals.

Conversions use TensorFlow (the `convert` extra) and the real upstream frozen
graphs; each model is built once per session (tests/models_util.py).
Speed is not asserted here: `python3 benchmarks/quantized.py` prints it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepose.build import quantize as q
from edgepose.build.tflite import tensor_name
from edgepose.core.errors import ModelError, UsageError
from edgepose.inference.engine import Engine
from edgepose.models import registry
from edgepose.models.fidelity import check_goals, fidelity_verdict
from edgepose.models.modelinfo import delegation, inspect

from conftest import CALIB, EVAL_ANN, MIRROR, SHARED, run_cli, run_cli_inproc
from models_util import OUTPUTS, TEST_FINETUNE_STEPS, needs_tf, quantize_cached, run_graph

pytestmark = needs_tf
EVAL_LSPET = SHARED / "data" / "eval-lspet" / "annotations.json"


@pytest.fixture(scope="module")
def calib_images():
    return q.calibration_images(CALIB, 192, 192)


def test_calibration_images_are_daemon_crops_with_augmentation(calib_images):
    plain = q.calibration_images(CALIB, 192, 192, augment=None)
    n = len(q.list_images(CALIB))
    assert len(plain) == n and len(calib_images) == n * (2 + q.Augment().variants)
    assert all(i.shape == (192, 192, 3) and i.dtype == np.uint8 for i in calib_images)
    # the first two per photo: the whole-frame crop and its mirror image
    assert np.array_equal(calib_images[0], plain[0])
    assert np.array_equal(calib_images[1], plain[0][:, ::-1])
    # deterministic for a seed
    again = q.calibration_images(CALIB, 192, 192)
    assert all(np.array_equal(a, b) for a, b in zip(again, calib_images))


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        q.calibration_images(tmp_path / "nope", 192, 192)
    with pytest.raises(Exception, match="has no images"):
        q.calibration_images(tmp_path, 192, 192)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cpm", "hourglass"])
def test_graph_rewrites_preserve_the_output(family, calib_images):
    """Relu removal, 7x7 depthwise split, concat balancing and depthwise equalization: the same function."""
    gd = q.load_graph(MIRROR / family / "model.pb")
    out = OUTPUTS[family]
    clean, c = q.cleanup_graph(gd, keep=[out])
    assert c.removed_relu == 52
    assert sum(n.op == "Relu" for n in clean.node) == sum(n.op == "Relu" for n in gd.node) - 52
    split, notes = q.split_depthwise(clean)
    if family == "cpm":
        assert len(notes) == 15  # three 7x7 depthwise convolutions in each of stages 1..5
    else:
        assert notes == []  # hourglass has no depthwise kernel above 25 taps
    balanced, bnotes = q.balance_concats(split, "image", calib_images[::8])
    # CPM: the 5 concats of backbone features with the previous stage's heatmaps (stages 2..6), each read by
    # one Conv2D; its 6th ConcatV2 (the backbone's 5-input one) also feeds those concats, so it is left alone
    assert len(bnotes) == (5 if family == "cpm" else 0)
    # as in build(): equalization before the depthwise split (every depthwise feeds a Relu there)
    equalized, enotes = q.equalize_depthwise(clean, "image", calib_images[::8])
    # both graphs have 52 depthwise convolutions (count checked below via their 52 Relus); Hourglass has one
    # whose output is zero on every photo: nothing to equalize there
    assert sum(n.op == "DepthwiseConv2dNative" for n in clean.node) == 52
    assert len(enotes) == 1 and f"of {52 if family == 'cpm' else 51} depthwise" in enotes[0]
    # not a no-op: overall, the depthwise outputs' channels span more of their tensor's range than before
    relus = [n.name for n in equalized.node if n.op == "Relu"]
    assert len(relus) == 52
    spread = [np.median([np.median(r[r > 0]) / r.max() for r in q.channel_ranges(g, "image", relus,
                                                                                  calib_images[:4]).values()
                         if r.max() > 0])
              for g in (clean, equalized)]
    assert spread[1] > spread[0], spread
    for img in calib_images[:3]:
        ref = run_graph(gd, out, img[None])[0]
        for g in (clean, split, balanced, equalized, q.split_depthwise(equalized)[0]):
            got = run_graph(g, out, img[None])[0]
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.slow
def test_cleanup_keeps_an_output_relu():
    gd = q.load_graph(MIRROR / "cpm" / "model.pb")
    relu = "Convolutional_Pose_Machine/stage_5_mv1/stage_5_mv1_2_pointwise/Relu"
    clean, c = q.cleanup_graph(gd, keep=[relu])
    assert c.removed_relu == 51 and any(n.name == relu for n in clean.node)


@pytest.mark.slow
def test_not_a_graph(tmp_path):
    bad = tmp_path / "x.pb"
    bad.write_bytes(b"\xff" * 100)
    with pytest.raises(ModelError):
        q.load_graph(bad)
    with pytest.raises(UsageError):
        q.Recipe(mode="int4")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cpm", "hourglass"])
def test_int8_conversion_meets_the_partition_goal_and_reports_fidelity(built, quant_cache, family):
    path, report, r = built(family, "int8")
    # the model is where the catalogue says, and --model cpm-int8 resolves to it
    assert registry.resolve(f"{family}-int8", cache_dir=quant_cache) == path
    assert report["sha256"] == registry.sha256_of(path)
    assert dict(registry.verify_cache(quant_cache))[f"{family}-int8"] == "ok"
    info = inspect(path)
    assert info.quantized == "int8"
    assert info.inputs[0].dtype == "int8" and info.inputs[0].quantization == (1.0, -128)  # lossless 0..255
    assert "RELU" not in info.ops
    # hard goals: one XNNPACK partition with every node, fidelity against float
    x = report["xnnpack"]["quantized"]
    assert x["prepared"] and x["partitions"] == 1 and x["delegated_nodes"] == x["total_nodes"]
    assert delegation(path).whole
    assert report["goals"]["one_xnnpack_partition"] is True
    fid = report["fidelity"]
    assert fid["keypoints"] == 270 and fid["people"] == 23
    # agreement with float is information only (issue #21): not a goal any more
    assert 0.5 < fid["agreement"] <= 1.0 and "agreement" not in report["goals"]
    # the report carries PCK@0.1 and @0.05 of both against the truth, and the goals re-checked from them
    for key in ("pck@0.1", "pck@0.05"):
        assert 0 < fid["pck_quant"][key] <= 1 and 0 < fid["pck_float"][key] <= 1
        assert report["goals"][key] == (fid["pck_float"][key] - fid["pck_quant"][key] <= 0.01 + 1e-9)
    # 23 people cannot resolve a 1-point drop: this report does not verify the model (the build said so); the
    # catalogue recipe's accuracy is measured on eval-lspet by benchmarks/quantized.py (models_util.py)
    assert "has 23 people: the fidelity verdict needs at least 200" in r.stderr, r.stderr[-2000:]
    assert report["goals"]["eval_people"] is False
    ok, why = fidelity_verdict(report)
    assert not ok and "fewer than 200 people" in why, why
    # fine-tuned as the recipe asked (the tests' few steps: models_util.TEST_FINETUNE_STEPS)
    tuned = [n for n in report["rewrites"] if n.startswith("quantization-aware fine-tuning")]
    assert len(tuned) == 1 and report["recipe"]["finetune_steps"] == TEST_FINETUNE_STEPS
    assert tuned[0].startswith(f"quantization-aware fine-tuning: {TEST_FINETUNE_STEPS} steps of"), tuned
    # the report's speed numbers exist and are positive (benchmarks/quantized.py prints them)
    assert report["latency_ms"]["float"]["median_ms"] > 0 and report["latency_ms"]["quantized"]["median_ms"] > 0
    assert "pck@0.05" in r.stdout and "agreement   (information)" in r.stdout and "partition" in r.stdout
    # the engine runs it through the daemon's path, with XNNPACK
    e = Engine(path, threads=1)
    assert e.xnnpack and e.spec.input_dtype == np.int8
    out = e.run(np.zeros((192, 192, 3), np.uint8))
    assert out.dtype == np.float32 and out.shape[2] == 14


def test_select_float_keeps_the_most_sensitive_blocks():
    rank = [q.Sensitivity("a", ("a1",), 1.0), q.Sensitivity("b", ("b1", "b2"), 2.0),
            q.Sensitivity("c", ("c1",), 7.0)]
    assert q.select_float(rank, 0.3) == ["c1"]  # a + b = 3 of 10 fit the budget
    assert q.select_float(rank, 0.2) == ["b1", "b2", "c1"]
    assert q.select_float(rank, 1.0) == []
    assert q.layer_group("MobilenetV2/MobilenetV2_part_2/inverted_bottleneck_MobilenetV2_part_2_3/x/Relu6;y") \
        == "part_2_3"
    assert q.layer_group("Convolutional_Pose_Machine/stage_1_mv2/inverted_bottleneck_stage_1_mv2_2/a/b") \
        == "stage_1_mv2_2"


@pytest.mark.slow
def test_cpm_mixed_variant_is_one_partition_and_keeps_pck(built):
    """Blocks chosen by sensitivity on the calibration photos (never the eval set) stay in float.

    Measured here: 96.3% agreement (every keypoint whose float peak is >= 0.1 agrees), PCK@0.1 equal
    to float, ~2.2x faster than upstream float CPM.  The 97% agreement goal is not hard-asserted (not met).
    """
    path, report, r = built("cpm", "int8", variant="cpm-int8-mixed")
    x = report["xnnpack"]["quantized"]
    assert x["prepared"] and x["partitions"] == 1 and x["delegated_nodes"] == x["total_nodes"]
    info = inspect(path, with_delegation=False)
    assert info.weight_dtypes.get("int8", 0) > 0 and info.weight_dtypes.get("float32", 0) > 0
    fid = report["fidelity"]
    assert report["goals"]["pck@0.1"] is True, fid
    assert fid["agreement_confident"] >= 0.97, fid
    print(f"cpm-int8-mixed: agreement {fid['agreement']:.3f}, speed-up {report['speedup_vs_float']:.2f}x")


@pytest.mark.slow
def test_hourglass_degenerate_scales_are_fixed(built):
    """Hourglass has always-zero tensors whose calibrated scale collapses to ~1e-8."""
    path, report, _ = built("hourglass", "int8")
    assert any("below" in f["reason"] and f["old_scale"] < 1e-6 for f in report["quantization_fixes"])
    # put one collapsed scale back: XNNPACK refuses the graph; the fix makes it prepare again
    m = q.read_model(path.read_bytes())
    g = m.subgraphs[0]
    fixed_names = {f["tensor"] for f in report["quantization_fixes"]}
    t = next(t for t in g.tensors if tensor_name(t) in fixed_names and t.quantization.scale is not None)
    t.quantization.scale = [7.8e-9]
    broken = path.parent / "broken.tflite"
    broken.write_bytes(q.write_model(m))
    assert not delegation(broken).prepared
    repaired, fixes = q.fix_quantization(broken.read_bytes())
    assert fixes and fixes[0].new_scale == q.MIN_ACTIVATION_SCALE
    broken.write_bytes(repaired)
    assert delegation(broken).whole


@pytest.mark.slow
def test_float32_rewrite_is_exact_and_whole(built):
    path, report, _ = built("cpm", "float32")
    assert report["xnnpack"]["quantized"]["partitions"] == 1
    assert report["fidelity"]["agreement"] == 1.0
    img = np.random.default_rng(3).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    a = Engine(MIRROR / "cpm" / "model.tflite", threads=1).run(img)
    b = Engine(path, threads=1).run(img)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hourglass"])
def test_float16_variant(built, family):
    path, report, _ = built(family, "float16")
    assert inspect(path, with_delegation=False).weight_dtypes.get("float16", 0) > 0
    assert report["xnnpack"]["quantized"]["partitions"] == 1
    assert report["fidelity"]["agreement"] >= 0.99


def test_quantize_command_errors(quant_env):
    r = run_cli_inproc(["models", "quantize", "cpm"], quant_env)  # int8 without --calib
    assert r.returncode == 64 and "--calib" in r.stderr and "Traceback" not in r.stderr
    r = run_cli_inproc(["models", "quantize", "nosuch", "--calib", CALIB], quant_env)
    assert r.returncode == 78 and "Traceback" not in r.stderr
    r = run_cli_inproc(["models", "quantize", "cpm-int8", "--mode", "float16"], quant_env)
    assert r.returncode == 64 and "Traceback" not in r.stderr
    for bad in (["cpm-float16", "--finetune", "10"], ["cpm-int8", "--calib", str(CALIB), "--finetune", "-1"]):
        r = run_cli_inproc(["models", "quantize"] + bad, quant_env)
        assert r.returncode == 64 and "--finetune" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_quantize_warns_before_building_when_the_eval_file_is_too_small(quant_env, tmp_path):
    """23 people cannot verify a model: said before the build (here the output path then fails, exit 78,
    so nothing is built); 600 people raise no warning."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = ["models", "quantize", "cpm-int8", "--calib", CALIB, "--out", blocker / "m.tflite"]
    r = run_cli(base + ["--eval", EVAL_ANN], quant_env)
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    assert "has 23 people: the fidelity verdict needs at least 200" in r.stderr
    r = run_cli(base + ["--eval", EVAL_LSPET], quant_env)
    assert r.returncode == 78 and "fidelity verdict needs" not in r.stderr, r.stderr


def test_report_goal_check_is_strict():
    pck = lambda a, b: {"pck@0.1": a, "pck@0.05": b}  # noqa: E731
    rep = {"xnnpack": {"quantized": {"prepared": True, "partitions": 2, "delegated_nodes": 5, "total_nodes": 5}},
           "fidelity": {"agreement": 0.999, "pck_float": pck(0.70, 0.40), "pck_quant": pck(0.689, 0.40),
                        "people": 199}}
    assert q.check_goals(rep) == {"one_xnnpack_partition": False, "pck@0.1": False, "pck@0.05": True,
                                  "eval_people": False}
    rep["xnnpack"]["quantized"]["partitions"] = 1
    rep["fidelity"].update(agreement=0.5, pck_quant=pck(0.69, 0.389), people=200)
    assert q.check_goals(rep) == {"one_xnnpack_partition": True, "pck@0.1": True, "pck@0.05": False,
                                  "eval_people": True}
    rep["fidelity"].update(pck_quant=pck(0.69, 0.39))
    assert all(q.check_goals(rep).values())
    assert check_goals({"xnnpack": {}}) == {"one_xnnpack_partition": False, "pck@0.1": None, "pck@0.05": None,
                                           "eval_people": None}
    assert json.dumps(rep)


def test_format_report_prints_both_pck_and_agreement_as_information():
    pck = lambda a, b: {"pck@0.1": a, "pck@0.05": b, "pckh@0.5": a}  # noqa: E731
    x = {"prepared": True, "partitions": 1, "delegated_nodes": 5, "total_nodes": 5}
    rep = {"model": "cpm-int8", "path": "/m", "size_bytes": 1e6, "sha256": "ab" * 32, "xnnpack": {"quantized": x},
           "latency_ms": {"float": {"median_ms": 30.0, "min_ms": 29.0},
                          "quantized": {"median_ms": 10.0, "min_ms": 9.0}},
           "recipe": {"mode": "int8"}, "speedup_vs_float": 3.0, "runtime": {"backend": "x", "threads": 1},
           "fidelity": {"agreement": 0.907, "agreement_confident": 0.96, "confident_keypoints": 10, "keypoints": 20,
                        "pck_float": pck(0.674, 0.40), "pck_quant": pck(0.670, 0.395), "people": 600,
                        "decoder": "subpixel"}}
    rep["goals"] = check_goals(rep)
    text = q.format_report(rep)
    assert "pck@0.1     float 67.4  quantized 67.0  (600 people" in text
    assert "pck@0.05    float 40.0  quantized 39.5  (600 people" in text
    assert "agreement   (information) 90.7%" in text
    assert "pck@0.1 met, pck@0.05 met, eval_people met" in text


@pytest.mark.slow
def test_daemon_runs_the_built_variant_by_name(built, quant_env):
    built("cpm", "int8")
    r = run_cli_inproc(["run", "--model", "cpm-int8", "--source", CALIB / "ski.jpg"], quant_env)
    assert r.returncode == 0, r.stderr[-2000:]
    payload = json.loads(r.stdout.splitlines()[0])
    assert payload["model"] == "cpm-int8" and len(payload["keypoints"]) == 14


@pytest.mark.slow
def test_float_output_skips_the_int8_output_grid(tmp_path, quant_env, calib_images):
    """`--float-output` (measured, not kept: docs/models.md): the op making the heatmaps stays float and
    the model's I/O is float32, so the heatmaps are not rounded to an int8 grid (<= 256 values)."""
    out = tmp_path / "head" / "model.tflite"
    r = quantize_cached(["cpm-int8", "--float-layers", "stage_5_mv1", "--float-output", "--finetune", "0",
                         "--calib", CALIB, "--runs", "2", "--out", out], out.parent, quant_env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = inspect(out)
    assert info.inputs[0].dtype == "float32" and info.outputs[0].dtype == "float32"
    assert info.weight_dtypes.get("int8", 0) > 0
    assert delegation(out).whole  # still one XNNPACK partition
    e, ref = Engine(out, threads=2), Engine(MIRROR / "cpm" / "model.tflite", threads=2)
    maps = e.run(calib_images[0])
    assert np.unique(maps).size > 1000  # an int8 output has at most 256 distinct values
    assert np.abs(maps - ref.run(calib_images[0])).mean() < 0.01  # still CPM's heatmaps
    report = json.loads(out.with_name("model.report.json").read_text())
    assert report["recipe"]["float_output"] is True
