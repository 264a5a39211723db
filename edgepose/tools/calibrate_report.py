"""calibrate-fps's report: the JSON document, its schema, the table and the progress line."""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Sequence

from edgepose.tools.sweep import (
    STAGES,
    Candidate,
    Choice,
    Plan,
    Progress,
    ProgressFn,
    Result,
    Skipped,
    SourceInfo,
    ThermalSample,
    chosen_values,
)

REPORT_VERSION = 1


_LAT = {"type": "object", "required": ["p50", "p95"],
        "properties": {"p50": {"type": ["number", "null"]}, "p95": {"type": ["number", "null"]}}}
_CONFIG = {"type": "object", "required": ["model", "variant", "threads", "xnnpack"],
           "properties": {"model": {"type": "string"}, "variant": {"type": "string"},
                          "threads": {"type": "integer", "minimum": 1}, "xnnpack": {"type": "boolean"}}}
REPORT_SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgepose calibrate-fps report",
    "type": "object",
    "required": ["v", "board", "cores", "source", "family", "budget_s", "elapsed_s", "candidates",
                 "skipped", "choice", "fastest", "thermal", "warnings", "written", "service"],
    "properties": {
        "v": {"const": REPORT_VERSION},
        "board": {"type": "string"},
        "cores": {"type": "integer", "minimum": 1},
        "source": {"type": "object", "required": ["uri", "kind", "live", "width", "height", "frames"],
                   "properties": {"uri": {"type": "string"},
                                  "kind": {"enum": ["camera", "file", "synthetic"]},
                                  "live": {"type": "boolean"}, "width": {"type": "integer"},
                                  "height": {"type": "integer"}, "frames": {"type": "integer"},
                                  "decode_ms": {"type": ["number", "null"]}}},
        "family": {"type": "string"},
        "budget_s": {"type": "number"},
        "elapsed_s": {"type": "number"},
        "candidates": {"type": "array", "items": {
            "type": "object",
            "required": ["model", "variant", "threads", "xnnpack", "verified", "verification", "fps",
                         "fps_rounds", "frames", "stage", "latency_ms", "throttled", "error"],
            "properties": {
                "model": {"type": "string"}, "variant": {"type": "string"},
                "threads": {"type": "integer", "minimum": 1}, "xnnpack": {"type": "boolean"},
                "xnnpack_active": {"type": ["boolean", "null"]}, "backend": {"type": ["string", "null"]},
                "xnnpack_delegation": {"type": ["object", "null"]},
                "verified": {"type": "boolean"}, "verification": {"type": "string"},
                "fps": {"type": "number", "minimum": 0}, "fps_rounds": {"type": "array", "items": {"type": "number"}},
                "frames": {"type": "integer", "minimum": 0},
                "stage": {"enum": ["final", "screen", "failed"]},
                "latency_ms": {"type": "object", "required": list(STAGES),
                               "properties": {k: _LAT for k in STAGES}},
                "throttled": {"type": "boolean"},
                "temp_c_max": {"type": ["number", "null"]},
                "error": {"type": "string"}}}},
        "skipped": {"type": "array", "items": {"type": "object", "required": ["model", "reason"]}},
        "choice": {"allOf": [_CONFIG, {"type": "object", "required": ["fps", "max_fps", "verified", "config"],
                                       "properties": {"fps": {"type": "number"},
                                                      "max_fps": {"type": "number"},
                                                      "verified": {"type": "boolean"},
                                                      "config": {"type": "object"}}}]},
        "fastest": {"allOf": [_CONFIG, {"type": "object", "required": ["fps", "verified"]}]},
        "thermal": {"type": "object", "required": ["available", "source", "throttled", "temp_c_max"],
                    "properties": {"available": {"type": "boolean"}, "source": {"type": "string"},
                                   "throttled": {"type": "boolean"},
                                   "temp_c_max": {"type": ["number", "null"]}}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "written": {"type": ["string", "null"]},
        "service": {"type": ["string", "null"]},
    },
}


def _config_dict(c: Candidate) -> Dict[str, Any]:
    return {"model": c.variant.name, "variant": c.variant.kind, "threads": c.threads, "xnnpack": c.xnnpack}


def result_dict(r: Result) -> Dict[str, Any]:
    c = r.candidate
    last = r.slices[-1] if r.slices else None
    temps = [t for s in r.slices for t in s.temp_c if t is not None]
    return {**_config_dict(c),
            "xnnpack_active": last.xnnpack_active if last else None,
            "backend": last.backend if last else None,
            "xnnpack_delegation": last.xnnpack_ops if last else None,
            "verified": c.variant.verified, "verification": c.variant.why,
            "fps": round(r.fps, 2), "fps_rounds": [round(s.fps, 2) for s in (r.finals or r.slices)],
            "frames": sum(s.frames for s in r.slices),
            "stage": "final" if r.finalist else ("screen" if r.slices else "failed"),
            "latency_ms": r.latency(), "throttled": r.throttled,
            "temp_c_max": max(temps) if temps else None, "error": r.error}


