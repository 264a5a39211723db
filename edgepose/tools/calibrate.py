"""``edgepose calibrate-fps``: find the fastest configuration this board sustains, and save it.

The sweep covers every *available* variant of the chosen model family
(``cpm``, ``cpm-int8``, ``cpm-float16`` ...), interpreter threads ``1..cores``
and XNNPACK on/off.  Each candidate is measured through the real pipeline
(:class:`~edgepose.inference.engine.Engine` + :func:`edgepose.inference.pipeline.from_config`, so
the configured decoder, tracking and smoothing are included) on the frames of
the configured camera, a file, or synthetic frames.

How frames are fed (a deliberate choice, see docs/calibrate.md):

* a **camera** is opened once with :func:`edgepose.capture.sources.open_source` and read
  live for every candidate; ``capture`` is the time the pipeline waits in
  ``read()`` for a new frame, so a camera slower than the model shows up as
  capture time and caps the sustained FPS, as it does in the service;
* a **file** is decoded once through ``open_source`` (its decode time is
  reported as ``source.decode_ms``) and its frames (up to 64 MB) are replayed
  from memory; every replayed frame is a fresh copy, like a buffer handed
  over by a camera driver, and that copy is the ``capture`` stage.  Decoding a
  video is not what the service does on a board, and a decoder thread would
  steal cores from the candidates unevenly;
* ``synthetic[:WxH]`` makes frames in memory and replays them the same way.

Measurement is made robust to a noisy machine: a short *screening* round
measures every candidate once; the contenders (within ``keep`` of the best
eligible one) are then measured again in several *final* rounds, in
alternating order (so slow drift, e.g. heating, does not favour one
candidate), and their FPS is the median of the final rounds.

Selection never trades accuracy silently: a quantized variant is eligible
only when the fidelity report beside it in the model cache
(``<cache>/<name>/model.report.json``) says ``"fidelity": {"passed": true}``;
float32 upstream models are verified by definition.  ``--allow-unverified``
lifts that.  The recommended frame-rate cap is ``headroom`` (90%) of the
chosen configuration's sustained FPS.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgepose.daemon import board
from edgepose.core import config as config_mod
from edgepose.models import registry
from edgepose.inference import pipeline as pipeline_mod
from edgepose.inference.engine import Engine, default_threads
from edgepose.core.errors import (ConfigError, DeviceUnavailableError, EdgeposeError, InputMissingError, ModelError,
                     RuntimeMissingError, UsageError)
from edgepose.core.files import keep_owner_and_mode, temp_beside, write_problem
from edgepose.capture.sources import Frame, FrameSource, RotatedSource, open_source, parse_source, redact

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "infer", "decode", "total")
REPORT_VERSION = 1
SERVICE_UNIT = "edgepose"
RESTART_TIMEOUT_S = 20 + 180 + 10  # the unit's TimeoutStopSec + TimeoutStartSec, and some slack
PRELOAD_BYTES = 64 << 20  # most memory a replayed file may take
PRELOAD_FRAMES = 120


# --- model variants and candidates ---------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One model file of the family, and whether it may be chosen without --allow-unverified."""

    name: str  # catalogue name, or the path the user gave
    kind: str  # float32, int8, float16, dynamic, or "file" for a path
    path: Path
    verified: bool
    why: str  # one line: why it is (not) verified


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    variant: Variant
    threads: int
    xnnpack: bool

    @property
    def label(self) -> str:
        return f"{self.variant.name} t{self.threads} xnnpack {'on' if self.xnnpack else 'off'}"


def family_of(name: str, catalogue: Optional[Mapping[str, registry.ModelEntry]] = None) -> str:
    """``cpm-int8`` -> ``cpm``: the float model a variant's report compares against (its catalogue
    ``reference``), else the part of the name before the first ``-``."""
    entry = (catalogue or {}).get(name)
    ref = entry.extra.get("reference") if entry is not None else None
    return str(ref) if ref else name.split("-", 1)[0]


FIDELITY_GOALS = ("agreement", "pck_drop")  # of quantize.check_goals: the accuracy goals (not speed)


