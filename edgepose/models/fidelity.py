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
    """The acceptance goals a report is checked against (issue #21; issue #5's 97% agreement is replaced).

    A quantized model keeps accuracy when, on the annotated people of ``--eval``, its PCK@0.1 and its
    PCK@0.05 against the truth are each at most ``max_pck_drop`` below the float model's.  A drop of 1.0
    point is resolvable only on a few hundred people (``../shared/data/eval-lspet``: 600), hence
    ``min_people``.  Keypoint agreement with float stays in the report as information: it counts
    keypoints float itself does not see, and does not measure accuracy.
    """

    partitions: int = 1
    max_pck_drop: float = 0.01  # absolute (1.0 PCK point), for each of PCK_KEYS
    min_people: int = 200


PCK_KEYS = ("pck@0.1", "pck@0.05")  # the accuracy numbers the verdict compares, float vs quantized
FIDELITY_GOALS = PCK_KEYS + ("eval_people",)  # of check_goals: the accuracy goals (not speed)


def check_goals(report: dict, goals: Goals = Goals()) -> Dict[str, Optional[bool]]:
    """Goal name -> met (None when the report has no numbers for it)."""
    x = report.get("xnnpack", {}).get("quantized") or {}
    out: Dict[str, Optional[bool]] = {
        "one_xnnpack_partition": bool(x.get("prepared")) and x.get("partitions") == goals.partitions
        and x.get("delegated_nodes") == x.get("total_nodes")}
    fid = report.get("fidelity")
    for key in PCK_KEYS:
        out[key] = (float(fid["pck_float"][key]) - float(fid["pck_quant"][key]) <= goals.max_pck_drop + 1e-9
                    ) if fid else None
    out["eval_people"] = int(fid["people"]) >= goals.min_people if fid else None
    return out


def _pck_detail(fid: Mapping) -> str:
    """'PCK@0.1 float 67.4 / quantized 67.0, ...; agreement with float 90.7% (information)' from a report."""
    parts = []
    for key in PCK_KEYS:
        try:
            parts.append(f"{key.upper()} float {100 * float(fid['pck_float'][key]):.1f} / quantized "
                         f"{100 * float(fid['pck_quant'][key]):.1f}")
        except (KeyError, TypeError, ValueError):
            pass
    if isinstance(fid.get("people"), int):
        parts.append(f"on {fid['people']} people")
    if isinstance(fid.get("agreement"), (int, float)):
        parts.append(f"keypoint agreement with float {fid['agreement']:.1%} (information)")
    return ", ".join(parts)


def fidelity_verdict(report: Any, goals: Goals = Goals()) -> Tuple[bool, str]:
    """Whether a locally built model's report (``edgepose models quantize``) shows it keeps accuracy.

    The goals are re-checked from the numbers in the report with :func:`check_goals`: PCK@0.1 and
    PCK@0.05 against the truth each within 1.0 point of the float model's, measured on at least
    ``goals.min_people`` people; all must be met.  No fidelity numbers (the model was built without
    ``--eval``) means *not verified*.
    """
    if not isinstance(report, Mapping) or not isinstance(report.get("fidelity"), Mapping):
        return False, "its report has no fidelity results (build it with `edgepose models quantize ... --eval`)"
    try:
        met = check_goals(dict(report), goals)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return False, f"its report's fidelity results are incomplete (no {e})"
    detail = _pck_detail(report["fidelity"])
    missed = [g for g in FIDELITY_GOALS if met.get(g) is not True]
    if not missed:
        return True, f"passes its fidelity goals ({detail})"
    why = [f"{g} drops more than {100 * goals.max_pck_drop:.1f} point(s)" for g in missed if g in PCK_KEYS]
    if "eval_people" in missed:
        why.append(f"measured on fewer than {goals.min_people} people (build it with --eval on a few hundred, "
                   "e.g. ../shared/data/eval-lspet)")
    return False, "fails its fidelity goals: " + "; ".join(why) + f" ({detail})"


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
