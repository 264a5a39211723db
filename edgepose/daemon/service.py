"""``edgepose run``: the daemon loop.

source -> preprocess -> engine -> decode -> smooth -> publish, one frame at a
time, with:

* signals: SIGTERM/SIGINT stop cleanly (exit 0), SIGHUP reloads the config
  file (a bad new config is logged and the old one kept);
* systemd: READY=1 after the model is loaded and the first frame decoded,
  STATUS= lines, STOPPING=1, and watchdog pings only while frames are being
  processed (a hung camera stops the pings; a camera known to be lost keeps
  them for ``camera.gone_timeout`` seconds while it is reopened);
* a status dict (fps, latency percentiles, counters, camera state, ...) that
  sinks publish on their own schedule.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import queue
import select
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import cv2
import numpy as np

from edgepose import __version__
from edgepose.capture.sources import Frame, FrameSource, RotatedSource, SourceState, open_source
from edgepose.core import config as config_mod
from edgepose.core.errors import EdgeposeError
from edgepose.core.payload import (
    InferMs,
    Meta,
    PosePayload,
    Reload,
    RunningStatus,
    Status,
    make_meta,
    make_payload,
    make_status,
)
from edgepose.core.text import redact
from edgepose.daemon import board, systemd
from edgepose.inference.engine import Engine
from edgepose.inference.estimator import PoseEstimator
from edgepose.inference.pipeline import FramePipeline, FrameResult
from edgepose.models import registry
from edgepose.output.factory import make_sink
from edgepose.output.sinks import Sink, StatusProvider

log = logging.getLogger(__name__)

FrameObserver = Callable[[Frame, FrameResult, PosePayload], None]  # (frame, result, payload)
SinkFactory = Callable[[config_mod.Config, str, Mapping[str, Any], StatusProvider], Sink]  # (cfg, device, meta, status)
SourceFactory = Callable[..., FrameSource]  # open_source's signature: (uri, width=, height=, fps=, backoff_max=)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", metavar="N", help="camera: index (V4L2 via OpenCV), /dev/videoN or csi://N")
    src.add_argument("--source", metavar="URI",
                     help="video file, image file, folder or glob of images, rtsp://..., /dev/videoN, csi://N")
    p.add_argument("--rotate", type=int, choices=[0, 90, 180, 270], metavar="DEG",
                   help="turn frames clockwise by 0, 90, 180 or 270 degrees (a sideways or upside-down camera)")
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: $EDGEPOSE_CONFIG)")
    p.add_argument("--model", metavar="NAME|PATH", help="catalogue name (cpm, hourglass, movenet-lightning, ...) "
                                                        "or .tflite path (default cpm)")
    p.add_argument("--family", metavar="FAMILY", help="model family of a model file that is not recognised by "
                                                      "its output: heatmap, movenet or paf (default auto)")
    p.add_argument("--model-mirror", "--mirror", dest="model_mirror", metavar="DIR|URL",
                   help="fetch models from this mirror (model.mirror; --mirror as for `edgepose models`)")
    p.add_argument("--backend", choices=["auto", "litert", "tflite-runtime"], help="TFLite runtime")
    p.add_argument("--threads", type=int, metavar="N", help="interpreter threads (default: all cores)")
    p.add_argument("--no-xnnpack", action="store_true", help="run without the XNNPACK delegate")
    p.add_argument("--fps", type=float, metavar="F", help="frame-rate cap")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--sink", choices=["stdout", "mqtt", "none"], help="where poses go (default stdout)")
    p.add_argument("--device", metavar="ID", help="device id in payloads and topics (default hostname)")
    p.add_argument("--broker", metavar="HOST[:PORT]",
                   help="MQTT broker; IPv6 as [ADDR]:PORT (implies nothing about --sink)")
    p.add_argument("--qos", type=int, choices=[0, 1], help="QoS of pose messages (mqtt.qos)")
    p.add_argument("--decoder", choices=["subpixel", "argmax", "upstream"], help="heatmap decoder")
    p.add_argument("--no-smoothing", action="store_true", help="turn One Euro smoothing off")
    p.add_argument("--no-tracking", action="store_true", help="always feed the whole frame")
    p.add_argument("--preview", metavar="[HOST:]PORT", help="serve a live preview page (off by default)")
    p.add_argument("--preview-host", metavar="NAME", action="append",
                   help="a host name the preview page answers to besides its address and localhost "
                        "(preview.hosts; repeatable)")


def command(args: argparse.Namespace) -> int:
    # journal logging first, so a config error (exit 78) is logged with its priority
    level = getattr(args, "log_level", None) or "info"
    systemd.setup_logging(level, os.environ)
    overrides = config_mod.overrides_from_flags(args)
    cfg = config_mod.load(args.config, overrides)
    return Daemon(cfg, overrides=overrides).run()


# --- statistics ---------------------------------------------------------------

class RunStats:
    """Counters and rolling latency/fps windows for the status topic."""

    def __init__(self, window: int = 300, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.frames = 0
        self.infer_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.times: collections.deque[float] = collections.deque(maxlen=window)
        self.lock = threading.Lock()

    def add(self, latency: Dict[str, float]) -> None:
        with self.lock:
            self.frames += 1
            self.infer_ms.append(latency["infer"])
            self.times.append(self.clock())

    def fps(self) -> float:
        with self.lock:
            if len(self.times) < 2:
                return 0.0
            span = self.times[-1] - self.times[0]
            recent = self.clock() - self.times[-1]
            if recent > 5.0:  # nothing processed lately
                return 0.0
            return (len(self.times) - 1) / span if span > 0 else 0.0

    def percentiles(self) -> InferMs:
        with self.lock:
            inf = np.array(self.infer_ms) if self.infer_ms else None
        if inf is None:
            return {"p50": None, "p95": None}
        return {"p50": round(float(np.percentile(inf, 50)), 2), "p95": round(float(np.percentile(inf, 95)), 2)}


@dataclass
class Decoded:
    """One frame the model has run on, waiting for its payload to be made and published."""

    frame: Frame
    result: FrameResult
    latency_ms: Dict[str, float]
    seq: int
    model_name: str


class Publisher:
    """Makes and publishes each frame's payload on its own thread, in frame order, while the main thread
    runs the model on the next frame (``invoke()`` releases the GIL: the JSON, the write and the observers
    cost the frame rate nothing then).

    A submitted frame is published once the main thread calls :meth:`go` (the engine's ``before_invoke``;
    before a wait for a live camera's next frame or for the frame-rate cap) or after ``hold`` seconds at
    most: started at once, the thread would take the GIL from the main thread's crop-and-track work between
    two inferences, which is the frame rate's critical path.  ``submit`` blocks while ``depth`` frames wait,
    so nothing is dropped and memory stays flat; ``drain`` returns once every submitted frame is published.
    An exception from ``finish`` (a full disk: exit 74; a closed pipe) stops publishing and is raised again
    in the main thread by the next ``submit``/``drain``.
    """

    def __init__(self, finish: Callable[[Decoded], Any], depth: int = 2, hold: float = 0.005):
        self._finish = finish
        self._q: queue.Queue[Optional[Decoded]] = queue.Queue(maxsize=depth)
        self._go = threading.Event()
        self.hold = hold
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="edgepose-publisher", daemon=True)
        self._thread.start()

    def go(self) -> None:
        """The main thread is about to leave the GIL for a while (an inference, a wait for the camera)."""
        self._go.set()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self._go.wait(self.hold)
                    self._go.clear()
                    self._finish(item)
            except BaseException as e:  # handed to the main thread, which ends the run with it
                self.error = e
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, item: Decoded) -> None:
        self._raise()
        self._q.put(item)

    def drain(self) -> None:
        self._go.set()  # the main thread waits here: nothing to keep the GIL free for
        self._q.join()
        self._raise()

    def close(self) -> None:
        """Publish what is queued and stop the thread (the error, if any, stays in ``error``)."""
        self._go.set()
        self._q.put(None)
        self._thread.join()


@dataclass
class Components:
    model_name: str
    engine: Engine
    pipeline: FramePipeline
    source: FrameSource
    meta: Meta


class WakeEvent:
    """A flag a signal handler may set, and a wait it wakes at once.

    ``threading.Event.set()`` takes a lock that the main thread may hold at
    the moment the handler runs (inside ``Event.wait()``), which deadlocks.
    Here ``set()`` only assigns a flag and writes a byte to a pipe (both safe
    in a handler); ``wait()`` selects on the pipe.
    """

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._w, b"!")
        except OSError:  # full (already readable) or closed: the flag is what counts
            pass

    def is_set(self) -> bool:
        return self._flag

    def clear(self) -> None:
        self._flag = False
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass

    def wait(self, timeout: Optional[float] = None) -> bool:
        if not self._flag:
            try:
                select.select([self._r], [], [], timeout)
            except OSError:
                pass
        return self._flag


def _must_reopen(old: config_mod.CameraConfig, new: config_mod.CameraConfig, live: bool) -> bool:
    """Whether a camera change needs the source reopened: another source, or a live one opened otherwise
    (files ignore the capture settings, and reopening one would replay it from the start)."""
    if new.source != old.source:
        return True
    opened = ("width", "height", "fps", "reopen_backoff_max")
    return live and any(getattr(new, k) != getattr(old, k) for k in opened)


class Daemon:
    def __init__(self, cfg: config_mod.Config, overrides: Optional[Dict[str, Dict[str, Any]]] = None,
                 environ: Optional[Mapping[str, str]] = None, sink_factory: SinkFactory = make_sink,
                 source_factory: SourceFactory = open_source,
                 observers: Optional[List[FrameObserver]] = None):
        self.cfg = cfg
        self.overrides = overrides or {}
        self.environ = os.environ if environ is None else environ
        self.sink_factory = sink_factory
        self.source_factory = source_factory
        self.observers = list(observers or [])
        self.stop_event = WakeEvent()  # set from signal handlers (see WakeEvent)
        self.reload_event = WakeEvent()
        self.stop_reason = ""
        self.stats = RunStats()
        self.seq = 0
        self.notifier = systemd.Notifier.from_environ(self.environ)
        self.parts: Optional[Components] = None
        self.ready = False  # READY=1 sent (first frame decoded)
        self.sink: Optional[Sink] = None  # None until run() made it
        self.device = cfg.device_id
        self.last_reload: Optional[Reload] = None  # outcome of the last SIGHUP (status `reload`)
        self.people_count: Optional[int] = None  # people in the last frame (multi-person models)
        self.publisher: Optional[Publisher] = None  # while run() runs: payloads are made and sent there
        self.last_score: Optional[float] = None  # the latest frame's pose score (status; Home Assistant)

    @property
    def components(self) -> Components:
        """The running model, pipeline and source; only once :meth:`run` built them."""
        if self.parts is None:
            raise RuntimeError("the daemon is not running: run() builds its components")
        return self.parts

    @property
    def running_sink(self) -> Sink:
        """The sink poses go to; only once :meth:`run` made it."""
        if self.sink is None:
            raise RuntimeError("the daemon is not running: run() makes its sink")
        return self.sink

    # -- building -----------------------------------------------------
    def build_model(self, cfg: config_mod.Config) -> Tuple[str, Engine, FramePipeline, Meta]:
        """Resolve (fetch on first use) and load the model; build the pipeline around it (the same
        :class:`~edgepose.inference.estimator.PoseEstimator` a Python program uses)."""
        # no progress bar in the journal: the "copying/downloading" log line is enough there
        progress = None if systemd.under_systemd(self.environ) else registry.stderr_progress()
        est = PoseEstimator.from_config(cfg, progress)
        model, engine = est.model, est.engine
        d = engine.describe()
        log.info("model %s (%s, %s family) on %s %s, %d thread(s), XNNPACK %s", model.name, model.path,
                 model.family.name, d["backend"], d["backend_version"], d["threads"],
                 f"on ({engine.delegation.summary()})" if d["xnnpack"] and engine.delegation else "off")
        meta = make_meta(cfg.device_id, model.name, est.pipeline.names, engine.input_size,
                         model.grid, __version__, skeleton=model.skeleton, family=model.family.name)
        return model.name, engine, est.pipeline, meta

    def open_source(self, cfg: config_mod.Config) -> FrameSource:
        source = self.source_factory(cfg.camera.source, width=cfg.camera.width, height=cfg.camera.height,
                                     fps=cfg.camera.fps, backoff_max=cfg.camera.reopen_backoff_max)
        turn = f", frames turned {cfg.camera.rotate} degrees clockwise" if cfg.camera.rotate else ""
        log.info("source %s (%s%s)", redact(cfg.camera.source), "live" if source.live else "file", turn)
        return RotatedSource(source, cfg.camera.rotate)

    def build(self, cfg: config_mod.Config) -> Components:
        model_name, engine, pipe, meta = self.build_model(cfg)
        return Components(model_name, engine, pipe, self.open_source(cfg), meta)

    def status(self) -> Status:
        """The status document (sinks publish it on their own schedule)."""
        parts = self.parts
        running: Optional[RunningStatus] = None  # the engine and source fields, once run() built them
        if parts is not None:
            d = parts.engine.describe()
            running = {"dropped_frames": parts.source.dropped, "camera": parts.source.state.value,
                       "model": parts.model_name, "backend": d["backend"], "backend_version": d["backend_version"],
                       "xnnpack": d["xnnpack"], "xnnpack_delegation": d["xnnpack_delegation"], "threads": d["threads"]}
        return make_status(self.device, time.time(), self.stats.fps(), self.stats.percentiles(), self.stats.frames,
                           self.stats.clock() - self.stats.started, board.cpu_temperature(), __version__,
                           self.last_score, running, self.last_reload, self.people_count)

    # -- signals ------------------------------------------------------
    def install_signal_handlers(self, stop_too: bool = True) -> None:
        """SIGHUP sets the reload event; with ``stop_too``, SIGTERM/SIGINT set the stop event.

        Until the model is loaded (a first-use download can take minutes) SIGTERM/SIGINT keep their
        default actions, so Ctrl-C interrupts the download at once instead of being noted for later.
        """
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, _frame: Optional[FrameType]) -> None:
            self.stop_reason = signal.Signals(signum).name
            self.stop_event.set()

        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())
        if stop_too:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)

    def reload(self) -> None:
        """SIGHUP: re-read the config file and rebuild what changed; keep running on a bad config."""
        self.reload_event.clear()
        if self.publisher is not None:  # the frames before the reload go out as they were, by the old sink
            self.publisher.drain()
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            if self.ready:  # READY=1 means "up"; before the first frame it comes from the loop
                self.notifier.ready()

    def _reload(self) -> None:
        """Everything the new file changes is built first; the running parts are replaced only once all of
        it worked, so a bad value, a model that does not load, a source that does not open or a sink that
        cannot be made leaves the daemon exactly as it was."""
        old, parts = self.cfg, self.components
        try:
            new = config_mod.load(old.path, self.overrides, self.environ)
        except EdgeposeError as e:
            self._keep_running(e)
            return
        changed = {s for s, v in new.to_dict().items() if old.to_dict()[s] != v}
        if not changed:
            log.info("SIGHUP: configuration unchanged")
            self.last_reload = {"ok": True, "ts": round(time.time(), 3), "changed": []}
            return
        model: Optional[Tuple[str, Engine, FramePipeline, Meta]] = None
        source: Optional[FrameSource] = None
        sink: Optional[Sink] = None
        reopen = "camera" in changed and _must_reopen(old.camera, new.camera, parts.source.live)
        turned = new.camera.rotate != old.camera.rotate
        try:
            if changed & {"model", "runtime", "smoothing", "tracking"}:
                model = self.build_model(new)
            if changed & {"output", "mqtt", "model", "homeassistant", "preview"}:
                sink = self.sink_factory(new, new.device_id, model[3] if model else parts.meta, self.status)
            if reopen and new.camera.source != old.camera.source:
                source = self.open_source(new)  # another device or file: open it before letting go of ours
        except EdgeposeError as e:
            self._keep_running(e)
            return
        if reopen and source is None:  # the same camera with other settings: it must be closed first
            parts.source.close()
            try:
                source = self.open_source(new)
            except EdgeposeError as e:
                self._keep_running(e)
                parts.source = self.open_source(old)  # as it was; if even that fails, the error stops us
                return
        elif source is not None:
            parts.source.close()
        if source is not None:
            parts.source = source
        elif turned and isinstance(parts.source, RotatedSource):  # the same source, turned another way
            parts.source.degrees = new.camera.rotate
        if model is not None:
            parts.engine.before_invoke = None
            parts.model_name, parts.engine, parts.pipeline, parts.meta = model
            if self.publisher is not None:
                parts.engine.before_invoke = self.publisher.go
            self.people_count = None  # counted again by the new model (a single-person one: never)
        elif turned:  # the tracked box and smoothing belong to the old orientation
            parts.pipeline.reset()
        self.cfg = new
        self.device = new.device_id
        if sink is not None:
            self.running_sink.close(handover_to=sink)
            sink.count_on(self.running_sink.stats())
            self._start_sink(new, sink)
        log.info("SIGHUP: reloaded %s (changed: %s)", new.path, ", ".join(sorted(changed)))
        self.last_reload = {"ok": True, "ts": round(time.time(), 3), "changed": sorted(changed)}

    def _keep_running(self, error: EdgeposeError) -> None:
        """A reload that failed: say so in the log, the status document and systemd's STATUS line."""
        log.error("SIGHUP: keeping the running configuration: %s", error)
        self.last_reload = {"ok": False, "ts": round(time.time(), 3), "error": str(error)}
        self.notifier.status(self.status_line())

    def _start_sink(self, cfg: config_mod.Config, sink: Sink) -> None:
        self.sink = sink
        sink.start()
        # at QoS 0 a pose decoded before the connection is up would be dropped: give the broker a
        # moment before the next frame (ends at once when it is unreachable or refuses)
        sink.wait_connected(cfg.mqtt.startup_wait, interrupt=self.stop_event)

    # -- the loop -----------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers(stop_too=False)
        # The per-frame OpenCV work (one 192x192 warpAffine) is too small to split: OpenCV's thread
        # pool only adds hand-offs to cores busy with decoding the next frame or with inference.
        cv2.setNumThreads(1)
        self.parts = built = self.build(self.cfg)
        self.install_signal_handlers()
        next_due = 0.0
        last_status = 0.0
        preview = watchdog = None
        try:  # from here on the source's reader thread runs: every exit path must close it
            self._start_sink(self.cfg, self.sink_factory(self.cfg, self.device, built.meta, self.status))
            self.publisher = Publisher(self.publish)
            built.engine.before_invoke = self.publisher.go
            if self.cfg.service.watchdog:
                watchdog = systemd.ProgressWatchdog(self.notifier, self.notifier.watchdog_interval,
                                                    self.cfg.service.stall_timeout)
                watchdog.start()
            if self.cfg.preview.listen:  # the live preview page (edgepose/output/preview.py); off by default
                from edgepose.output.preview import PreviewServer, host_names
                preview = PreviewServer(self.cfg.preview.listen, self.cfg.preview.fps, self.status,
                                        title=f"edgepose {self.device}",
                                        hosts=host_names(self.cfg.preview.hosts)).start()
                self.observers.append(preview.observe)
            while not self.stop_event.is_set():
                if self.reload_event.is_set():
                    self.reload()
                cfg, parts = self.cfg, self.components
                if cfg.runtime.max_fps:
                    wait = next_due - time.monotonic()
                    if wait > 0:
                        self.publisher.go()  # the main thread waits: publish the last frame now
                        # a deliberate pause, not a stall: wait in slices of at most 1 s, feeding the
                        # watchdog and answering SIGHUP (runtime.max_fps may be one frame a minute)
                        if self.stop_event.wait(min(wait, 1.0)):
                            break
                        if watchdog:
                            watchdog.progress()
                        continue
                    next_due = max(next_due, time.monotonic()) + 1.0 / cfg.runtime.max_fps
                if parts.source.live:  # the read waits for the camera: time to publish the last frame
                    self.publisher.go()
                frame = parts.source.read(timeout=0.5)
                now = time.monotonic()
                if now - last_status >= 5.0:
                    last_status = now
                    self.notifier.status(self.status_line())
                if frame is None:
                    if parts.source.exhausted:
                        log.info("end of %s after %d frames", redact(cfg.camera.source), self.seq)
                        break
                    reopening = parts.source.state is SourceState.RECONNECTING
                    if watchdog and reopening and parts.source.lost_for() < cfg.camera.gone_timeout:
                        watchdog.progress()  # we know what is wrong and are fixing it
                    continue
                self.publisher.submit(self.infer(frame))
                if watchdog:
                    watchdog.progress()
                if not self.ready:
                    self.ready = True
                    self.notifier.ready()
                    log.info("first pose decoded; running")
                if cfg.runtime.max_frames and self.seq >= cfg.runtime.max_frames:
                    break
            self.publisher.drain()  # every decoded frame published, or its error raised here
        finally:
            if self.stop_event.is_set():
                self.notifier.stopping()
                log.info("%s received: stopping", self.stop_reason or "stop")
            if watchdog:
                watchdog.stop()
            if self.publisher is not None:  # what was decoded is published before the sink closes
                self.publisher.close()
                self.publisher = None
            if preview is not None:
                self.observers.remove(preview.observe)
                preview.close()
            self.components.source.close()
            if self.sink is not None:  # None: the sink could not be made (its error follows)
                self.sink.close()
                log.info("stopped after %d frames", self.stats.frames)
        return 0

    def process(self, frame: Frame) -> PosePayload:
        """Run one frame and publish its payload (the loop does the two on two threads)."""
        return self.publish(self.infer(frame))

    def infer(self, frame: Frame) -> Decoded:
        """The model's part of a frame: the pipeline, on the main thread."""
        parts = self.components
        result = parts.pipeline.process(frame.image, frame.ts, still=frame.still)
        lat = dict(result.latency_ms)
        lat["capture"] = frame.capture_ms
        lat["total"] = frame.capture_ms + (time.time() - frame.ts) * 1e3
        self.seq += 1
        return Decoded(frame, result, lat, self.seq - 1, parts.model_name)

    def publish(self, decoded: Decoded) -> PosePayload:
        """The payload of a decoded frame, published, counted and shown to the observers."""
        frame, result, lat = decoded.frame, decoded.result, decoded.latency_ms
        payload = make_payload(self.device, decoded.seq, frame.ts, frame.size, decoded.model_name, result.pose,
                               lat, people=result.people)
        if result.people is not None:
            self.people_count = len(result.people)
        self.last_score = payload["score"]
        self.running_sink.publish_pose(payload)
        self.stats.add(lat)
        for obs in self.observers:
            try:
                obs(frame, result, payload)
            except Exception:  # an observer (preview) must never stop the pipeline
                log.exception("frame observer failed")
        return payload

    def status_line(self) -> str:
        st = self.status()
        broker = ""
        try:
            s = self.running_sink.stats()
            if "broker" in s:
                broker = f", broker {s['broker']}"
        except Exception:
            pass
        kept = "" if self.last_reload is None or self.last_reload["ok"] else \
            ", last reload failed: running configuration kept"
        return f"{st['fps']:.1f} fps, {st['frames']} frames, camera {st.get('camera', '?')}{broker}{kept}"