def build_report(results: Sequence[Result], choice: Choice, skipped: Sequence[Skipped], source: SourceInfo,
                 family: str, plan: Plan, elapsed_s: float, thermal: Sequence[ThermalSample],
                 board_name: str, cores: int, warnings: Sequence[str] = ()) -> Dict[str, Any]:
    measured = [r for r in results if r.slices]
    fastest = max(measured, key=lambda r: r.fps)
    temps = [t.temp_c for t in thermal if t.temp_c is not None]
    th = [t.throttle for t in thermal]
    ordered = sorted(results, key=lambda r: (not r.finalist, -r.fps))
    pick = choice.result
    return {
        "v": REPORT_VERSION, "board": board_name, "cores": cores,
        "source": {"uri": source.uri, "kind": source.kind, "live": source.live, "width": source.width,
                   "height": source.height, "frames": source.frames, "decode_ms": source.decode_ms},
        "family": family, "budget_s": plan.budget_s, "elapsed_s": round(elapsed_s, 1),
        "candidates": [result_dict(r) for r in ordered],
        "skipped": [{"model": s.name, "reason": s.reason} for s in skipped],
        "choice": {**_config_dict(pick.candidate), "fps": round(pick.fps, 2), "max_fps": choice.max_fps,
                   "verified": pick.candidate.variant.verified,
                   "config": chosen_values(choice)},
        "fastest": {**_config_dict(fastest.candidate), "fps": round(fastest.fps, 2),
                    "verified": fastest.candidate.variant.verified},
        "thermal": {"available": any(t.available for t in th),
                    "source": next((t.source for t in th if t.available), ""),
                    "throttled": any(r.throttled for r in results),
                    "temp_c_max": max(temps) if temps else None},
        "warnings": list(warnings), "written": None, "service": None,
    }


def _ms(d: Dict[str, Optional[float]], both: bool = False) -> str:
    if d["p50"] is None:
        return "-"
    return f"{d['p50']:.1f}/{d['p95']:.1f}" if both else f"{d['p50']:.1f}"


def format_table(report: Dict[str, Any]) -> str:
    """The human-readable summary (stdout of ``edgepose calibrate-fps``)."""
    src = report["source"]
    lines = [f"edgepose calibrate-fps on {report['board']} ({report['cores']} cores), source {src['uri']} "
             f"({src['kind']}, {src['width']}x{src['height']}), {report['elapsed_s']:.0f} s", ""]
    head = ("model", "threads", "xnnpack", "fps", "capture", "preproc", "infer p50/p95", "decode",
            "total p50/p95", "verified", "")
    rows = [head]
    ch = report["choice"]
    for c in report["candidates"]:
        lat = c["latency_ms"]
        mark = "<- chosen" if (c["model"], c["threads"], c["xnnpack"]) == (ch["model"], ch["threads"],
                                                                          ch["xnnpack"]) else ""
        if c["stage"] == "screen":
            mark = mark or "(screened out)"
        if not c["verified"] and not mark.startswith("<-"):
            mark = (mark + " (not verified: see below)").strip()
        if c["stage"] == "failed":
            mark = f"failed: {c['error']}"
        if c["throttled"]:
            mark += " THROTTLED"
        x = c.get("xnnpack_delegation")
        rows.append((c["model"], str(c["threads"]),
                     "off" if not c["xnnpack"] else f"on {x['delegated_ops']}/{x['total_ops']}" if x else "on",
                     f"{c['fps']:.1f}" if c["stage"] != "failed" else "-",
                     _ms(lat["capture"]), _ms(lat["preprocess"]), _ms(lat["infer"], True), _ms(lat["decode"]),
                     _ms(lat["total"], True), "yes" if c["verified"] else "NO", mark.strip()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {1, 3, 4, 5, 6, 7, 8}
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(head))]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    for s in report["skipped"]:
        lines.append(f"not swept: {s['model']}: {s['reason']}")
    unverified = {c["model"]: c["verification"] for c in report["candidates"] if not c["verified"]}
    for name, why in unverified.items():
        lines.append(f"not verified: {name}: {why}")
    lines.append("latency in ms (p50, or p50/p95); fps = sustained frames per second of the whole pipeline; "
                 "xnnpack on N/M: XNNPACK took N of the model's M ops")
    th = report["thermal"]
    if th["available"] or th["temp_c_max"] is not None:
        temp = f", max {th['temp_c_max']:.1f} C" if th["temp_c_max"] is not None else ""
        lines.append(f"thermal: {'THROTTLED during the sweep' if th['throttled'] else 'not throttled'}"
                     f" ({th['source'] or 'temperature only'}{temp})")
    else:
        lines.append("thermal: this board reports no temperature or throttling")
    fastest = report["fastest"]
    lines.append("")
    lines.append(f"chosen: {ch['model']}, {ch['threads']} thread(s), XNNPACK {'on' if ch['xnnpack'] else 'off'}: "
                 f"{ch['fps']:.1f} fps sustained; recommended cap {ch['max_fps']:.1f} fps")
    if not fastest["verified"] and fastest["fps"] > ch["fps"]:
        lines.append(f"  ({fastest['model']} would give {fastest['fps']:.1f} fps but is not verified: "
                     f"{unverified.get(fastest['model']) or 'see its fidelity report'}; or pass --allow-unverified)")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    if report["written"]:
        lines.append(f"wrote model.name, runtime.threads, runtime.xnnpack, runtime.max_fps to {report['written']}")
    elif not report["written"]:
        lines.append("not saved: add --write [CONFIG] to save it (or --apply to also restart the service)")
    if report["service"]:
        lines.append(report["service"])
    return "\n".join(lines) + "\n"


# --- the progress bar ------------------------------------------------------------------------------

def progress_printer(stream=None) -> ProgressFn:
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()

    def show(p: Progress) -> None:
        width = 24
        filled = int(width * p.fraction)
        eta = f"{int(p.eta_s // 60)}:{int(p.eta_s % 60):02d}"
        fps = f"{p.fps:6.1f} fps" if p.fps is not None else "  failed  "
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {p.fraction:4.0%} #{p.done:<3} {p.phase:<6} "
                f"{p.label:<34} {fps}  about {eta} left")
        if tty:
            stream.write("\r" + line + ("\n" if p.eta_s <= 0 else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show
