"""The engine on the real upstream models, both delegate settings, and its error paths."""

import numpy as np
import pytest

from edgepose.core.errors import ModelError, RuntimeMissingError
from edgepose.inference.engine import Engine, load_runtime

from conftest import MIRROR


@pytest.mark.parametrize("name,grid", [("cpm", 96), ("hourglass", 48)])
@pytest.mark.parametrize("xnnpack", [True, False])
def test_engine_discovers_io_and_runs(name, grid, xnnpack):
    e = Engine(MIRROR / name / "model.tflite", threads=1, xnnpack=xnnpack)
    assert e.input_size == (192, 192)
    assert (e.spec.grid_w, e.spec.grid_h, e.spec.num_keypoints) == (grid, grid, 14)
    assert e.xnnpack is xnnpack
    # and the interpreter really has (or has not) handed the graph to a delegate
    assert delegated(e) is xnnpack
    d = e.describe()
    assert d["backend"] in ("litert", "tflite-runtime") and d["threads"] == 1
    img = np.zeros((192, 192, 3), np.uint8)
    out = e.run(img)
    assert out.shape == (grid, grid, 14) and out.dtype == np.float32
    # the input buffer holds exactly what was written (BGR 0..255 as float)
    img2 = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    e.set_input(img2)
    view = e._interp.tensor(e._in_index)()[0]
    assert np.array_equal(view, img2.astype(np.float32))
    del view


def delegated(engine) -> bool:
    """Whether any node of the allocated graph is a delegate kernel (read from the interpreter, not the flag)."""
    return any(op["op_name"] == "DELEGATE" for op in engine._interp._get_ops_details())


def test_same_output_with_and_without_xnnpack():
    img = np.random.default_rng(1).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    with_x = Engine(MIRROR / "hourglass" / "model.tflite", threads=1, xnnpack=True)
    without = Engine(MIRROR / "hourglass" / "model.tflite", threads=1, xnnpack=False)
    assert delegated(with_x) and not delegated(without)
    a, b = with_x.run(img), without.run(img)
    assert np.abs(a - b).max() < 1e-3


def test_corrupt_and_truncated_models_are_model_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 100)
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        Engine(bad)
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes((MIRROR / "cpm" / "model.tflite").read_bytes()[:200_000])
    with pytest.raises(ModelError):
        Engine(trunc)
    with pytest.raises(ModelError, match="does not exist"):
        Engine(tmp_path / "none.tflite")
    (tmp_path / "dir.tflite").mkdir()
    with pytest.raises(ModelError, match="dir.tflite is not a file"):
        Engine(tmp_path / "dir.tflite")


def test_unknown_backend_is_reported():
    with pytest.raises(RuntimeMissingError, match="unknown backend"):
        load_runtime("onnx")


def test_before_invoke_is_called_as_each_inference_starts():
    """The daemon hands its publisher thread the GIL-free time of each inference through this hook."""
    e = Engine(MIRROR / "cpm" / "model.tflite", threads=1)
    calls = []
    e.before_invoke = lambda: calls.append(1)
    e.run(np.zeros((192, 192, 3), np.uint8))
    e.invoke()
    assert len(calls) == 2
