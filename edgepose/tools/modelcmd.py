"""``edgepose models``: list, pull, info, verify and quantize models.

* ``list``: the catalogue with each entry's cache state;
* ``pull NAME``: fetch from the mirror (directory or http(s) URL) or upstream,
  verify size and sha256, with a progress bar;
* ``info NAME|PATH``: inputs/outputs, dtypes, quantization, op histogram,
  FLOPs, XNNPACK partitions, size;
* ``verify``: checksums of everything in the cache (exit 65 if any is bad);
* ``quantize NAME --calib DIR``: build a local variant (``cpm-int8`` ...)
  from the upstream frozen graph and write a JSON report beside it (needs
  ``pip install 'edgepose[convert]'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, TypedDict

from edgepose.core.errors import ConfigError, EdgeposeError, ModelError, UsageError
from edgepose.core.files import write_problem
from edgepose.models import registry

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="config file (model dir/mirror, runtime)")
    parser.add_argument("--model-dir", default=None, help="model cache directory (default: model.dir, "
                        "$EDGEPOSE_MODEL_DIR or ~/.cache/edgepose/models)")
    add_mirror_argument(parser, default=None)
    # no abbreviations before the action: `quantize --mode` would be taken for --model-dir/--model-mirror
    parser.allow_abbrev = False
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="the catalogue and what is in the cache")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("pull", help="download (or copy from the mirror) and verify a model")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p = sub.add_parser("info", help="inputs/outputs, quantization, ops, FLOPs, XNNPACK partitions")
    p.add_argument("name", metavar="NAME|PATH")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("verify", help="check the checksums of every cached model")
    p = sub.add_parser("quantize", help="build an int8/float16/dynamic/float32 variant with a report")
    p.add_argument("name", help="model family (cpm, hourglass) or variant name (cpm-int8, ...)")
    p.add_argument("--calib", default=None, metavar="DIR", help="calibration photos (required for int8)")
    p.add_argument("--calib-photos", type=int, default=None, metavar="N",
                   help="use N photos of --calib, spread evenly over the folder's name order (0: all; default: "
                        "the variant's calib_photos, else all)")
    p.add_argument("--mode", default=None, choices=("int8", "float16", "dynamic", "float32"),
                   help="recipe (default int8, or the variant's recipe)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write here instead of the cache entry (report beside it)")
    p.add_argument("--eval", default=None, metavar="FILE.json",
                   help="annotated people (COCO keypoints) the verdict judges int8 on: PCK@0.1 and @0.05 of float and "
                        "quantized against the truth, a few hundred people (e.g. ../shared/data/eval-lspet); never the "
                        "calibration set")
    p.add_argument("--float-layers", default=None, metavar="PAT,PAT",
                   help="int8: keep ops whose name contains one of these in float")
    p.add_argument("--float-output", action="store_true",
                   help="int8: keep the output op in float and the model's input/output float32 (no int8 output grid)")
    p.add_argument("--no-augment", action="store_true", help="calibrate on the plain photos only")
    p.add_argument("--no-equalize", action="store_true",
                   help="int8: skip the depthwise channel-range equalization (for comparison)")
    p.add_argument("--finetune", type=int, default=None, metavar="STEPS",
                   help="int8: steps of quantization-aware fine-tuning on the calibration crops (0: none)")
    p.add_argument("--finetune-rate", type=float, default=None, metavar="LR",
                   help="Adam learning rate of --finetune (cosine decay to 0; default 2e-5)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per model for the report (default 30)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: runtime.threads)")
    for action in sub.choices.values():  # --mirror also after the action
        add_mirror_argument(action)


def add_mirror_argument(parser: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    """``--mirror`` (alias ``--model-mirror``, as for ``edgepose run``): before the action, and after it
    (where the default SUPPRESS leaves the value given before the action alone)."""
    parser.add_argument("--mirror", "--model-mirror", dest="mirror", default=default, metavar="DIR|URL",
                        help="mirror directory or http(s) URL (default: model.mirror)")


def _context(args):
    from edgepose.core import config as config_mod

    cfg = config_mod.load(args.config)
    cache = Path(args.model_dir or cfg.model.dir or registry.default_cache_dir())
    mirror = args.mirror if args.mirror is not None else cfg.model.mirror
    return cfg, cache, mirror


def command(args: argparse.Namespace) -> int:
    action = getattr(args, "action", None)
    if not action:
        raise UsageError("choose an action: edgepose models {list,pull,info,verify,quantize}")
    cfg, cache, mirror = _context(args)
    return {"list": _list, "pull": _pull, "info": _info, "verify": _verify,
            "quantize": _quantize}[action](args, cfg, cache, mirror)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class ModelRow(TypedDict):
    """One model of `edgepose models list` (a JSON object with --json)."""

    name: str
    state: str
    kind: str
    size: int
    description: str
    path: str


def _list(args, cfg, cache: Path, mirror: str) -> int:
    cat = registry.load_catalogue()
    rows: List[ModelRow] = []
    for name, e in cat.items():
        rows.append({"name": name, "state": registry.cache_state(e, cache).value,
                     "kind": f"local ({e.recipe} from {e.source})" if e.local_only else e.format,
                     "size": e.size, "description": e.description, "path": str(e.cache_file(cache))})
    if args.json:
        _out(json.dumps(rows, indent=1) + "\n")
        return 0
    _out(f"model cache: {cache}\n")
    w_name, w_state, w_kind = (max(len(column) for column in columns)
                               for columns in zip(*((r["name"], r["state"], r["kind"]) for r in rows)))
    for r in rows:
        _out(f"  {r['name']:<{w_name}}  {r['state']:<{w_state}}  {r['kind']:<{w_kind}}  "
             f"{r['description']}\n")
    return 0


def _pull(args, cfg, cache: Path, mirror: str) -> int:
    cat = registry.load_catalogue()
    if args.name not in cat:
        raise ConfigError(f"unknown model {args.name!r}; `edgepose models list` shows the catalogue")
    entry = cat[args.name]
    if args.force and not entry.local_only:  # replaces the cached file only once the new one is verified
        path = registry.fetch(entry, cache, mirror, progress=registry.stderr_progress())
    else:
        path = registry.resolve(args.name, cache_dir=cache, mirror=mirror, progress=registry.stderr_progress(),
                              catalogue=cat)
    _out(f"{args.name}: {path} ({registry.cache_state(entry, cache).value})\n")
    return 0


def _info(args, cfg, cache: Path, mirror: str) -> int:
    from edgepose.inference.engine import load_runtime
    from edgepose.models import modelinfo

    path = registry.resolve(args.name, cache_dir=cache, mirror=mirror, progress=registry.stderr_progress())
    if path.suffix == ".pb":
        raise UsageError(f"{path} is a frozen TensorFlow graph; `info` reads .tflite models")
    info = dataclasses.replace(modelinfo.inspect(path, load_runtime(cfg.runtime.backend)),  # the daemon's runtime
                               family=_family(args.name, path))
    if args.json:
        _out(json.dumps(info.to_dict(), indent=1) + "\n")
    else:
        _out(modelinfo.format_info(info))
    return 0


def _family(name: str, path: Path) -> str:
    """The family ``info`` shows: the catalogue's, or the one the file's output is recognised as."""
    from edgepose.models.resolved import model_at

    try:
        m = model_at(path, entry=None if registry.looks_like_path(name) else name)
    except EdgeposeError as e:  # `info` describes any .tflite file, pose model or not
        return f"not recognised ({e})"
    return f"{m.family.name} ({len(m.keypoint_names)} keypoints: {m.keypoint_names[0]} ... {m.keypoint_names[-1]})"


def _verify(args, cfg, cache: Path, mirror: str) -> int:
    cat = registry.load_catalogue()
    results = registry.verify_cache(cache, cat)
    bad = []
    for name, state in results:
        _out(f"  {name:<20} {state}\n")
        if state not in ("ok", registry.CacheState.NOT_CACHED.value):
            bad.append(name)
    _out(f"{len(results)} entries, {len(bad)} bad ({cache})\n")
    if bad:
        raise ModelError(f"{len(bad)} cached model(s) failed verification; fix: "
                         + "; ".join(f"`{registry.repair_hint(cat[n])}`" for n in bad))
    return 0


def variant_for(name: str, mode: Optional[str], catalogue: Dict[str, registry.ModelEntry]) -> registry.ModelEntry:
    """``cpm`` + ``int8`` -> the ``cpm-int8`` entry; ``cpm-int8`` -> itself."""
    if name in catalogue and catalogue[name].local_only:
        e = catalogue[name]
        if mode and mode != e.recipe:
            raise UsageError(f"{name} is the {e.recipe} variant; drop --mode or choose another name")
        return e
    mode = mode or "int8"
    family = name[:-3] if name.endswith("-pb") else name
    for e in catalogue.values():
        if e.local_only and e.recipe == mode and e.source in (f"{family}-pb", family):
            return e
    choices = sorted({e.source[:-3] if e.source.endswith("-pb") else e.source
                      for e in catalogue.values() if e.local_only})
    raise ConfigError(f"no {mode} recipe for {name!r} in the catalogue (models: {', '.join(choices)})")


def _input_size(entry: registry.ModelEntry, float_engine) -> tuple:
    """(width, height) the variant is converted at: its ``input_size``, else its float reference's."""
    size = entry.extra.get("input_size")
    if size is None:
        if float_engine is None:
            raise ConfigError(f"catalogue entry {entry.name} is its own reference: give it an input_size")
        return float_engine.input_size
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 8 and v % 8 == 0
                                                              for v in size)):
        raise ConfigError(f"catalogue entry {entry.name}: input_size must be [width, height], multiples of 8")
    return size[0], size[1]


