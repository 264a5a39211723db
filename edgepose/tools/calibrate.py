"""``edgepose calibrate-fps``: find the fastest configuration this board sustains, and save it.

The command: options, the sweep (:mod:`edgepose.tools.sweep`: what is measured and how, and how the
choice is made), the report (:mod:`edgepose.tools.calibrate_report`), writing the choice into the
config (:mod:`edgepose.core.config_write`) and restarting the service (:mod:`edgepose.daemon.systemd`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from edgepose.core import config as config_mod
from edgepose.core.config_write import config_target, write_config
from edgepose.core.errors import EdgeposeError, ModelError, UsageError
from edgepose.daemon import board
from edgepose.daemon.systemd import SERVICE_UNIT, restart_service
from edgepose.inference.engine import Engine, default_threads
from edgepose.models import registry
from edgepose.tools.calibrate_report import build_report, format_table, progress_printer
from edgepose.tools.sweep import (
    Bench,
    Choice,
    Plan,
    ProgressFn,
    ThermalProbe,
    enumerate_candidates,
    family_of,
    find_variants,
    open_frames,
    parse_int_list,
    recommend_cap,
    select,
    sweep,
)

log = logging.getLogger(__name__)

# the flags calibrate-fps shares with `edgepose run`, applied to the config the same way
SHARED_WITH_RUN = ("camera", "source", "model", "model_mirror", "backend")


# --- putting it together ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    plan: Plan = Plan()
    threads: Optional[Sequence[int]] = None  # default 1..cores
    xnnpack: Sequence[bool] = (True, False)
    kinds: Optional[Sequence[str]] = None
    allow_unverified: bool = False
    headroom: float = 0.9


def calibrate(cfg: config_mod.Config, opts: Options = Options(), probe: Optional[ThermalProbe] = None,
              progress: Optional[ProgressFn] = None, catalogue=None, opener=None,
              engine_factory: Callable[..., Engine] = Engine, board_root: str = "/") -> Dict[str, Any]:
    """Run the whole calibration and return the report dict (nothing is written)."""
    t0 = time.monotonic()
    probe = probe or ThermalProbe(board_root)
    by_path = registry.looks_like_path(cfg.model.name)
    if catalogue is None and not by_path:
        catalogue = registry.load_catalogue()
    family = cfg.model.name if by_path else family_of(cfg.model.name, catalogue)
    source, info = open_frames(cfg, opener)  # the camera first: fail fast without one
    try:
        variants, skipped = find_variants(cfg.model.name, Path(cfg.model.dir) if cfg.model.dir else None,
                                          cfg.model.mirror, catalogue, opts.kinds,
                                          registry.stderr_progress())
        if not opts.allow_unverified and not any(v.verified for v in variants):
            raise ModelError("no verified model variant to choose from: "
                             + "; ".join(f"{v.name}: {v.why}" for v in variants)
                             + " (use --allow-unverified to choose among them anyway)")
        cores = default_threads()
        threads = list(opts.threads or range(1, cores + 1))
        candidates = enumerate_candidates(variants, threads, opts.xnnpack)
        bench = Bench(cfg, source, probe, engine_factory)
        log.info("sweeping %d configuration(s) of %s on %s (about %.0f s)", len(candidates), family,
                 info.describe(), opts.plan.budget_s)
        results = sweep(candidates, bench, opts.plan, opts.allow_unverified, progress)
        bench.release()
    finally:
        source.close()
    choice = select(results, opts.allow_unverified)
    choice = Choice(choice.result, recommend_cap(choice.result.fps, opts.headroom), choice.near_ties)
    warnings = []
    if any(r.throttled for r in results):
        bad = [r.candidate.label for r in results if r.throttled]
        reasons = sorted({x for r in results for s in r.slices for x in s.reasons})
        warnings.append(f"throttled during {len(bad)} measurement(s) ({', '.join(reasons) or 'unknown reason'}): "
                        f"numbers are lower than a cool board gives; improve cooling or the power supply "
                        f"and run again")
    if choice.result.throttled:
        warnings.append("the chosen configuration itself was measured while throttled")
    warnings += list(dict.fromkeys(f"{r.candidate.variant.name} is slow here: {s.int8_advice}"
                                   for r in results for s in r.slices if s.int8_advice))
    return build_report(results, choice, skipped, info, family, opts.plan, time.monotonic() - t0, bench.samples,
                        board.board_name(board_root), default_threads(), warnings)


# --- the command -------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", metavar="N", help="camera index (default: the config's camera.source)")
    src.add_argument("--source", metavar="URI", help="video file, image(s), /dev/videoN, csi://N, rtsp://..., "
                                                     "or synthetic[:WxH] (generated frames)")
    p.add_argument("--config", metavar="FILE",
                   help=f"config to read (default $EDGEPOSE_CONFIG, else {config_mod.SERVICE_CONFIG_PATH} "
                        f"if it exists)")
    p.add_argument("--model", metavar="NAME|PATH",
                   help="model family to sweep (cpm, hourglass; any variant name selects its family) or a "
                        ".tflite path (default: the config's model.name)")
    p.add_argument("--model-mirror", metavar="DIR|URL", help="fetch models from this mirror")
    p.add_argument("--backend", choices=["auto", "litert", "tflite-runtime"], help="TFLite runtime")
    p.add_argument("--threads", metavar="LIST", help="thread counts to sweep, e.g. 1,2 or 1-4 (default 1..cores)")
    p.add_argument("--xnnpack", choices=["both", "on", "off"], default="both", help="XNNPACK settings to sweep")
    p.add_argument("--variants", metavar="LIST", help="variant kinds to sweep, e.g. float32,int8 "
                                                      "(default: every available one)")
    p.add_argument("--seconds", type=float, metavar="S",
                   help="measurement budget in seconds (default 90; 20 with --quick)")
    p.add_argument("--quick", action="store_true", help="short sweep: fewer, shorter rounds")
    p.add_argument("--headroom", type=float, default=0.9, metavar="F",
                   help="recommended frame-rate cap as a fraction of the sustained rate (default 0.9)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="may choose a quantized variant without a passing fidelity report")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--write", nargs="?", const=config_mod.SERVICE_CONFIG_PATH, metavar="CONFIG",
                   help=f"save the choice into a TOML config, keeping everything else "
                        f"(default {config_mod.SERVICE_CONFIG_PATH})")
    p.add_argument("--apply", action="store_true",
                   help=f"--write, then restart the {SERVICE_UNIT} service if it is running")


def options_from_args(args: argparse.Namespace) -> Options:
    if args.seconds is not None and not (1 <= args.seconds <= 3600):
        raise UsageError(f"--seconds must be from 1 to 3600, not {args.seconds:g}")
    if not (0.1 <= args.headroom <= 1.0):
        raise UsageError(f"--headroom must be from 0.1 to 1.0, not {args.headroom:g}")
    if args.quick:
        plan = Plan.quick(args.seconds or 20.0)
    else:
        plan = Plan(budget_s=args.seconds or 90.0)
    kinds = None
    if args.variants:
        kinds = [k.strip() for k in args.variants.split(",") if k.strip()]
        allowed = ("float32", "int8", "float16", "dynamic")
        bad = [k for k in kinds if k not in allowed]
        if bad or not kinds:
            raise UsageError(f"bad --variants {args.variants!r}: choose from {', '.join(allowed)}")
    return Options(plan=plan,
                   threads=parse_int_list(args.threads, "--threads") if args.threads else None,
                   xnnpack={"both": (True, False), "on": (True,), "off": (False,)}[args.xnnpack],
                   kinds=kinds, allow_unverified=args.allow_unverified, headroom=args.headroom)


def config_to_read(args: argparse.Namespace, environ: Mapping[str, str]) -> Optional[str]:
    """--config, else $EDGEPOSE_CONFIG, else the service's config when it exists (what the service uses)."""
    if args.config:
        return args.config
    if environ.get("EDGEPOSE_CONFIG"):
        return environ["EDGEPOSE_CONFIG"]
    return config_mod.SERVICE_CONFIG_PATH if os.path.isfile(config_mod.SERVICE_CONFIG_PATH) else None


