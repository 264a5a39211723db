"""``edgepose view``: watch a device's poses from a laptop.

Subscribes to ``<prefix>/<device>/{pose,meta,status,availability}`` (see
docs/mqtt.md) and draws each pose with :mod:`edgepose.output.draw` on a blank canvas
of the device's frame size (the camera picture never leaves the device), to

* a window, when there is a display and OpenCV has GUI support;
* ``--out FILE.jpg`` (the newest pose, rewritten atomically) or ``--out FILE.mp4``
  (one video frame per pose);
* ``--serve [HOST:]PORT``: the same page as ``edgepose run --preview``, with the
  device's retained status as the status numbers.

Without a display and without ``--out``/``--serve`` the page is served on
127.0.0.1:8090.

The canvas is bounded by what the output needs (:data:`MAX_CANVAS` for files and
windows, the page's width for ``--serve``), not by the frame size a message
claims: larger frames are drawn scaled down.  Malformed messages are skipped with
one line per kind of problem (:func:`edgepose.core.payload.read_message`).
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgepose.core.errors import EX_TEMPFAIL, DeviceUnavailableError, UsageError
from edgepose.core.files import write_problem
from edgepose.core.payload import read_message
from edgepose.output import draw
from edgepose.output.mqttclient import Subscriber, check_device, check_prefix
from edgepose.output.preview import PreviewServer, RateMeter, host_names, parse_listen
from edgepose.tools.sub import (
    KINDS,
    add_connection_arguments,
    add_stop_arguments,
    bounded_arg,
    connection_config,
    printable,
)

log = logging.getLogger(__name__)

FALLBACK_SERVE = "127.0.0.1:8090"
WINDOW = "edgepose view"
MAX_CANVAS = (1920, 1920)  # largest picture drawn for a file or a window (larger frames are scaled down)
MAX_AVAILABILITY = 64  # characters of an availability message kept


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_arguments(p)
    p.add_argument("--device", metavar="ID", help="device to show (default: output.device from the config, "
                                                  "else the first device that sends a pose)")
    to = p.add_mutually_exclusive_group()
    to.add_argument("--window", action="store_true", help="draw in a window (needs a display and an OpenCV "
                                                          "with GUI support; the default when both exist)")
    to.add_argument("--out", metavar="FILE", help="write FILE.jpg (newest pose) or FILE.mp4 (one frame per pose)")
    to.add_argument("--serve", metavar="[HOST:]PORT", help="serve the preview page (host defaults to 127.0.0.1)")
    p.add_argument("--serve-host", metavar="NAME", action="append",
                   help="a host name the page answers to besides its address and localhost "
                        "(preview.hosts; repeatable)")
    fps = bounded_arg(float, lambda v: math.isfinite(v) and v >= 0.1, "a frame rate >= 0.1")
    p.add_argument("--fps", type=fps, default=10.0, metavar="F",
                   help="frame rate of an .mp4, and most frames drawn per second elsewhere (default 10)")
    add_stop_arguments(p, "exit after S seconds (exit 75 if --count was not reached)")


def window_problem(environ: Mapping[str, str]) -> Optional[str]:
    """None when a window can be opened here, else why not."""
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY is not set)"
    import cv2
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV has no GUI support (opencv-python-headless)"
    return None


# --- what arrives over MQTT ---------------------------------------------------------------

class DeviceView:
    """The newest pose, meta, status and availability of one device (filled by paho's thread)."""

    def __init__(self, device: str = ""):
        self.device = device  # "" = lock onto the first device that sends a pose
        self.meta: Dict[str, Any] = {}
        self.status: Dict[str, Any] = {}
        self.availability = "unknown"
        self.pending: collections.deque[Dict[str, Any]] = collections.deque(maxlen=256)
        self.poses = 0
        self.problems: set = set()  # (topic kind, problem) of malformed messages already logged
        self.cond = threading.Condition()

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 3:
            return
        dev, kind = parts[-2], parts[-1]
        with self.cond:
            if not self.device:
                if kind != "pose":
                    return
                self.device = dev
                log.info("showing device %s (choose another with --device)", printable(dev))
            if dev != self.device:
                return
            if kind == "availability":
                self.availability = payload[:MAX_AVAILABILITY].decode("utf-8", "replace")
                return
            if kind not in KINDS:
                return
            doc, problem = read_message(kind, payload)
            if problem:
                if (kind, problem) not in self.problems:  # once per kind: a bad publisher can send many
                    self.problems.add((kind, problem))
                    log.warning("%s %s skipped: %s", printable(dev), kind, problem)
                return
            if kind == "meta":
                self.meta = doc
            elif kind == "status":
                self.status = doc
            elif kind == "pose":
                self.pending.append(doc)
                self.poses += 1
                self.cond.notify_all()

    def take_poses(self, timeout: float) -> List[Dict[str, Any]]:
        """The poses that arrived since the last call, oldest first (waits up to ``timeout`` for one)."""
        with self.cond:
            if not self.pending:
                self.cond.wait(timeout)
            poses = list(self.pending)
            self.pending.clear()
            return poses

    def status_doc(self) -> Dict[str, Any]:
        """What the page's status panel shows: the device's retained status, meta and availability."""
        with self.cond:
            st = dict(self.status)
            st.setdefault("device", self.device or None)
            st.setdefault("model", self.meta.get("model"))
            st["availability"] = self.availability
            st["poses_received"] = self.poses
            return st


# --- where the drawings go ------------------------------------------------------------------

class Canvas:
    """Blank frames for drawing poses on (cached; never drawn on: draw.render copies).

    The device's frame size, scaled down to fit ``max_size`` (what the output needs): a message that
    claims a 16384x16384 frame costs a canvas of at most ``max_size``, not 800 MB.
    """

    def __init__(self, max_size: Tuple[int, int] = MAX_CANVAS):
        self.max_size = max_size
        self._size: Tuple[int, int] = (0, 0)
        self._img: Any = None  # the canvas, made at the first pose's size

    def fit(self, pose: Mapping[str, Any]) -> Tuple[Any, Mapping[str, Any]]:
        """(canvas, pose) with the pose's keypoints and frame scaled to the canvas."""
        fr = pose.get("frame") or {}
        w, h = int(fr.get("width") or 640), int(fr.get("height") or 480)
        s = min(1.0, self.max_size[0] / w, self.max_size[1] / h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        if size != self._size:
            self._size, self._img = size, draw.blank_canvas(*size)
        if s < 1.0:
            pose = dict(pose, frame={"width": size[0], "height": size[1]},
                        keypoints=[dict(k, x=k["x"] * s, y=k["y"] * s) for k in pose.get("keypoints", [])])
            if isinstance(pose.get("people"), list):  # v2: everyone, scaled the same
                pose["people"] = [dict(p, keypoints={n: dict(k, x=k["x"] * s, y=k["y"] * s)
                                                     for n, k in p["keypoints"].items()}) for p in pose["people"]]
        return self._img, pose


def picture(canvas: Canvas, pose: Mapping[str, Any], fps: Optional[float], meta: Mapping[str, Any]):
    """The picture of one pose for a file or a window: on ``canvas``, with the bones ``meta`` announced."""
    img, fitted = canvas.fit(pose)
    return draw.render(img, fitted, fps, draw.skeleton_from_meta(meta))


class JpegOut:
    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.written = 0

    def show(self, img) -> None:
        self.tmp.write_bytes(draw.encode_jpeg(img, 90))
        os.replace(self.tmp, self.path)  # readers never see half a file
        self.written += 1

    def close(self) -> None:
        if self.written:
            log.info("wrote %s", self.path)


class Mp4Out:
    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.writer: Any = None  # cv2.VideoWriter once the first picture gives the size
        self.size: Tuple[int, int] = (0, 0)
        self.written = 0

    def show(self, img) -> None:
        import cv2
        if self.writer is None:
            self.size = (img.shape[1], img.shape[0])
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self.size)
            if not writer.isOpened():  # close() then reports nothing written
                raise DeviceUnavailableError(f"cannot write {self.path} (mp4v video)")
            self.writer = writer
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        self.written += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            log.info("wrote %s (%d frames)", self.path, self.written)


class WindowOut:
    def __init__(self, stop: threading.Event):
        self.stop = stop

    def show(self, img) -> None:
        import cv2
        cv2.imshow(WINDOW, img)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.stop.set()

    def close(self) -> None:
        import cv2
        cv2.destroyAllWindows()


def check_out(out: str) -> Path:
    """``--out``: a .jpg or .mp4 file that can be written (checked before connecting, not at the first pose)."""
    path = Path(out)
    if path.suffix.lower() not in (".jpg", ".jpeg", ".mp4"):
        raise UsageError(f"--out {out}: expected a .jpg or .mp4 file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {out}: folder {path.parent} does not exist")
    problem = write_problem(path)
    if problem:
        raise UsageError(f"--out {out}: cannot write it: {problem}")
    return path


def _open_output(args, out_path: Optional[Path], view: DeviceView, stop: threading.Event,
                 environ: Mapping[str, str], hosts: Tuple[str, ...] = ()):
    """(output, preview server or None) for the chosen destination (``out_path``: ``--out``, checked)."""
    if out_path is not None:
        return (Mp4Out(out_path, args.fps) if out_path.suffix.lower() == ".mp4" else JpegOut(out_path)), None
    listen = args.serve
    if not listen:
        problem = window_problem(environ)
        if problem is None:
            return WindowOut(stop), None
        if args.window:
            raise DeviceUnavailableError(f"cannot open a window: {problem}; use --out FILE or --serve PORT")
        log.info("%s: serving the view instead (or use --out FILE.jpg|FILE.mp4)", problem)
        listen = FALLBACK_SERVE
    server = PreviewServer(listen, args.fps, view.status_doc, title=f"edgepose view {args.device or ''}".strip(),
                           flag="--serve", hosts=hosts)
    return None, server.start()


# --- the command ---------------------------------------------------------------------------

def command(args: argparse.Namespace, environ: Optional[Mapping[str, str]] = None) -> int:
    environ = os.environ if environ is None else environ
    cfg = connection_config(args)
    device = args.device or cfg.output.device or ""
    if device:
        check_device(device)
    prefix = check_prefix(cfg.mqtt.prefix)
    if args.serve:
        parse_listen(args.serve, "--serve")  # a bad value fails before anything connects
    out_path = check_out(args.out) if args.out else None  # before anything connects
    hosts = host_names(",".join([cfg.preview.hosts, *(args.serve_host or [])]))
    view = DeviceView(device)
    stop = threading.Event()
    who = device or "+"
    sub = Subscriber(cfg.mqtt, f"edgepose-view-{os.getpid()}", [f"{prefix}/{who}/{t}" for t in KINDS], qos=0,
                     # on the broker's SUBACK: from this line on nothing published is missed (scripts and
                     # tests wait for it)
                     on_subscribed=lambda: log.info("subscribed to %s/%s/{pose,meta,status,availability} on %s",
                                                    prefix, who, sub.broker))
    sub.start()
    try:
        out, server = _open_output(args, out_path, view, stop, environ, hosts)
    except BaseException:
        sub.close()
        raise
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    canvas = Canvas((server.max_width, MAX_CANVAS[1]) if server is not None else MAX_CANVAS)
    meter = RateMeter()
    period = 1.0 / args.fps
    seen, last_drawn, undrawn = 0, 0.0, None

    def show(pose) -> None:
        out.show(picture(canvas, pose, meter.add(pose), view.meta))

    try:
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            for m in sub.take(min(0.2, period)):
                view.on_message(m.topic, m.payload)
            poses = view.take_poses(0)
            if args.count:
                poses = poses[:args.count - seen]
            seen += len(poses)
            done = bool(args.count) and seen >= args.count
            if server is not None:
                if poses:
                    server.skeleton = draw.skeleton_from_meta(view.meta)
                    server.submit(*canvas.fit(poses[-1]))  # drawn by the server when watched
            elif isinstance(out, Mp4Out):
                for pose in poses:  # a video gets every pose
                    show(pose)
            else:  # a file or a window: the newest pose, at most --fps times a second
                undrawn = poses[-1] if poses else undrawn
                if undrawn is not None and (done or time.monotonic() - last_drawn >= period):
                    show(undrawn)
                    undrawn, last_drawn = None, time.monotonic()
            if done:
                break
    finally:
        sub.close()
        if out is not None:
            out.close()
        if server is not None:
            server.close()
    if args.count and seen < args.count and not stop.is_set():
        log.error("timed out after %g s: received %d of %d poses", args.timeout, seen, args.count)
        return EX_TEMPFAIL
    return 0

