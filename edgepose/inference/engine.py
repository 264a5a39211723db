"""The inference engine: one interface over LiteRT (ai-edge-litert) and tflite-runtime.

* discovers input size, dtype and quantization, output grid and keypoint count
  from the model itself;
* takes BGR uint8 images already at the input size and writes them straight
  into the interpreter's input buffer (quantizing when the input is int8/uint8,
  in the model's colour order: RGB models such as MoveNet get the channels
  swapped);
* dequantizes int8/uint8 outputs to float32 heatmaps;
* applies XNNPACK by default with a thread count; if the delegate fails to
  prepare, logs one warning and runs without it;
* reports how much of the model XNNPACK took (``Engine.delegation``: partitions,
  delegated ops of all ops, int8 ops) and warns once when an int8 model lands on
  a runtime whose XNNPACK cannot take int8 operators (tflite-runtime 2.14).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Tuple, Union

import numpy as np

from edgepose.core.errors import ModelError, RuntimeMissingError
from edgepose.core.files import absent
from edgepose.inference import delegation as delegation_mod
from edgepose.inference.delegation import Delegation, Interpreter

log = logging.getLogger(__name__)

BACKENDS = ("litert", "tflite-runtime")
MAX_TENSOR_BYTES = 1 << 30  # all tensors as declared; the upstream models declare under 100 MB (a test)
_MODULES = {"litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
            "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime")}


@dataclass(frozen=True)
class Runtime:
    name: str  # "litert" or "tflite-runtime"
    version: str
    module: Any  # the interpreter module


def load_runtime(backend: str = "auto") -> Runtime:
    """Import a TFLite runtime lazily; ``auto`` prefers LiteRT, then tflite-runtime."""
    names = BACKENDS if backend == "auto" else (backend,)
    problems = []
    for name in names:
        if name not in _MODULES:
            raise RuntimeMissingError(f"unknown backend {name!r}; choose auto, litert or tflite-runtime")
        modname, dist = _MODULES[name]
        try:
            module = importlib.import_module(modname)
        except ImportError as e:
            problems.append(f"{dist}: {e}")
            continue
        try:
            from importlib.metadata import version
            ver = version(dist)
        except Exception:  # pragma: no cover - metadata missing
            ver = "unknown"
        return Runtime(name, ver, module)
    hint = ("install one with `pip install ai-edge-litert` (Python 3.10+) or "
            "`pip install 'edgepose[tflite]'` (tflite-runtime, Python <= 3.11, numpy<2)")
    raise RuntimeMissingError("no TFLite runtime could be imported (" + "; ".join(problems) + "); " + hint)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelSpec:
    """What the model itself says about its I/O."""

    input_h: int
    input_w: int
    input_dtype: np.dtype
    input_quant: Tuple[float, int]  # (scale, zero_point); (0.0, 0) when float
    grid_h: int
    grid_w: int
    num_keypoints: int
    output_dtype: np.dtype
    output_quant: Tuple[float, int]


@dataclass(frozen=True)
class Signature:
    """A model file's input and output tensors, read without preparing the model."""

    input_shape: Tuple[int, ...]
    input_dtype: np.dtype
    output_shape: Tuple[int, ...]
    output_dtype: np.dtype


def _interpreter(mod: Any, path: Path, **kwargs: Any) -> Tuple[Interpreter, str]:
    """``mod.Interpreter`` for ``path``, and what the runtime printed while making it (the XNNPACK
    delegate's own lines); a missing or non-TFLite file is a ModelError (exit 65/66)."""
    if not path.is_file():
        raise ModelError(f"model file {path} {absent(path)}")
    try:
        with native_info_to_log() as native:
            interp = mod.Interpreter(model_path=str(path), **kwargs)
        return interp, native.text
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"cannot load model {path}: not a valid TFLite model ({_first_line(e)})") from None


def read_signature(model_path: Path, runtime: Optional[Runtime] = None, backend: str = "auto") -> Signature:
    """The input/output shapes and dtypes of a .tflite file (the first input and output)."""
    interp, _ = _interpreter((runtime or load_runtime(backend)).module, Path(model_path))
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if not ins or not outs:
        raise ModelError(f"model {model_path} has no input or no output tensor")
    return Signature(tuple(int(d) for d in ins[0]["shape"]), np.dtype(ins[0]["dtype"]),
                     tuple(int(d) for d in outs[0]["shape"]), np.dtype(outs[0]["dtype"]))


class ModelFile(Protocol):
    """What the engine needs of a resolved model (:class:`edgepose.models.resolved.ResolvedModel`)."""

    @property
    def path(self) -> Path: ...

    @property
    def input_color(self) -> str: ...


