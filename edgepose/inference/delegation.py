"""How much of a model XNNPACK took: partitions, delegated operators, int8 operators left behind.

Read from an interpreter after ``allocate_tensors()`` (when the runtime
applies its default delegates): the op list of both runtimes keeps the
original nodes and adds one ``DELEGATE`` node per XNNPACK partition. The
runtime's native line "Replacing N out of M node(s) with delegate (...) node,
yielding K partitions", printed when the delegation is partial, gives the
counts directly when it is there.

tflite-runtime 2.14 (the last release, and the only one for numpy 1.x on
some boards) was built without XNNPACK's int8 kernels: every int8 operator
stays on the built-in kernels, 18 to 40 times slower than under LiteRT
(docs/performance.md, "Runtimes"). :func:`int8_advice` says so, and names the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol

import numpy as np

from edgepose.core.errors import ModelError
from edgepose.core.payload import XnnpackDelegation

TensorDetails = Dict[str, Any]  # one entry of get_input_details() and the like: index, name, shape, dtype, ...


class Interpreter(Protocol):
    """What edgepose uses of a TFLite interpreter (LiteRT's and tflite-runtime's, which ship no types)."""

    def allocate_tensors(self) -> None: ...
    def invoke(self) -> None: ...
    def get_input_details(self) -> List[TensorDetails]: ...
    def get_output_details(self) -> List[TensorDetails]: ...
    def get_tensor_details(self) -> List[TensorDetails]: ...
    def _get_ops_details(self) -> List[Dict[str, Any]]: ...
    def tensor(self, tensor_index: int) -> Callable[[], np.ndarray]: ...
    def get_tensor(self, tensor_index: int) -> np.ndarray: ...


REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, "
                       r"yielding (\d+) partitions")
INT8 = (np.int8, np.uint8)
LITERT_FIX = ("install LiteRT beside it (pip install 'ai-edge-litert>=1.4,<1.5'; deploy/install.sh does "
              "this on a Raspberry Pi) and set runtime.backend = \"litert\"")


@dataclass(frozen=True)
class Delegation:
    partitions: int  # XNNPACK delegate nodes (1 = the whole graph runs as one XNNPACK subgraph)
    delegated_nodes: int
    total_nodes: int
    prepared: bool  # False: XNNPACK failed to prepare the graph
    message: str = ""
    int8_nodes: int = 0  # operators that produce int8/uint8 tensors
    int8_delegated: int = 0  # ... of which XNNPACK took

    @property
    def whole(self) -> bool:
        return self.prepared and self.partitions == 1 and self.delegated_nodes == self.total_nodes

    @property
    def int8_left_out(self) -> bool:
        """An int8 model none of whose int8 operators XNNPACK took."""
        return self.int8_nodes > 0 and self.int8_delegated == 0

    def summary(self) -> str:
        """``1 partition, 259 of 259 ops`` (the status line, calibrate-fps, the log)."""
        if not self.prepared:
            return f"failed to prepare ({self.message})" if self.message else "failed to prepare"
        s = f"{self.partitions} partition{'' if self.partitions == 1 else 's'}, " \
            f"{self.delegated_nodes} of {self.total_nodes} ops"
        if self.int8_nodes and self.int8_delegated < self.int8_nodes:
            s += f" ({self.int8_delegated} of {self.int8_nodes} int8 ops)"
        return s

    def to_status(self) -> XnnpackDelegation:
        """The ``xnnpack_delegation`` object of the status topic (docs/mqtt.md)."""
        return {"partitions": self.partitions, "delegated_ops": self.delegated_nodes,
                "total_ops": self.total_nodes, "int8_ops": self.int8_nodes,
                "int8_delegated": self.int8_delegated}


def read_table(read: Callable[[], List[Any]], model: object) -> List[Any]:
    """One of an interpreter's tables (``_get_ops_details``, ``get_tensor_details``); a damaged file
    whose op or tensor names are not text is a ModelError (exit 65), not a UnicodeDecodeError."""
    try:
        return read()
    except UnicodeDecodeError as e:
        raise ModelError(f"model {model} is corrupt: a name in its op or tensor table is not text "
                         f"({e.reason})") from None


def count(interp: Interpreter, native_log: str = "", model: object = "the model") -> Delegation:
    """The delegation of an interpreter whose tensors are allocated (default delegates applied).

    ``native_log``: what the runtime printed on fd 2 meanwhile (for the "Replacing ..." line);
    ``model``: what to call it in an error.
    """
    ops = read_table(interp._get_ops_details, model)  # noqa: SLF001 - the only op-level API of both runtimes
    inputs = {d["index"] for d in interp.get_input_details()}
    outputs = {d["index"] for d in interp.get_output_details()}
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    kept = undelegated_ops(ops, inputs, outputs)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in read_table(interp.get_tensor_details, model)}
    int8 = {o["index"] for o in originals if any(dtypes.get(int(t)) in INT8 for t in o["outputs"])}
    int8_delegated = len(int8 - {o["index"] for o in kept}) if delegates else 0
    total = len(originals)
    m = REPLACING.search(native_log)
    if m:
        return Delegation(int(m.group(4)), int(m.group(1)), int(m.group(2)), True, m.group(0),
                          len(int8), int8_delegated)
    return Delegation(len(delegates), total - len(kept) if delegates else 0, total, True, "",
                      len(int8), int8_delegated)


def undelegated_ops(ops: List[dict], graph_inputs: set, graph_outputs: set) -> List[dict]:
    """The original ops the runtime still executes itself after delegation.

    Walks back from every delegate input and graph output that no delegate
    produces, through the producing ops, until delegate outputs, graph inputs
    or constants are reached.
    """
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    d_out = {int(t) for o in delegates for t in o["outputs"]}
    d_in = {int(t) for o in delegates for t in o["inputs"]}
    producer = {int(t): o for o in ops if o["op_name"] != "DELEGATE" for t in o["outputs"]}
    if not delegates:
        return [o for o in ops]
    todo = [t for t in (d_in | set(graph_outputs)) if t not in d_out and t not in graph_inputs and t in producer]
    found: Dict[int, dict] = {}
    while todo:
        op = producer[todo.pop()]
        if op["index"] in found:
            continue
        found[op["index"]] = op
        todo += [int(i) for i in op["inputs"]
                 if i >= 0 and int(i) not in d_out and int(i) not in graph_inputs and int(i) in producer]
    return sorted(found.values(), key=lambda o: o["index"])


def int8_advice(d: Optional[Delegation], backend: str, version: str) -> str:
    """Why an int8 model is slow on this runtime and the fix; "" when XNNPACK took its int8 ops."""
    if d is None or not d.prepared or not d.int8_left_out:
        return ""
    text = (f"XNNPACK took none of the model's {d.int8_nodes} int8 operators on {backend} {version}, "
            f"so they run on the slow built-in kernels")
    if backend == "tflite-runtime":
        text += f" (that runtime has no int8 XNNPACK kernels): {LITERT_FIX}"
    return text
