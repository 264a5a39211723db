"""How closely the fine-tuning's int8 simulation follows the converted int8 model, tensor by tensor.

Builds the int8 graph as `edgepose models quantize` does (rewrites, batch norms
folded), converts it, and on calibration crops compares, at every tensor the
simulation quantizes, the real model's error against float (TFLite built-in
kernels with all tensors kept) with the simulation's error, once with the
simulation's own calibrated ranges and once with the converted model's grid
(``QuantSim.ranges_from_model``, what the build uses).  Prints the ratio
real/simulated per tensor (1.0 = the same error) and a summary.

    python3 research/finetune_sim_check.py cpm
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import clips  # noqa: E402  (benchmarks/clips.py: shared data, eval people; puts the repo on sys.path)

from edgepose.build import finetune as ft  # noqa: E402
from edgepose.build import quantize as q  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=sorted(clips.OUTPUTS))
    ap.add_argument("--verbose", action="store_true", help="one line per tensor")
    args = ap.parse_args()
    out = clips.OUTPUTS[args.family]
    calib = q.calibration_crops(q.read_photos(clips.CALIB), 192, 192)
    gd, _ = q.prepare_graph(clips.MODELS / args.family / "model.pb", "image", out, q.Recipe(), calib)
    gd, _ = ft.fold_batch_norms(gd)
    model = q.fix_quantization(q.convert(gd, "image", out, [1, 192, 192, 3], q.Recipe(), calib))[0]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    by_part = {}
    for d in interp.get_tensor_details():
        for part in d["name"].split(";"):
            by_part.setdefault(part, d)
    sim = ft.QuantSim(gd, "image", out)
    sim.calibrate(calib)
    own = dict(sim.ranges)
    test = calib[1::8]
    inp = interp.get_input_details()[0]
    for label, use_model in (("own calibrated ranges", False), ("converted model's grid", True)):
        sim.ranges = dict(own)
        if use_model:
            sim.ranges_from_model(model)
        acc = {}
        for img in test:
            interp.set_tensor(inp["index"], (img.astype(np.int16) - 128).astype(np.int8)[None])
            interp.invoke()
            x = img[None].astype(np.float32)
            fl, qu = {}, {}
            sim(x, trace=fl)
            sim(x, quantize=True, trace=qu)
            for name in sim.points:
                d = by_part.get(name)
                if d is None or not d["quantization"][0]:
                    continue
                scale, zero = d["quantization"]
                real = (interp.get_tensor(d["index"]).astype(np.float32) - zero) * scale
                f, s = fl[name].numpy(), qu[name].numpy()
                if real.shape != f.shape:
                    continue
                acc.setdefault(name, []).append((np.mean((real - f) ** 2), np.mean((s - f) ** 2)))
        ratios = []
        for name in sim.points:
            if name in acc:
                r, s = np.mean(acc[name], axis=0)
                ratios.append(r / max(s, 1e-20))
                if args.verbose:
                    print(f"  {ratios[-1]:6.2f}  {name}")
        ratios = np.array(ratios)
        print(f"{args.family}, {label}: {len(ratios)} tensors compared on {len(test)} crops; real/simulated error "
              f"median {np.median(ratios):.2f}, outside 0.8..1.25 at {int(((ratios < 0.8) | (ratios > 1.25)).sum())}, "
              f"max {ratios.max():.2f}")


if __name__ == "__main__":
    main()
