"""OpenPose MobileNet-thin: the catalogue entry and its TFLite builds (`edgepose models quantize`).

Real parts only: the frozen graph from the ../shared mirror, the real TensorFlow converter, LiteRT,
a real photo; each variant is built once per session (tests/models_util.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgepose.build import quantize as q
from edgepose.build.quantize import load_graph
from edgepose.core.geometry import CropTransform, whole_frame_box
from edgepose.inference import paf
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import crop_to_input
from edgepose.models import registry
from edgepose.models.modelinfo import delegation
from edgepose.models.resolved import model_at

from conftest import CALIB, EVAL_IMAGES, MIRROR
from models_util import needs_tf, run_graph

pytestmark = needs_tf

VARIANTS = {"openpose-thin-float32": (432, 368), "openpose-thin-fast-float32": (256, 224)}


def test_catalogue_entry_is_the_mirrored_frozen_graph():
    cat = registry.load_catalogue()
    e = cat["openpose-thin"]
    pb = MIRROR / e.mirror_path
    assert e.format == "frozen-graph" and e.extra["family"] == "paf"
    assert registry.sha256_of(pb) == e.sha256 and pb.stat().st_size == e.size
    assert "ildoonet/tf-pose-estimation/9aaf34708e9863eeab9685a7ec52a45f3b576e2d" in e.url
    for name, size in VARIANTS.items():
        assert cat[name].source == "openpose-thin" and tuple(cat[name].extra["input_size"]) == size


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_float32_build_is_tensorflow_in_one_xnnpack_partition(name, built):
    path, report, r = built("openpose-thin", "float32", variant=name)
    w, h = VARIANTS[name]
    x = report["xnnpack"]["quantized"]
    assert x["prepared"] and x["partitions"] == 1 and x["delegated_nodes"] == x["total_nodes"]
    assert report["goals"]["one_xnnpack_partition"] is True
    assert "multi-person model" in r.stderr  # --eval (single-person agreement) is not measured for it
    model = model_at(path, entry=name)
    assert model.family.name == "paf" and model.input_size == (w, h)
    assert model.output_shape == (1, h // 8, w // 8, 57) and len(model.keypoint_names) == 18
    # the file alone (no catalogue entry) is recognised as a paf model by its output
    assert model_at(path, catalogue={}).family.name == "paf"
    # same output as TensorFlow on the frozen graph, on a real multi-person photo letterboxed to the input
    frame = cv2.imread(str(CALIB / "apink2.jpg"))
    img = crop_to_input(frame, CropTransform(whole_frame_box(frame.shape[1], frame.shape[0], w, h), w, h))
    tf_out = run_graph(load_graph(MIRROR / "openpose-thin" / "graph_opt.pb"), "Openpose/concat_stage7", [img])[0]
    lite = Engine(path, threads=2).run(img)
    assert lite.shape == tf_out.shape == (h // 8, w // 8, 57)
    assert float(np.abs(tf_out).max()) > 0.5  # a real output, not zeros
    assert float(np.abs(lite - tf_out).max()) < 1e-3
    assert delegation(path, Engine(path).runtime, 2).partitions == 1


@pytest.mark.slow
def test_int8_rewrites_fit_the_graph_and_preserve_its_output():
    """The rewrites that make int8 work on this graph (docs/models.md "Multi-person"), on real photos
    letterboxed to a small input: the stages' concatenations of 0..1 part maps and -1..1 affinity fields with
    0..32 features are balanced although depthwise convolutions read them, the 1x1 -> Relu -> depthwise
    chains and the 71 separable convolutions (depthwise straight into a 1x1, no activation between) are
    equalized; the output stays TensorFlow's."""
    w, h = 128, 112
    frames = [cv2.imread(str(CALIB / p)) for p in ("p2.jpg", "ski.jpg")]
    imgs = [crop_to_input(f, CropTransform(whole_frame_box(f.shape[1], f.shape[0], w, h), w, h)) for f in frames]
    gd = load_graph(MIRROR / "openpose-thin" / "graph_opt.pb")
    balanced, bnotes = q.balance_concats(gd, "image", imgs)
    assert len(bnotes) == 2 * 5  # part maps and affinity fields, stages 2..6
    pointwise, pnotes = q.equalize_pointwise(balanced, "image", imgs)
    assert len(pnotes) == 1 and "of 57 1x1 -> Relu -> depthwise" in pnotes[0], pnotes
    equalized, enotes = q.equalize_depthwise(pointwise, "image", imgs)
    assert len(enotes) == 1 and "of 71 depthwise" in enotes[0]
    out = "Openpose/concat_stage7"
    ref = run_graph(gd, out, imgs)
    got = run_graph(equalized, out, imgs)
    assert float(np.abs(ref).max()) > 0.5
    assert float(np.abs(got - ref).max()) < 1e-3


def _match(a: np.ndarray, b: np.ndarray) -> float:
    """Median distance (grid cells) between the parts two decoded people both found (inf: none shared)."""
    both = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    return float(np.median(np.linalg.norm(a[both] - b[both], axis=1))) if both.any() else float("inf")


@pytest.mark.slow
def test_int8_build_decodes_the_people_float_does(built):
    """openpose-thin-int8 calibrated on the 13 photos of ../shared/data/calib (the catalogue's recipe:
    docs/models.md "Multi-person") runs in one XNNPACK partition and, on the 9 photos of ../shared/data/eval
    (never calibrated on; 1 to 6 people each), finds the people the float32 build finds: the same count on
    at least 8 photos and at least 85% of float's people with an int8 person on the same parts (median
    within 1 grid cell = 8 input pixels).  Measured: 8 of 9 counts, 26 of 29 people.  Not more: this
    build's AP on eval-multi is half float's (13.0 vs 26.0), the goal is still open."""
    fpath, _, _ = built("openpose-thin", "float32", variant="openpose-thin-float32")
    qpath, report, _ = built("openpose-thin", "int8", variant="openpose-thin-int8")
    x = report["xnnpack"]["quantized"]
    assert x["prepared"] and x["partitions"] == 1 and x["delegated_nodes"] == x["total_nodes"]
    assert report["calibration"]["photos"] == 13 and report["recipe"]["mode"] == "int8"
    assert any("of 71 depthwise" in n for n in report["rewrites"])
    assert model_at(qpath, entry="openpose-thin-int8").family.name == "paf"
    w, h = VARIANTS["openpose-thin-float32"]
    fengine, qengine = Engine(fpath, threads=2), Engine(qpath, threads=2)
    photos = sorted(EVAL_IMAGES.glob("*.jpg"))
    assert len(photos) == 9
    same_count = matched = people = 0
    for photo in photos:
        frame = cv2.imread(str(photo))
        img = crop_to_input(frame, CropTransform(whole_frame_box(frame.shape[1], frame.shape[0], w, h), w, h))
        ref = paf.decode_people(fengine.run(img))
        got = paf.decode_people(qengine.run(img))
        assert ref, photo  # every photo has people
        same_count += len(ref) == len(got)
        people += len(ref)
        matched += sum(bool(got) and min(_match(p.xy, g.xy) for g in got) <= 1.0 for p in ref)
    assert same_count >= 8, same_count
    assert matched >= 0.85 * people, (matched, people)
