#!/usr/bin/env python3
"""Do models prepare and run under tflite-runtime 2.14, and how does its XNNPACK take them? Prints; exit 1 on failure.

A model passes when it prepares and runs, and -- if the runtime applies
XNNPACK to it at all -- XNNPACK takes the whole graph in one partition.
(The 2.14 wheel's default XNNPACK delegate does not take int8 ops: it is not
even created for an all-int8 model, and with float I/O it leaves every
quantized op to the built-in kernels; this prints that as "not applied".)

tflite-runtime 2.14 needs numpy<2, so run this in its own venv (the main
environment keeps numpy 2 and ai-edge-litert):

    python3 -m venv /tmp/tfl && /tmp/tfl/bin/pip install tflite-runtime==2.14.0 'numpy<2'
    PYTHONPATH=. /tmp/tfl/bin/python benchmarks/tflite_runtime_check.py MODEL.tflite ...

(``benchmarks/quantized.py --tflite-runtime /tmp/tfl/bin/python`` does this for every variant.)
Uses edgepose.inference.engine / edgepose.models.modelinfo with ``backend="tflite-runtime"``,
which need only numpy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgepose.inference.engine import Engine, load_runtime  # noqa: E402
from edgepose.models.modelinfo import delegation  # noqa: E402


def main(paths) -> int:
    rt = load_runtime("tflite-runtime")
    print(f"tflite-runtime {rt.version}, numpy {np.__version__}")
    bad = 0
    img = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    for p in paths:
        d = delegation(Path(p), rt)
        e = Engine(Path(p), backend="tflite-runtime")
        out = e.run(img)
        t0 = time.perf_counter()
        for _ in range(10):
            e.run(img)
        ms = (time.perf_counter() - t0) * 100
        applied = d.delegated_nodes > 0
        ok = d.prepared and np.isfinite(out).all() and (not applied or d.partitions == 1
                                                          and d.delegated_nodes == d.total_nodes)
        bad += not ok
        x = (f"{d.partitions} partition(s) {d.delegated_nodes}/{d.total_nodes} nodes" if applied
             else f"not applied (0/{d.total_nodes} nodes)") if d.prepared else "FAILED: " + d.message
        print(f"  {'ok  ' if ok else 'FAIL'} {p}: {e.spec.input_dtype.name} in, xnnpack {x}, "
              f"output {list(out.shape)} max {out.max():.3f}, {ms:.1f} ms/run")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
