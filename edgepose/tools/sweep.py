"""calibrate-fps measuring and sweeping: model variants, frames, timed slices, rounds, the choice.

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
(``<cache>/<name>/model.report.json``, describing this very file) passes
``models.fidelity.fidelity_verdict``: PCK@0.1 and PCK@0.05 against the truth
each within 1.0 point of float, on a few hundred annotated people;
float32 upstream models are verified by definition.  ``--allow-unverified``
lifts that.  The recommended frame-rate cap is ``headroom`` (90%) of the
chosen configuration's sustained FPS.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from edgepose.capture.sources import Frame, FrameSource, RotatedSource, open_source, parse_source
from edgepose.core import config as config_mod
from edgepose.core.errors import (
    ConfigError,
    DeviceUnavailableError,
    EdgeposeError,
    InputMissingError,
    ModelError,
    UsageError,
)
from edgepose.core.text import redact
from edgepose.daemon import board
from edgepose.inference import pipeline as pipeline_mod
from edgepose.inference.engine import Engine
from edgepose.inference.estimator import build_pipeline
from edgepose.models import registry
from edgepose.models.fidelity import read_verdict
from edgepose.models.resolved import model_at

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "infer", "decode", "total")
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
    out: Set[int] = set()
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
                   engine_factory: Callable[..., Engine] = Engine) -> pipeline_mod.FramePipeline:
    """The candidate's engine inside the pipeline the config asks for (decoder, tracking, smoothing),
    its file resolved as the model it is (:func:`edgepose.models.resolved.model_at`)."""
    entry = None if cand.variant.kind == "file" else cand.variant.name
    model = model_at(cand.variant.path, entry=entry, family=cfg.model.family)
    engine = engine_factory(model, threads=cand.threads, xnnpack=cand.xnnpack, backend=cfg.runtime.backend)
    return build_pipeline(cfg, engine, model)


def measure(pipe: pipeline_mod.FramePipeline, source: FrameSource, seconds: float, warmup: int = 3,
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

    def __init__(self, cfg: config_mod.Config, source: FrameSource, probe: ThermalProbe,
                 engine_factory: Callable[..., Engine] = Engine):
        self.cfg, self.source, self.probe, self.engine_factory = cfg, source, probe, engine_factory
        self.loaded: Dict[Candidate, pipeline_mod.FramePipeline] = {}
        self.samples: List[ThermalSample] = []

    def __call__(self, cand: Candidate, seconds: float, plan: Plan, phase: str = "screen") -> Slice:
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
    def quick(cls, budget_s: float = 20.0) -> Plan:
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
        def screening_eta(i: int = i) -> float:
            return max((n - i - 1) * (screen_s + setup_s()), plan.budget_s - (clock() - started))

        one(res, screen_s, "screen", screening_eta)

    screened = [(r, r.screen) for r in results if r.screen is not None and eligible(r.candidate, allow_unverified)]
    if not screened:
        return results
    best = max(s.fps for _, s in screened)
    finalists = [r for r, s in sorted(screened, key=lambda rs: -rs[1].fps) if s.fps >= plan.keep * best]
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
            def final_eta(m: int = remaining) -> float:
                return m * (final_s + setup_s())

            one(res, final_s, "final", final_eta)
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
