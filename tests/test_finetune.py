"""Quantization-aware fine-tuning (edgepose.build.finetune): exact batch-norm folding, a simulation that
computes the float graph and tracks the real int8 model, and fine-tuning that lowers the int8 error
on crops it was not trained on.

Real upstream frozen graphs, real TFLite converter, real calibration photos; no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepose.build import finetune as ft
from edgepose.build import quantize as q
from edgepose.inference.engine import Engine

from conftest import CALIB, MIRROR
from models_util import OUTPUTS, needs_tf, run_graph

pytestmark = needs_tf


def _graph(family):
    return q.cleanup_graph(q.load_graph(MIRROR / family / "model.pb"), keep=[OUTPUTS[family]])[0]


@pytest.fixture(scope="module")
def photos():
    return q.read_photos(CALIB)


@pytest.fixture(scope="module")
def crops(photos):
    return q.calibration_crops(photos, 192, 192)


@pytest.mark.slow
@pytest.mark.parametrize("family,convs", [("cpm", 93), ("hourglass", 105)])
def test_folding_batch_norms_is_exact_and_the_simulation_computes_the_graph(family, convs, crops):
    gd = _graph(family)
    folded, notes = ft.fold_batch_norms(gd)
    assert notes == [f"folded {convs} batch normalizations into their convolutions"]
    assert not any(n.op.startswith("FusedBatchNorm") for n in folded.node)
    assert sum(n.op == "BiasAdd" for n in folded.node) == convs
    x = np.stack(crops[:3]).astype(np.float32)
    ref = run_graph(gd, OUTPUTS[family], x)
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(run_graph(folded, OUTPUTS[family], x) - ref).max() < tol
    sim = ft.QuantSim(folded, "image", OUTPUTS[family])
    assert np.abs(sim(x).numpy() - ref).max() < tol
    assert np.abs(sim(x, original=True).numpy() - ref).max() < tol
    # every convolution's weights and every folded bias is trainable
    assert len(sim.weight_of) == sum(n.op in ("Conv2D", "DepthwiseConv2dNative") for n in folded.node)
    assert len(sim.bias_of) == convs


@pytest.mark.slow
def test_the_int8_simulation_tracks_the_converted_model(crops, tmp_path):
    """With the converted model's int8 grid, the simulated int8 error is the real model's error
    (same graph, same calibration crops), crop by crop."""
    family = "hourglass"
    gd, _ = ft.fold_batch_norms(_graph(family))
    sim = ft.QuantSim(gd, "image", OUTPUTS[family])
    sim.calibrate(crops)
    assert len(sim.ranges) == len(sim.points) > 100
    model = q.convert(gd, "image", OUTPUTS[family], [1, 192, 192, 3], q.Recipe(), crops)
    model, _ = q.fix_quantization(model)
    own = dict(sim.ranges)
    assert sim.ranges_from_model(model) == len(sim.points)  # every point found by name
    assert sim.ranges != own  # the converter's grid is not the per-tensor calibration everywhere
    (tmp_path / "plain.tflite").write_bytes(model)
    engine = Engine(tmp_path / "plain.tflite", threads=2)
    test = crops[1::4]
    x = np.stack(test).astype(np.float32)
    ref = sim(x, original=True).numpy()
    simulated = ((sim(x, quantize=True).numpy() - ref) ** 2).mean(axis=(1, 2, 3))
    real = np.array([((engine.run(img) - r) ** 2).mean() for img, r in zip(test, ref)])
    ratio = simulated.mean() / real.mean()
    assert 0.75 < ratio < 1.33, (simulated.mean(), real.mean())
    assert np.corrcoef(simulated, real)[0, 1] > 0.6  # 0.80 measured here


def test_random_crops_are_varied_model_inputs(photos):
    rng = np.random.default_rng(1)
    a = [ft.random_crop(photos[0], rng, 192, 192) for _ in range(4)]
    for img in a:
        assert img.shape == (192, 192, 3) and img.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 255 and np.all(img == np.round(img))
    assert min(np.abs(a[i] - a[j]).mean() for i in range(4) for j in range(i + 1, 4)) > 5


def test_mixup_blends_a_share_of_the_batch_with_other_images_of_it():
    rng = np.random.default_rng(3)
    batch = np.stack([np.full((4, 4, 3), v, np.float32) for v in (0.0, 100.0, 200.0, 255.0)])
    assert np.array_equal(ft.mix(batch, rng, 0.0), batch)
    mixed = ft.mix(batch, rng, 1.0)
    assert mixed.shape == batch.shape and mixed.dtype == np.float32
    assert np.all(mixed == np.round(mixed)) and mixed.min() >= 0 and mixed.max() <= 255
    for img in mixed:  # every pixel of an image blended with the same weight: still one value
        assert np.ptp(img) == 0
    assert not np.array_equal(mixed, batch)
    # share 1: every image is blended, but a blend with itself leaves it unchanged
    changed = sum(int(not np.array_equal(m, b)) for m, b in zip(mixed, batch))
    assert changed >= 2


@pytest.mark.slow
def test_finetuning_lowers_the_int8_error_on_held_out_photos(photos, crops):
    """Trained on 10 photos, measured on the crops of the 3 others (never seen): the simulated int8
    heatmap error falls; only weight and bias values change, not the graph."""
    family = "hourglass"
    gd = _graph(family)
    held = q.calibration_crops(photos[10:], 192, 192)
    train_crops = q.calibration_crops(photos[:10], 192, 192)
    plain = q.fix_quantization(q.convert(gd, "image", OUTPUTS[family], [1, 192, 192, 3], q.Recipe(),
                                         train_crops))[0]
    tuned, notes = ft.finetune(gd, "image", OUTPUTS[family], train_crops, photos[:10],
                               ft.FineTune(steps=60, learning_rate=2e-5), holdout=held, reference=plain)
    assert notes[0].startswith("folded 105 batch")
    assert "int8 grid of the plain conversion at" in notes[1]
    import re

    (before, after), (hb, ha) = [tuple(map(float, m)) for m in
                                 re.findall(r"crops ([0-9.e-]+) -> ([0-9.e-]+)", notes[-1])]
    assert after < before and ha < 0.95 * hb, notes[-1]
    folded, _ = ft.fold_batch_norms(gd)
    assert [(n.name, n.op, list(n.input)) for n in tuned.node] == \
        [(n.name, n.op, list(n.input)) for n in folded.node]
    x = np.stack(held[:2]).astype(np.float32)
    # still the same function up to small changes (distilled from it)
    a, b = run_graph(folded, OUTPUTS[family], x), run_graph(tuned, OUTPUTS[family], x)
    assert 0 < np.abs(a - b).max() < 0.1


@pytest.mark.slow
def test_a_mixed_models_float_blocks_are_simulated_in_float_and_stay_float(crops, tmp_path):
    """Fine-tuning a mixed int8/float recipe: the blocks the model keeps in float are read off the
    converted model, simulated without quantization, and kept in float by the final conversion."""
    family = "hourglass"
    gd, _ = ft.fold_batch_norms(_graph(family))
    mixed = q.fix_quantization(q.convert(gd, "image", OUTPUTS[family], [1, 192, 192, 3],
                                         q.Recipe(float_layers=("hourglass_front_4/",)), crops))[0]
    groups = q.float_groups(mixed)
    assert {f"hourglass_front_4/inverted_bottleneck_hourglass_front_4_{k}" for k in range(1, 6)} <= set(groups)
    assert all(g.startswith("hourglass_front_4/") for g in groups), groups
    sim = ft.QuantSim(gd, "image", OUTPUTS[family], groups)
    assert sim.float_nodes and all(n.startswith("hourglass_front_4/") for n in sim.float_nodes)
    sim.calibrate(crops)
    sim.ranges_from_model(mixed)
    full = ft.QuantSim(gd, "image", OUTPUTS[family])
    full.ranges = dict(sim.ranges)
    (tmp_path / "mixed.tflite").write_bytes(mixed)
    engine = Engine(tmp_path / "mixed.tflite", threads=2)
    test = crops[1::4]
    x = np.stack(test).astype(np.float32)
    ref = sim(x, original=True).numpy()
    simulated = ((sim(x, quantize=True).numpy() - ref) ** 2).mean()
    all_int8 = ((full(x, quantize=True).numpy() - ref) ** 2).mean()
    real = np.mean([((engine.run(img) - r) ** 2).mean() for img, r in zip(test, ref)])
    assert simulated < all_int8  # the float blocks add no simulated error
    assert 0.75 < simulated / real < 1.33, (simulated, real)
    again = q.convert(gd, "image", OUTPUTS[family], [1, 192, 192, 3], q.Recipe(float_groups=groups), crops)
    assert q.float_groups(again) == groups