def command(args: argparse.Namespace, runner: Optional[board.Runner] = None) -> int:
    opts = options_from_args(args)
    target = args.write or (config_mod.SERVICE_CONFIG_PATH if args.apply else None)
    if target:  # fail before a two-minute sweep, not after it
        config_target(target)
    path = config_to_read(args, os.environ)
    shared = argparse.Namespace(**{k: getattr(args, k) for k in SHARED_WITH_RUN})  # --threads differs: a list here
    cfg = config_mod.load(path, config_mod.overrides_from_flags(shared))
    report = calibrate(cfg, opts, progress=progress_printer())
    if target:
        values = report["choice"]["config"]
        write_config(target, values)
        report["written"] = str(target)
        if values["model"]["name"] and not registry.looks_like_path(values["model"]["name"]):
            _warn_model_location(target, values["model"]["name"], cfg, report)
    if args.apply:
        log.info("restarting %s with the new settings if it runs (returns once it is running again)", SERVICE_UNIT)
        report["service"] = restart_service(run=runner)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(report))
    return 0


def _warn_model_location(target: str, name: str, cfg: config_mod.Config, report: Dict[str, Any]) -> None:
    """A locally built (quantized) model must be in the cache the written config points at."""
    try:
        entry = registry.load_catalogue().get(name)
        written = config_mod.load(target, environ={})
    except EdgeposeError:
        return
    if entry is None or not entry.local_only:
        return
    there = entry.cache_file(Path(written.model.dir) if written.model.dir else registry.default_cache_dir())
    if not there.is_file():
        here = entry.cache_file(Path(cfg.model.dir) if cfg.model.dir else registry.default_cache_dir())
        msg = (f"{name} is not in the model cache {there.parent.parent} that {target} uses: copy "
               f"{here.parent} there (with its model.report.json)")
        log.warning("%s", msg)
        report["warnings"].append(msg)