def _quantize(args, cfg, cache: Path, mirror: str) -> int:
    from edgepose.build import quantize as q
    from edgepose.inference.engine import Engine

    cat = registry.load_catalogue()
    entry = variant_for(args.name, args.mode, cat)
    src = cat.get(entry.source)
    if src is None:
        raise ConfigError(f"catalogue entry {entry.name} names an unknown source {entry.source!r}")
    ref_name = entry.extra.get("reference", entry.source[:-3] if entry.source.endswith("-pb") else entry.source)
    float_layers = tuple(p for p in (args.float_layers.split(",") if args.float_layers is not None
                                     else entry.extra.get("float_layers", [])) if p)
    recipe = q.Recipe(mode=entry.recipe, float_layers=float_layers,
                      output_max=float(entry.extra.get("output_max", 0.0)),
                      split_depthwise=bool(entry.extra.get("split_depthwise", True)),
                      equalize_depthwise=bool(entry.extra.get("equalize_depthwise", True)) and not args.no_equalize,
                      int8_budget=float(entry.extra.get("int8_budget", 0.0)),
                      finetune_steps=int(args.finetune if args.finetune is not None
                                         else entry.extra.get("finetune_steps", 0)),
                      finetune_rate=float(args.finetune_rate if args.finetune_rate is not None
                                          else entry.extra.get("finetune_rate", 2e-5)),
                      finetune_peak_floor=float(entry.extra.get("finetune_peak_floor", 0.0)),
                      finetune_mixup=float(entry.extra.get("finetune_mixup", 0.0)),
                      float_output=bool(args.float_output or entry.extra.get("float_output", False)))
    if args.finetune is not None and (args.finetune < 0 or (args.finetune and recipe.mode != "int8")):
        raise UsageError("--finetune takes a number of steps >= 0, and only for int8")
    if recipe.mode == "int8" and not args.calib:
        raise UsageError("int8 quantization needs calibration photos: --calib DIR")
    calib_photos = args.calib_photos if args.calib_photos is not None else entry.extra.get("calib_photos", 0)
    if not isinstance(calib_photos, int) or calib_photos < 0:
        raise UsageError(f"--calib-photos / calib_photos takes a number of photos >= 0 (0: all), not {calib_photos!r}")
    if args.runs < 1:
        raise UsageError("--runs must be at least 1")
    if args.threads is not None and not 1 <= args.threads <= 64:
        raise UsageError("--threads takes a number from 1 to 64")
    if args.finetune_rate is not None and not (math.isfinite(args.finetune_rate) and args.finetune_rate > 0):
        raise UsageError("--finetune-rate takes a learning rate > 0 (e.g. 2e-5)")
    # the inputs exist: checked before anything is created, fetched (megabytes) or built
    if args.calib:
        q.list_images(Path(args.calib))
    from edgepose.models.resolved import entry_traits

    multi = entry_traits(entry.name, cat)[0] == "paf"
    samples = None
    if args.eval and multi:  # agreement/PCK are single-person measures; `edgepose eval` scores these
        sys.stderr.write(f"{entry.name} is a multi-person model: --eval is not measured in its report\n")
    elif args.eval:
        from edgepose.tools.evaluate import check_samples, load_annotations

        samples = load_annotations(args.eval)
        check_samples(samples)  # every image there and fitting its boxes: not found only after the build
        from edgepose.models.fidelity import Goals

        if len(samples) < Goals().min_people:
            log.warning("%s has %d people: the fidelity verdict needs at least %d (a 1-point PCK difference is "
                        "noise on fewer), so this build will not be verified for calibrate-fps; use a few "
                        "hundred, e.g. ../shared/data/eval-lspet/annotations.json", args.eval, len(samples),
                        Goals().min_people)
    out = Path(args.out) if args.out else entry.cache_file(cache)
    try:  # before the build (minutes of fine-tuning), not after it
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror or e}") from None
    problem = write_problem(out)
    if problem:
        raise ConfigError(f"cannot write {out}: {problem}")
    q.require_converter()  # no TensorFlow: say so before fetching megabytes it cannot use
    pb = registry.resolve(entry.source, cache_dir=cache, mirror=mirror, progress=registry.stderr_progress(),
                        catalogue=cat)
    self_reference = ref_name == entry.name  # no upstream .tflite: the float32 build is the reference
    float_path = out if self_reference else registry.resolve(
        ref_name, cache_dir=cache, mirror=mirror, progress=registry.stderr_progress(), catalogue=cat)
    threads = args.threads if args.threads is not None else cfg.runtime.threads
    float_engine = None if self_reference else Engine(float_path, threads=threads, backend=cfg.runtime.backend)
    in_w, in_h = _input_size(entry, float_engine)
    calib, photos = [], []
    if args.calib:
        photos = q.read_photos(Path(args.calib), calib_photos)
        calib = q.calibration_crops(photos, in_w, in_h, augment=None if args.no_augment else q.Augment())
    inp = src.input or {}
    outp = src.output or {}
    try:
        in_name, out_name = inp["name"], outp["name"]
        shape = list(inp["shape"]) if "input_size" not in entry.extra else [1, in_h, in_w, 3]
    except KeyError as e:
        raise ConfigError(f"catalogue entry {src.name} lacks input/output {e}") from None
    sys.stderr.write(f"building {entry.name} ({recipe.mode}) from {pb} ...\n")
    built = q.build(pb, in_name, out_name, shape, recipe, calib, photos)
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_bytes(built.model)
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {e}") from None
    quant_engine = Engine(out, threads=threads, backend=cfg.runtime.backend)
    if float_engine is None:
        float_engine = Engine(out, threads=threads, backend=cfg.runtime.backend)
    report = q.make_report(name=entry.name, source=entry.source, source_path=pb, model_path=out,
                           recipe=recipe, built=built, calib_dir=Path(args.calib) if args.calib else None,
                           calib_photos=len(photos), calib_count=len(calib), float_engine=float_engine,
                           quant_engine=quant_engine,
                           samples=samples, runs=args.runs, float_path=float_path)
    rp = q.write_report(report, out)
    _out(q.format_report(report))
    _out(f"report: {rp}\n")
    return 0
