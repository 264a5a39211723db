"""OpenPose MobileNet-thin: the catalogue entry and its TFLite builds (`edgepose models quantize`).

Real parts only: the frozen graph from the ../shared mirror, the real TensorFlow converter, LiteRT,
a real photo; each variant is built once per session (tests/models_util.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgepose.build.quantize import load_graph
from edgepose.core.geometry import CropTransform, whole_frame_box
from edgepose.inference.engine import Engine
from edgepose.inference.pipeline import crop_to_input
from edgepose.models import registry
from edgepose.models.modelinfo import delegation
from edgepose.models.resolved import model_at

from conftest import CALIB, MIRROR
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