class Engine:
    """A loaded model, ready to run on one image at a time.

    ``model``: a resolved model (its file and input colour order), or a path
    to a BGR model.
    """

    def __init__(self, model: Union[ModelFile, Path, str], threads: int = 0, xnnpack: bool = True,
                 backend: str = "auto", runtime: Optional[Runtime] = None):
        if isinstance(model, (str, os.PathLike)):
            self.path, self.color = Path(model), "BGR"
        else:
            self.path, self.color = Path(model.path), model.input_color
        self.runtime = runtime or load_runtime(backend)
        self.threads = threads or default_threads()
        self.xnnpack_requested = xnnpack
        self.xnnpack = False
        self.delegation: Optional[Delegation] = None  # None: XNNPACK not requested (or not prepared)
        self.int8_advice = ""  # why this int8 model is slow on this runtime, and the fix (logged once)
        self._interp = self._create(xnnpack)
        self.spec = self._inspect()
        self._in_index = self._interp.get_input_details()[0]["index"]
        self._out_index = self._interp.get_output_details()[0]["index"]
        scale, zero = self.spec.input_quant
        self._in_affine = (1.0 / scale, zero) if self.spec.input_dtype != np.float32 and scale else None
        # called as each invoke() starts: the daemon's publisher thread does its Python work then, while this
        # thread holds no GIL for milliseconds, instead of taking the GIL between two inferences
        self.before_invoke: Optional[Callable[[], None]] = None
        self._prove()

    # -- construction -------------------------------------------------
    def _create(self, xnnpack: bool) -> Interpreter:
        mod = self.runtime.module
        kwargs: dict = {"num_threads": self.threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interp, loaded = _interpreter(mod, self.path, **kwargs)
        self._check_declared_size(interp)
        try:
            with native_info_to_log() as prepared:
                interp.allocate_tensors()
        except RuntimeError as e:
            if not xnnpack:
                raise ModelError(f"cannot prepare model {self.path}: {_first_line(e)}") from None
            log.warning("XNNPACK could not prepare %s (%s); running without it", self.path.name,
                        _first_line(e))
            return self._create(False)
        if xnnpack:
            self.delegation = delegation_mod.count(interp, loaded + prepared.text, self.path)
            self.xnnpack = self.delegation.partitions > 0
            self.int8_advice = delegation_mod.int8_advice(self.delegation, self.runtime.name,
                                                          self.runtime.version)
            if self.int8_advice:
                log.warning("%s: %s", self.path.name, self.int8_advice)
            elif not self.xnnpack:
                log.warning("XNNPACK took no part of %s on %s %s; running on the built-in kernels",
                            self.path.name, self.runtime.name, self.runtime.version)
        return interp

    def _check_declared_size(self, interp: Interpreter) -> None:
        """Refuse a model whose tensors, as the file declares them, need more than MAX_TENSOR_BYTES: a
        flipped byte in a shape (a [1, 13500419, 3, 144] activation: 23 GB) had XNNPACK's preparation in
        ``allocate_tensors`` take memory until the kernel killed the process (tests/test_hostile.py)."""
        total = declared_tensor_bytes(interp, self.path)
        if total > MAX_TENSOR_BYTES:
            raise ModelError(f"model {self.path} declares {total / 2**30:.1f} GiB of tensors, more than the "
                             f"{MAX_TENSOR_BYTES / 2**30:g} GiB a pose model may take: the file is corrupt")

    def _inspect(self) -> ModelSpec:
        ins = self._interp.get_input_details()
        outs = self._interp.get_output_details()
        if len(ins) != 1:
            raise ModelError(f"model {self.path} has {len(ins)} inputs; edgepose needs exactly one image input")
        i, o = ins[0], outs[0]
        if len(i["shape"]) != 4 or i["shape"][3] != 3:
            raise ModelError(f"model {self.path} input shape {[int(d) for d in i['shape']]} is not [1, H, W, 3]")
        if len(o["shape"]) != 4:
            raise ModelError(f"model {self.path} output shape {[int(d) for d in o['shape']]} is not a heatmap "
                             f"[1, H, W, K]")
        return ModelSpec(
            input_h=int(i["shape"][1]), input_w=int(i["shape"][2]),
            input_dtype=np.dtype(i["dtype"]), input_quant=tuple(i["quantization"]),
            grid_h=int(o["shape"][1]), grid_w=int(o["shape"][2]), num_keypoints=int(o["shape"][3]),
            output_dtype=np.dtype(o["dtype"]), output_quant=tuple(o["quantization"]),
        )

    def _prove(self) -> None:
        """One inference on a black image before the engine is handed out: a corrupt file can load and
        allocate, then fail at its first invoke (``Input tensor N lacks data``); that is a bad model
        (ModelError, exit 65), found here rather than at the first frame of a running daemon."""
        try:
            self.run(np.zeros((self.spec.input_h, self.spec.input_w, 3), np.uint8))
        except (RuntimeError, ValueError, TypeError) as e:  # TypeError: an input of a type images are not
            raise ModelError(f"model {self.path} loads but fails at its first inference ({_first_line(e)}): "
                             f"the file is corrupt or needs what this runtime does not have") from None

    # -- running ------------------------------------------------------
    @property
    def input_size(self) -> Tuple[int, int]:
        """(width, height) of the model input."""
        return self.spec.input_w, self.spec.input_h

    def set_input(self, image_bgr: np.ndarray) -> None:
        """Write an HxWx3 BGR uint8 (or float) image into the input tensor, in place (channels swapped
        for an RGB model)."""
        view = self._interp.tensor(self._in_index)()[0]
        if self.color == "RGB":
            if self._in_affine is None and view.dtype == image_bgr.dtype == np.uint8:
                import cv2  # here, not at the top: the tflite-runtime venvs of the benchmarks have no OpenCV

                # one vectorised pass; numpy's copy of a reversed channel axis goes element by element
                cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB, dst=view)
                del view
                return
            image_bgr = image_bgr[..., ::-1]
        if self._in_affine is None:
            np.copyto(view, image_bgr, casting="unsafe")
        else:
            inv_scale, zero = self._in_affine
            q = np.rint(image_bgr.astype(np.float32) * inv_scale + zero)
            info = np.iinfo(view.dtype)
            np.copyto(view, np.clip(q, info.min, info.max), casting="unsafe")
        del view  # no reference may outlive the call into invoke()

    def invoke(self) -> None:
        if self.before_invoke is not None:
            self.before_invoke()
        self._interp.invoke()

    def output(self) -> np.ndarray:
        """The output without its batch axis as float32 (a copy, dequantized when needed): heatmaps
        (H, W, K), or (1, K, 3) for a regression model."""
        raw: np.ndarray = self._interp.get_tensor(self._out_index)[0]
        if raw.dtype == np.float32:
            return raw
        scale, zero = self.spec.output_quant
        dequantized: np.ndarray = (raw.astype(np.float32) - zero) * np.float32(scale)
        return dequantized

    def run(self, image_bgr: np.ndarray) -> np.ndarray:
        self.set_input(image_bgr)
        self.invoke()
        return self.output()

    def describe(self) -> dict:
        return {"backend": self.runtime.name, "backend_version": self.runtime.version,
                "xnnpack": self.xnnpack, "threads": self.threads,
                "xnnpack_delegation": self.delegation.to_status() if self.delegation else None,
                "input": [self.spec.input_h, self.spec.input_w, 3],
                "input_dtype": self.spec.input_dtype.name, "input_color": self.color,
                "output": [self.spec.grid_h, self.spec.grid_w, self.spec.num_keypoints],
                "output_dtype": self.spec.output_dtype.name}