def fidelity_verdict(report: Any) -> Tuple[bool, str]:
    """Whether a locally built model's report (``edgepose models quantize``) shows it keeps accuracy.

    The goals are re-checked from the numbers in the report with
    :func:`edgepose.build.quantize.check_goals` (keypoint agreement with the float
    model, PCK@0.1 drop); both must be met.  No fidelity numbers (the model
    was built without ``--eval``) means *not verified*.
    """
    from edgepose.build.quantize import check_goals

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


def find_variants(model: str, cache_dir: Optional[Path] = None, mirror: str = "",
                  catalogue: Optional[Dict[str, registry.ModelEntry]] = None,
                  kinds: Optional[Sequence[str]] = None,
                  progress: Optional[registry.Progress] = None) -> Tuple[List[Variant], List[Skipped]]:
    """Every available variant of ``model``'s family (float fetched on first use; quantized ones
    only when already built in the cache).  A path is swept alone (the user chose that file)."""
    if registry.looks_like_path(model):
        path = Path(os.path.abspath(registry.resolve(model)))  # --write puts it in a config read from anywhere
        verdict = read_verdict(path) if registry.report_path(path).is_file() else (
            True, "given as a path (your choice; only threads and XNNPACK are swept)")
        return [Variant(str(path), "file", path, *verdict)], []
    catalogue = registry.load_catalogue() if catalogue is None else catalogue
    if model not in catalogue:
        raise ConfigError(f"unknown model {model!r}: expected a path to a .tflite file or one of "
                          + ", ".join(n for n, e in catalogue.items() if e.format == "tflite"))
    family = family_of(model, catalogue)
    cache = Path(cache_dir) if cache_dir else registry.default_cache_dir()
    entries = [e for n, e in catalogue.items() if e.format == "tflite" and family_of(n, catalogue) == family]
    variants: List[Variant] = []
    skipped: List[Skipped] = []
    for e in entries:
        kind = e.recipe or "float32"
        if kinds and kind not in kinds:
            skipped.append(Skipped(e.name, f"{kind} not in --variants"))
            continue
        if e.local_only:
            path = e.cache_file(cache)
            if not path.is_file():
                skipped.append(Skipped(e.name, f"not built (make it with `{registry.build_hint(e)}`)"))
                continue
            variants.append(Variant(e.name, kind, path, *read_verdict(path)))
        else:
            path = registry.resolve(e.name, cache_dir=cache, mirror=mirror, progress=progress, catalogue=catalogue)
            variants.append(Variant(e.name, kind, path, True, "float32 upstream model"))
    if not variants:
        raise InputMissingError(f"no variant of model family {family!r} is available"
                                + "".join(f"; {s.name}: {s.reason}" for s in skipped))
    return variants, skipped


