"""Inspect a TFLite model: I/O, dtypes, quantization, op histogram, FLOPs, XNNPACK partitions.

Everything here reads the model through the runtime that is installed
(LiteRT or tflite-runtime): the op list and tensor shapes come from the
interpreter, and the number of XNNPACK partitions is the number of delegate
nodes the runtime creates when the graph is prepared (the runtime's
"Replacing N out of M node(s) ... yielding K partitions" line, printed on
fd 2 when the delegation is partial, is captured to tell how many nodes
stayed outside XNNPACK).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from edgepose.core.errors import ModelError
from edgepose.inference.delegation import Delegation, Interpreter, int8_advice, read_table
from edgepose.inference.delegation import count as count_delegation
from edgepose.inference.engine import Engine, Runtime, default_threads, load_runtime, native_info_to_log


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[int, ...]
    dtype: str
    quantization: Optional[Tuple[float, int]]  # (scale, zero point) or None for float


@dataclass(frozen=True)
class ModelInfo:
    path: str
    size_bytes: int
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    ops: Dict[str, int]  # op histogram (without delegate nodes)
    flops: int  # multiply-adds count twice
    weight_dtypes: Dict[str, int]  # dtype -> number of constant tensors
    quantized: str  # "float32", "int8", "float16 weights", "dynamic range (int8 weights)", ...
    delegation: Optional[Delegation] = None
    family: str = ""  # how its output becomes a pose (edgepose.models.resolved), "" if not known
    runtime: str = ""  # "litert 1.4.0": delegation depends on how the runtime was built
    advice: str = ""  # why an int8 model is slow on this runtime, and the fix ("" when it is not)

    def to_dict(self) -> dict:
        return asdict(self)


def _interpreter(path: Path, runtime: Runtime, xnnpack: bool, threads: int) -> Interpreter:
    mod = runtime.module
    kw = {"model_path": str(path), "num_threads": threads}
    if not xnnpack:
        kw["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp: Interpreter = mod.Interpreter(**kw)
        return interp
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"cannot load model {path}: not a valid TFLite model ({str(e).splitlines()[0]})") from None


def delegation(path: Path, runtime: Optional[Runtime] = None, threads: int = 0) -> Delegation:
    """How XNNPACK partitions the graph (prepared with the default delegates, as the Engine does)."""
    runtime = runtime or load_runtime()
    with native_info_to_log(passthrough=False) as native:
        interp = _interpreter(Path(path), runtime, True, threads or default_threads())
        try:
            interp.allocate_tensors()
            error = ""
        except RuntimeError as e:
            error = str(e)
    if error:
        return Delegation(0, 0, 0, False, _summary(native.text + "\n" + error))
    return count_delegation(interp, native.text, path)


def _summary(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("INFO:")]
    return lines[-1] if lines else ""


def _flops(op: str, ins: List[Tuple[int, ...]], outs: List[Tuple[int, ...]]) -> int:
    """Floating-point operations of one op (a multiply-add counts 2); elementwise ops count 1/elem."""
    out = int(np.prod(outs[0])) if outs and outs[0] else 0
    if op == "CONV_2D" and len(ins) > 1:
        kh, kw, cin = ins[1][1], ins[1][2], ins[1][3]
        return 2 * out * kh * kw * cin
    if op == "DEPTHWISE_CONV_2D" and len(ins) > 1:
        return 2 * out * ins[1][1] * ins[1][2]
    if op == "FULLY_CONNECTED" and len(ins) > 1:
        return 2 * out * ins[1][-1]
    if op == "TRANSPOSE_CONV" and len(ins) > 2:
        return 2 * int(np.prod(ins[2])) * int(np.prod(ins[1][:3]))
    if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return out * 4
    if op in ("RESIZE_BILINEAR",):
        return out * 4
    if op in ("ADD", "MUL", "SUB", "RELU", "RELU6", "LOGISTIC", "HARD_SWISH"):
        return out
    return 0


def inspect(path: Path, runtime: Optional[Runtime] = None, with_delegation: bool = True) -> ModelInfo:
    """Read everything ``edgepose models info`` shows."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    runtime = runtime or load_runtime()
    interp = _interpreter(path, runtime, False, 1)
    try:
        interp.allocate_tensors()
    except RuntimeError as e:
        raise ModelError(f"cannot prepare model {path}: {str(e).splitlines()[0]}") from None
    details = {t["index"]: t for t in read_table(interp.get_tensor_details, path)}

    def tinfo(t: dict) -> TensorInfo:
        scale, zero = t.get("quantization", (0.0, 0))
        return TensorInfo(t["name"], tuple(int(x) for x in t["shape"]), np.dtype(t["dtype"]).name,
                          (float(scale), int(zero)) if scale else None)

    ops = read_table(interp._get_ops_details, path)  # noqa: SLF001
    hist: Counter = Counter()
    flops = 0
    produced: Set[int] = set()
    acts: Counter = Counter()
    for o in ops:
        if o["op_name"] == "DELEGATE":
            continue
        hist[o["op_name"]] += 1
        ins = [tuple(int(x) for x in details[i]["shape"]) if i >= 0 else () for i in o["inputs"]]
        outs = [tuple(int(x) for x in details[i]["shape"]) for i in o["outputs"]]
        flops += _flops(o["op_name"], ins, outs)
        produced.update(int(i) for i in o["outputs"])
        if o["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
            acts.update(np.dtype(details[i]["dtype"]).name for i in o["outputs"])
    inputs_idx = {d["index"] for d in interp.get_input_details()}
    consts = [t for i, t in details.items() if i not in produced and i not in inputs_idx
              and len(t["shape"]) > 0]
    wd = Counter(np.dtype(t["dtype"]).name for t in consts)
    info = ModelInfo(
        path=str(path), size_bytes=path.stat().st_size,
        inputs=[tinfo(t) for t in interp.get_input_details()],
        outputs=[tinfo(t) for t in interp.get_output_details()],
        ops=dict(hist.most_common()), flops=int(flops), weight_dtypes=dict(wd),
        quantized=_kind(acts, wd),
        delegation=delegation(path, runtime) if with_delegation else None,
        runtime=f"{runtime.name} {runtime.version}")
    return replace(info, advice=int8_advice(info.delegation, runtime.name, runtime.version))


def _kind(activations: Counter, weights: Counter) -> str:
    """What the model computes in, from the dtypes of op outputs and constant tensors."""
    if activations.get("int8") or activations.get("uint8"):
        return "int8" if not activations.get("float32") else "mixed int8/float32"
    if weights.get("float16"):
        return "float16 weights (dequantized to float32 at load)"
    if weights.get("int8"):
        return "dynamic range (int8 weights, float activations)"
    return "float32"


@dataclass(frozen=True)
class Latency:
    median_ms: float
    min_ms: float
    p90_ms: float
    runs: int


def latency_interleaved(engines: Dict[str, Engine], image: np.ndarray, runs: int = 30, warmup: int = 3,
                        clock: Callable[[], float] = time.perf_counter) -> Dict[str, Latency]:
    """Time several engines in the same run, round-robin, so machine load hits them alike."""
    for e in engines.values():
        for _ in range(warmup):
            e.run(image)
    samples: Dict[str, List[float]] = {k: [] for k in engines}
    for _ in range(runs):
        for k, e in engines.items():
            t0 = clock()
            e.set_input(image)
            e.invoke()
            e.output()
            samples[k].append((clock() - t0) * 1e3)
    return {k: Latency(float(np.median(v)), float(np.min(v)), float(np.percentile(v, 90)), runs)
            for k, v in samples.items()}


def format_info(info: ModelInfo) -> str:
    def t(x: TensorInfo) -> str:
        q = f" scale={x.quantization[0]:.6g} zero={x.quantization[1]}" if x.quantization else ""
        return f"{x.name} {list(x.shape)} {x.dtype}{q}"

    lines = [f"model      {info.path}", f"size       {info.size_bytes / 1e6:.2f} MB",
             f"kind       {info.quantized}"]
    lines += [f"input      {t(x)}" for x in info.inputs]
    lines += [f"output     {t(x)}" for x in info.outputs]
    lines.append(f"compute    {info.flops / 1e9:.3f} GFLOP (multiply-add = 2)")
    lines.append("weights    " + ", ".join(f"{k} x{v}" for k, v in sorted(info.weight_dtypes.items())))
    d = info.delegation
    if d is not None:
        if not d.prepared:
            lines.append(f"xnnpack    FAILED to prepare ({d.message}); runs without XNNPACK")
        else:
            lines.append(f"xnnpack    {d.summary()} on {info.runtime}")
    if info.advice:
        lines.append(f"warning    {info.advice}")
    lines.append("ops        " + ", ".join(f"{k} {v}" for k, v in info.ops.items()))
    if info.family:
        lines.append(f"family     {info.family}")
    return "\n".join(lines) + "\n"