def declared_tensor_bytes(interp: Interpreter, model: object = "the model") -> int:
    """The bytes of all tensors of a loaded (not yet allocated) interpreter, at the shapes the file declares."""
    total = 0
    for t in delegation_mod.read_table(interp.get_tensor_details, model):
        count = 1
        for d in t["shape"]:
            count *= max(int(d), 1)
        total += count * np.dtype(t["dtype"]).itemsize
    return total


class NativeLog:
    """What the runtime printed on fd 2 inside :func:`native_info_to_log` (``text``, once it ended)."""

    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def native_info_to_log(passthrough: bool = True) -> Iterator[NativeLog]:
    """Route the runtime's native ``INFO: ...`` lines on stderr (``Created TensorFlow Lite XNNPACK
    delegate for CPU.``, printed by C++ on every load, no Python switch) to the debug log.

    File descriptor 2 points to a temporary file meanwhile; every other line
    written there (a warning from the runtime, a log line of another thread)
    is passed on to the real stderr unchanged when the block ends (unless
    ``passthrough`` is False). Yields a :class:`NativeLog` that holds all of
    it afterwards.
    """
    captured = NativeLog()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to tidy
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")
            for line in captured.text.splitlines(keepends=True):
                if line.startswith("INFO: "):
                    log.debug("runtime: %s", line.strip())
                elif passthrough:
                    os.write(2, line.encode("utf-8", "replace"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
