"""What a locally built model's report promises: the accuracy goals and the verdict calibrate-fps trusts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edgepose.core.errors import ModelError
from edgepose.models import registry


@dataclass(frozen=True)
class Goals:
    """The acceptance goals a report is checked against (issue #5)."""

    partitions: int = 1
    agreement: float = 0.97
    max_pck_drop: float = 0.01  # PCK@0.1, absolute


def check_goals(report: dict, goals: Goals = Goals()) -> Dict[str, Optional[bool]]:
    """Goal name -> met (None when the report has no numbers for it)."""
    x = report.get("xnnpack", {}).get("quantized") or {}
    out: Dict[str, Optional[bool]] = {
        "one_xnnpack_partition": bool(x.get("prepared")) and x.get("partitions") == goals.partitions
        and x.get("delegated_nodes") == x.get("total_nodes")}
    fid = report.get("fidelity")
    if fid:
        out["agreement"] = fid["agreement"] >= goals.agreement
        out["pck_drop"] = (fid["pck_float"]["pck@0.1"] - fid["pck_quant"]["pck@0.1"]) <= goals.max_pck_drop + 1e-9
    else:
        out["agreement"] = out["pck_drop"] = None
    return out


FIDELITY_GOALS = ("agreement", "pck_drop")  # of quantize.check_goals: the accuracy goals (not speed)


def fidelity_verdict(report: Any) -> Tuple[bool, str]:
    """Whether a locally built model's report (``edgepose models quantize``) shows it keeps accuracy.

    The goals are re-checked from the numbers in the report with
    :func:`check_goals` (keypoint agreement with the float
    model, PCK@0.1 drop); both must be met.  No fidelity numbers (the model
    was built without ``--eval``) means *not verified*.
    """
    if not isinstance(report, Mapping) or not isinstance(report.get("fidelity"), Mapping):
        return False, "its report has no fidelity results (build it with `edgepose models quantize ... --eval`)"
    try:
        goals = check_goals(dict(report))
    except (KeyError, TypeError, AttributeError) as e:
        return False, f"its report's fidelity results are incomplete ({e})"
    fid = report["fidelity"]
    detail = f"keypoint agreement with float {fid['agreement']:.1%}" if isinstance(
        fid.get("agreement"), (int, float)) else ""
    missed = [g for g in FIDELITY_GOALS if goals.get(g) is not True]
    if not missed:
        return True, "passes its fidelity goals" + (f" ({detail})" if detail else "")
    return False, "fails its fidelity goals: " + ", ".join(missed) + (f" ({detail})" if detail else "")


def read_verdict(model_path: Path) -> Tuple[bool, str]:
    """The verdict of the report beside ``model_path`` (which must describe this very file)."""
    report = registry.report_path(model_path)
    if not report.is_file():
        return False, f"no fidelity report ({report.name} is missing)"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        return False, f"unreadable fidelity report {report}: {e}"
    try:
        registry.verify_local(Path(model_path))
    except ModelError as e:
        return False, f"its report describes another file ({e})"
    return fidelity_verdict(data)