def parse_int_list(text: str, what: str, lo: int = 1, hi: int = 64) -> List[int]:
    """``"1,2"`` or ``"1-4"`` -> sorted unique ints."""
    out = set()
    out_of_range = UsageError(f"bad {what} {text!r}: expected numbers from {lo} to {hi}")
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if not lo <= a <= b <= hi:  # checked before expanding: "1-2000000000" is not a list to build
                    raise out_of_range
                out.update(range(a, b + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: expected numbers like 1,2 or 1-4") from None
    if not out or min(out) < lo or max(out) > hi:
        raise out_of_range
    return sorted(out)


def enumerate_candidates(variants: Sequence[Variant], threads: Sequence[int],
                         xnnpack: Sequence[bool] = (True, False)) -> List[Candidate]:
    return [Candidate(v, t, x) for v in variants for t in threads for x in xnnpack]


# --- frames -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceInfo:
    uri: str
    kind: str  # camera | file | synthetic
    live: bool
    width: int
    height: int
    frames: int = 0  # frames replayed from memory (0 for a camera)
    decode_ms: Optional[float] = None  # median decode time of a file frame

    def describe(self) -> str:
        if self.live:
            return f"{self.uri} (camera, {self.width}x{self.height})"
        extra = f", decoded in {self.decode_ms:.1f} ms/frame" if self.decode_ms is not None else ""
        return f"{self.uri} ({self.kind}, {self.frames} frames {self.width}x{self.height} replayed from memory{extra})"


class ReplaySource(FrameSource):
    """Frames held in memory, handed out forever in a loop, each as a fresh copy."""

    live = False

    def __init__(self, images: Sequence[np.ndarray], clock: Callable[[], float] = time.time):
        if not images:
            raise InputMissingError("no frames to replay")
        self._images = list(images)
        self._i = 0
        self._clock = clock

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        t0 = time.perf_counter()
        img = self._images[self._i % len(self._images)].copy()
        self._i += 1
        return Frame(img, self._clock(), self._i - 1, (time.perf_counter() - t0) * 1e3)


def synthetic_frames(width: int, height: int, n: int = 8, seed: int = 0) -> List[np.ndarray]:
    """Smooth random colour fields (cheap, deterministic, not blank: the decoder sees real values)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        out.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return out


def parse_synthetic(uri: str, width: int, height: int) -> Optional[Tuple[int, int]]:
    """``synthetic`` or ``synthetic:WxH`` -> (w, h); None for anything else."""
    if uri != "synthetic" and not uri.startswith("synthetic:"):
        return None
    size = uri.partition(":")[2]
    if not size:
        return width, height
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise UsageError(f"bad source {uri!r}: expected synthetic or synthetic:WIDTHxHEIGHT") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise UsageError(f"bad source {uri!r}: width and height must be 16..8192")
    return w, h


def open_frames(cfg: config_mod.Config, opener=None) -> Tuple[FrameSource, SourceInfo]:
    """The frame source for the sweep (see the module docstring for why files are replayed)."""
    uri = str(cfg.camera.source)
    synth = parse_synthetic(uri, cfg.camera.width, cfg.camera.height)
    if synth:
        frames = synthetic_frames(*synth)
        return ReplaySource(frames), SourceInfo(uri, "synthetic", False, synth[0], synth[1], len(frames))
    spec = parse_source(uri)  # 66 for a missing file, before anything is opened
    src = RotatedSource(open_source(uri, width=cfg.camera.width, height=cfg.camera.height, fps=cfg.camera.fps,
                                    backoff_max=cfg.camera.reopen_backoff_max, opener=opener), cfg.camera.rotate)
    if spec.live:
        first = src.read(timeout=5.0)
        if first is None:
            src.close()
            raise DeviceUnavailableError(f"camera {uri} opened but delivered no frame in 5 s")
        h, w = first.image.shape[:2]
        return src, SourceInfo(redact(uri), "camera", True, w, h)
    images: List[np.ndarray] = []
    decode: List[float] = []
    try:
        while len(images) < PRELOAD_FRAMES and sum(i.nbytes for i in images) < PRELOAD_BYTES:
            f = src.read(timeout=10.0)
            if f is None:
                break
            images.append(f.image)
            decode.append(f.capture_ms)
    finally:
        src.close()
    if not images:
        raise InputMissingError(f"source {uri} has no readable frames")
    h, w = images[0].shape[:2]
    return ReplaySource(images), SourceInfo(uri, "file", False, w, h, len(images),
                                            round(statistics.median(decode), 2))


# --- measuring one candidate -----------------------------------------------------------------

@dataclass(frozen=True)
class ThermalSample:
    throttle: board.Throttle
    temp_c: Optional[float]


class ThermalProbe:
    """Temperature and throttling before/after each measurement (injectable root and runner)."""

    def __init__(self, root: str = "/", run: Optional[board.Runner] = None):
        self.root, self.run = root, run

    def sample(self) -> ThermalSample:
        return ThermalSample(board.throttled(self.root, self.run), board.cpu_temperature(self.root))


def throttled_between(before: board.Throttle, after: board.Throttle) -> bool:
    """Throttled during a measurement: at either end, or a Pi 'since boot' bit appeared meanwhile."""
    if before.now or after.now:
        return True
    if before.raw is not None and after.raw is not None:
        return bool((after.raw & ~before.raw) >> 16)
    return False


@dataclass
class Slice:
    """One measurement of one candidate."""

    fps: float
    frames: int
    seconds: float
    latency_ms: Dict[str, List[float]]
    setup_s: float  # engine load + warm-up (not measured)
    xnnpack_active: bool
    backend: str
    throttled: bool = False
    reasons: Tuple[str, ...] = ()
    temp_c: Tuple[Optional[float], Optional[float]] = (None, None)
    xnnpack_ops: Optional[Dict[str, int]] = None  # Delegation.to_status() of the engine
    int8_advice: str = ""  # Engine.int8_advice: why an int8 model is slow on this runtime


def load_candidate(cand: Candidate, cfg: config_mod.Config,
                   engine_factory: Callable[..., Engine] = Engine) -> pipeline_mod.Pipeline:
    """The candidate's engine inside the pipeline the config asks for (decoder, tracking, smoothing)."""
    engine = engine_factory(cand.variant.path, threads=cand.threads, xnnpack=cand.xnnpack,
                            backend=cfg.runtime.backend)
    return pipeline_mod.from_config(cfg, engine)


def measure(pipe: pipeline_mod.Pipeline, source: FrameSource, seconds: float, warmup: int = 3,
            min_frames: int = 3, clock: Callable[[], float] = time.perf_counter, setup_s: float = 0.0) -> Slice:
    """Warm the pipeline up, then run it for ``seconds`` (and at least ``min_frames``).

    Sustained FPS = frames / wall time of the measured loop (capture wait +
    preprocess + infer + decode + smoothing for every frame).
    """
    t_setup = clock()

    def next_frame() -> Frame:
        f = source.read(timeout=2.0)
        if f is None:
            raise DeviceUnavailableError("the source stopped delivering frames during calibration")
        return f

    for _ in range(warmup):  # a very slow candidate is not warmed up for longer than it is measured
        f = next_frame()
        pipe.process(f.image, f.ts)
        if clock() - t_setup >= seconds:
            break
    lat: Dict[str, List[float]] = {k: [] for k in STAGES}
    start = clock()
    setup_s += start - t_setup
    n = 0
    while True:
        t0 = clock()
        f = next_frame()
        t1 = clock()
        r = pipe.process(f.image, f.ts)
        t2 = clock()
        lat["capture"].append((t1 - t0) * 1e3)
        for k in ("preprocess", "infer", "decode"):
            lat[k].append(r.latency_ms[k])
        lat["total"].append((t2 - t0) * 1e3)
        n += 1
        if t2 - start >= seconds and n >= min_frames:
            break
    elapsed = t2 - start
    engine = pipe.engine
    return Slice(n / elapsed, n, elapsed, lat, setup_s, engine.xnnpack, engine.runtime.name,
                 xnnpack_ops=engine.describe()["xnnpack_delegation"], int8_advice=engine.int8_advice)


class Bench:
    """Measures candidates on one source; finalists keep their loaded pipeline between rounds
    (so final rounds can be short and many, interleaving candidates finely)."""

    def __init__(self, cfg: config_mod.Config, source: FrameSource, probe: "ThermalProbe",
                 engine_factory: Callable[..., Engine] = Engine):
        self.cfg, self.source, self.probe, self.engine_factory = cfg, source, probe, engine_factory
        self.loaded: Dict[Candidate, pipeline_mod.Pipeline] = {}
        self.samples: List[ThermalSample] = []

    def __call__(self, cand: Candidate, seconds: float, plan: "Plan", phase: str = "screen") -> Slice:
        t0 = time.perf_counter()
        pipe = self.loaded.get(cand)
        warmup = plan.warmup if pipe is None else 1
        if pipe is None:
            pipe = load_candidate(cand, self.cfg, self.engine_factory)
            if phase == "final":
                self.loaded[cand] = pipe
        before = self.probe.sample()
        s = measure(pipe, self.source, seconds, warmup, plan.min_frames, setup_s=time.perf_counter() - t0)
        after = self.probe.sample()
        self.samples.extend((before, after))
        s.throttled = throttled_between(before.throttle, after.throttle)
        s.reasons = tuple(dict.fromkeys(before.throttle.reasons + after.throttle.reasons))
        s.temp_c = (before.temp_c, after.temp_c)
        if s.throttled:
            log.warning("%s was measured while throttled (%s)", cand.label, ", ".join(s.reasons) or "?")
        return s

    def release(self) -> None:
        self.loaded.clear()


def percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


@dataclass
class Result:
    """Everything measured for one candidate."""

    candidate: Candidate
    screen: Optional[Slice] = None
    finals: List[Slice] = field(default_factory=list)
    error: str = ""

    @property
    def slices(self) -> List[Slice]:
        return ([self.screen] if self.screen else []) + self.finals

    @property
    def finalist(self) -> bool:
        return bool(self.finals)

    @property
    def fps(self) -> float:
        """Median FPS of the final rounds (the screening slice only when it never got that far)."""
        use = self.finals or self.slices
        return statistics.median(s.fps for s in use) if use else 0.0

    @property
    def throttled(self) -> bool:
        return any(s.throttled for s in self.slices)

    def latency(self) -> Dict[str, Dict[str, Optional[float]]]:
        use = self.finals or self.slices
        return {k: percentiles([v for s in use for v in s.latency_ms[k]]) for k in STAGES}


# --- the sweep ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How the time budget is spent."""

    budget_s: float = 90.0  # measurement time (engine loading and warm-up included)
    screen_share: float = 0.35  # of the budget spent screening every candidate once
    final_rounds: int = 3  # at least this many final rounds ...
    final_slice_s: float = 1.0  # ... and more while the budget allows slices of about this length
    keep: float = 0.70  # candidates within this fraction of the best eligible screen FPS go on
    max_finalists: int = 4
    warmup: int = 3
    min_frames: int = 3
    min_slice_s: float = 0.3
    setup_guess_s: float = 0.4  # engine load + warm-up, until measured

    @classmethod
    def quick(cls, budget_s: float = 20.0) -> "Plan":
        return cls(budget_s=budget_s, screen_share=0.4, final_rounds=2, final_slice_s=0.5, keep=0.75,
                   max_finalists=3, warmup=2, min_frames=2, min_slice_s=0.2)


@dataclass(frozen=True)
class Progress:
    done: int  # measurements made so far
    label: str
    fps: Optional[float]  # None: the candidate failed to load
    elapsed_s: float
    eta_s: float  # estimated time left
    phase: str  # screen | final

    @property
    def fraction(self) -> float:
        total = self.elapsed_s + self.eta_s
        return 1.0 if total <= 0 else min(1.0, self.elapsed_s / total)


ProgressFn = Callable[[Progress], None]
SliceFn = Callable[[Candidate, float, Plan, str], Slice]  # (candidate, seconds, plan, phase)


def eligible(cand: Candidate, allow_unverified: bool) -> bool:
    return cand.variant.verified or allow_unverified


def sweep(candidates: Sequence[Candidate], run_slice: SliceFn, plan: Plan, allow_unverified: bool = False,
          progress: Optional[ProgressFn] = None, clock: Callable[[], float] = time.monotonic) -> List[Result]:
    """Screen every candidate once, then measure the contenders in alternating-order final rounds.

    Unverified variants are screened (so the table shows what they would
    give) but go to the final rounds only with ``allow_unverified``.  A
    candidate that fails to load (e.g. a model XNNPACK cannot run) is kept
    with its error and never chosen.
    """
    results = [Result(c) for c in candidates]
    n = len(results)
    if n == 0:
        return results
    setups: List[float] = []

    def setup_s() -> float:
        return statistics.median(setups) if setups else plan.setup_guess_s

    screen_s = max(plan.min_slice_s, plan.budget_s * plan.screen_share / n - plan.setup_guess_s)
    state = {"done": 0}
    started = clock()

    def one(res: Result, seconds: float, phase: str, eta: Callable[[], float]) -> None:
        try:
            s = run_slice(res.candidate, seconds, plan, phase)
        except EdgeposeError as e:
            if isinstance(e, DeviceUnavailableError):
                raise  # the camera is gone: nothing else can be measured either
            res.error = str(e)
            log.warning("%s: %s", res.candidate.label, e)
            s = None
        if s is not None:
            setups.append(s.setup_s)
            if phase == "screen":
                res.screen = s
            else:
                res.finals.append(s)
        state["done"] += 1
        if progress:
            progress(Progress(state["done"], res.candidate.label, s.fps if s else None,
                              clock() - started, max(0.0, eta()), phase))

    for i, res in enumerate(results):
        # the final rounds take what is left of the budget
        one(res, screen_s, "screen", lambda i=i: max((n - i - 1) * (screen_s + setup_s()),
                                                     plan.budget_s - (clock() - started)))

    ok = [r for r in results if r.screen is not None and eligible(r.candidate, allow_unverified)]
    if not ok:
        return results
    best = max(r.screen.fps for r in ok)
    finalists = sorted((r for r in ok if r.screen.fps >= plan.keep * best), key=lambda r: -r.screen.fps)
    finalists = finalists[:plan.max_finalists]
    k = len(finalists)
    left_s = max(0.0, plan.budget_s - (clock() - started) - k * setup_s())  # finalists load once
    rounds = max(plan.final_rounds, int(left_s / (k * plan.final_slice_s)))
    final_s = max(plan.min_slice_s, left_s / (rounds * k))
    setups.clear()
    setups.append(0.0)  # loaded finalists start at once (one warm-up frame)
    for rnd in range(rounds):
        order = finalists if rnd % 2 == 0 else finalists[::-1]
        for j, res in enumerate(order):
            remaining = (rounds - rnd - 1) * k + k - j - 1
            one(res, final_s, "final", lambda m=remaining: m * (final_s + setup_s()))
    return results


# --- selection ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    result: Result
    max_fps: float
    near_ties: int  # how many eligible finalists were within the tie band


def select(results: Sequence[Result], allow_unverified: bool = False, tie: float = 0.05) -> Choice:
    """The fastest eligible finalist; within ``tie`` of it, fewer threads, then XNNPACK on, then a
    float32 model win (less CPU for the same speed keeps the board cooler and leaves room for
    capture and MQTT; an unchanged float model is the safer one).  The 5% band is below the
    run-to-run spread of one configuration (15-30% on a shared 2-core machine) and equal to the
    tolerance the pick is held to, so configurations that measure alike (e.g. float32 and float16
    weights, which do the same arithmetic on CPUs without fp16) are resolved the same way every run."""
    pool = [r for r in results if r.finalist and eligible(r.candidate, allow_unverified)]
    if not pool:
        unverified = [r for r in results if r.slices and not r.candidate.variant.verified]
        if unverified and not allow_unverified:
            raise ModelError("no verified configuration could be measured; "
                             + "; ".join(sorted({f"{r.candidate.variant.name} {r.candidate.variant.why}"
                                                 for r in unverified}))
                             + " (use --allow-unverified to choose among them anyway)")
        errors = "; ".join(sorted({f"{r.candidate.label}: {r.error}" for r in results if r.error}))
        raise ModelError("no configuration could be measured" + (f": {errors}" if errors else ""))
    best = max(r.fps for r in pool)
    near = [r for r in pool if r.fps >= best * (1 - tie)]
    pick = min(near, key=lambda r: (r.candidate.threads, not r.candidate.xnnpack,
                                    r.candidate.variant.kind != "float32", -r.fps))
    return Choice(pick, recommend_cap(pick.fps), len(near))


def recommend_cap(fps: float, headroom: float = 0.9) -> float:
    """A frame-rate cap below the sustained rate (rounded down to 0.1 fps) so the board keeps cool."""
    if fps <= 0:
        return 0.0
    return max(0.1, math.floor(fps * headroom * 10) / 10)


def chosen_values(choice: Choice, headroom_cap: Optional[float] = None) -> Dict[str, Dict[str, Any]]:
    """The config keys calibrate-fps owns, as ``{section: {key: value}}``."""
    c = choice.result.candidate
    cap = choice.max_fps if headroom_cap is None else headroom_cap
    return {"model": {"name": c.variant.name},
            "runtime": {"threads": int(c.threads), "xnnpack": bool(c.xnnpack), "max_fps": float(cap)}}


# --- writing the config ----------------------------------------------------------------------------

def update_toml(text: str, values: Mapping[str, Mapping[str, Any]], origin: str = "config") -> str:
    """Set ``values`` in a TOML document, keeping every other key, comment and the layout (tomlkit).

    The result is checked to be a valid edgepose config before it is returned.
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as e:
        raise ConfigError(f"{origin} is not valid TOML: {e}") from None
    for section, kv in values.items():
        if section not in doc:
            doc.add(section, tomlkit.table())
        tbl = doc[section]
        if not isinstance(tbl, Mapping):
            raise ConfigError(f"{origin}: {section} is not a table")
        for key, value in kv.items():
            tbl[key] = value
    out = tomlkit.dumps(doc)
    try:
        import tomllib as _toml
    except ImportError:  # pragma: no cover - Python < 3.11
        import tomli as _toml  # type: ignore[no-redef]
    config_mod.apply_mapping(config_mod.Config(), _toml.loads(out), origin)
    return out


def check_writable(path: str) -> bool:
    """Raise ConfigError unless ``path`` can be updated (or created); returns whether it exists."""
    p = Path(path)
    exists = p.is_file()
    if not p.is_dir() and not os.access(p if exists else p.parent, os.W_OK) and p.parent.is_dir():
        raise ConfigError(f"cannot write {path}: permission denied (run with sudo, or give --write FILE)")
    problem = write_problem(p)  # what write_config will do: a temporary file beside it
    if problem:
        hint = "is the service installed? " if not p.parent.is_dir() else ""
        raise ConfigError(f"cannot write {path}: {problem} ({hint}give --write FILE to write another config)")
    return exists


def config_target(path: str) -> Optional[str]:
    """The current text of the config file ``--write`` will update (None: it will be created).

    Raises ConfigError unless it can be written and is a valid config already, so ``calibrate-fps``
    says so before its sweep instead of after it.
    """
    exists = check_writable(os.path.realpath(path))  # a link: its target is what gets written
    text = ""
    try:
        if exists:
            with open(path, encoding="utf-8", newline="") as fh:  # newline="": CRLF stays CRLF
                text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    update_toml(text, {}, str(path))
    return text if exists else None


def write_config(path: str, values: Mapping[str, Mapping[str, Any]]) -> None:
    """Update ``path`` in place (atomically, keeping its mode, owner and line endings); create it if it
    is missing.  A symbolic link is followed: the file it points to is updated."""
    p = Path(os.path.realpath(path))
    text = config_target(path)
    new = update_toml(text or "", values, str(path))
    if "\r\n" in (text or ""):  # a CRLF file: the keys added are CRLF too
        new = new.replace("\r\n", "\n").replace("\n", "\r\n")
    tmp: Optional[Path] = None
    try:
        fd, tmp = temp_beside(p, f".{p.name}.", ".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(new)
        keep_owner_and_mode(tmp, p)  # a new file: 0644 less the umask, readable by the service user
        os.replace(tmp, p)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def systemd_booted() -> bool:
    """sd_booted(3): whether systemd is this system's init (so a service can be running at all)."""
    return os.path.isdir("/run/systemd/system")


def restart_service(unit: str = SERVICE_UNIT, run: Optional[board.Runner] = None,
                    booted: Callable[[], bool] = systemd_booted) -> str:
    """``systemctl try-restart UNIT`` (restarts only if it runs); returns what happened.

    systemctl returns once the restarted service is READY (model loaded, first
    frame decoded), which takes a while on a slow board: it gets as long as the
    unit's own start and stop timeouts allow.
    """
    run = run or functools.partial(board.run_command, timeout=RESTART_TIMEOUT_S)
    try:
        run(["systemctl", "is-active", "--quiet", unit])
        active = True
    except FileNotFoundError:
        raise RuntimeMissingError(f"systemctl not found: restart the {unit} service yourself to use the "
                                  f"new settings") from None
    except OSError:
        active = False
    if not active and not booted():
        return (f"systemd is not this system's init (a container?), so no {unit} service runs here: "
                f"restart edgepose yourself to use the new settings")
    if not active:
        return f"{unit} is not running; it will use the new settings when it starts"
    try:
        run(["systemctl", "try-restart", unit])
    except OSError as e:
        raise DeviceUnavailableError(f"could not restart {unit}: {e}") from None
    return f"restarted {unit}"


# --- the report --------------------------------------------------------------------------------

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


def overrides_from_args(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """The flags shared with ``edgepose run`` (source, model, mirror, backend) as config overrides."""
    from edgepose.daemon.service import overrides_from_args as run_overrides

    unset = dict(rotate=None, decoder=None, threads=None, no_xnnpack=False, fps=None, max_frames=None, sink=None,
                 device=None, broker=None, no_smoothing=False, no_tracking=False, preview=None)
    return run_overrides(argparse.Namespace(**unset, camera=args.camera, source=args.source, model=args.model,
                                            model_mirror=args.model_mirror, backend=args.backend))


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
    cfg = config_mod.load(path, overrides_from_args(args))
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
