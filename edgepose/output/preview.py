"""The live preview page (``edgepose run --preview [HOST:]PORT``), also used by ``edgepose view --serve``.

A stdlib :class:`http.server.ThreadingHTTPServer` in its own thread serves

* ``/``             a small page: the live picture and the status numbers;
* ``/stream.mjpg``  the picture as multipart MJPEG (what the page shows);
* ``/frame.jpg``    one fresh JPEG (for scripts, ``curl`` or a browser without MJPEG);
* ``/status.json``  the daemon's status document plus ``preview`` counters.

Only requests whose ``Host`` header names this server are answered (421
otherwise): the address it listens on, the address the request arrived at,
``localhost``, ``127.0.0.1``, ``[::1]`` and the names given in ``hosts``
(``preview.hosts``).  A page of another site that a browser reaches through
DNS rebinding names its own host, and so cannot read the picture or the status.

Cost model.  The daemon calls :meth:`PreviewServer.observe` once per frame; it
only stores a reference to the newest (image, payload) pair: no copy, no
drawing, no lock.  A separate encoder thread draws the skeleton, scores, FPS
and latency (:mod:`edgepose.output.draw`) on a downscaled copy and JPEG-encodes it, at
most ``preview.fps`` times per second, and only while someone is watching (a
stream is open, or a ``/frame.jpg`` was asked for in the last few seconds).
Each client thread sends the newest JPEG it has not sent yet, so a slow client
skips frames instead of queueing them, and never holds up the encoder.
"""

from __future__ import annotations

import collections
import errno
import html
import json
import logging
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from edgepose.core.config import split_host_port
from edgepose.core.errors import ConfigError, DeviceUnavailableError
from edgepose.core.payload import PreviewStats

if TYPE_CHECKING:  # numpy and cv2 are loaded only once the preview draws
    import numpy as np

    from edgepose.capture.sources import Frame

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_WIDTH = 640  # preview frames are downscaled to this width before drawing and encoding
QUALITY = 75  # JPEG quality
MAX_CLIENTS = 32  # open streams at once; more get 503
DEMAND_S = 3.0  # a /frame.jpg request keeps the encoder running this long
SEND_TIMEOUT_S = 10.0  # a client that takes longer to accept data is dropped
BOUNDARY = "edgeposeframe"
ENCODER_NICE = 10  # the drawing/encoding thread runs at this (lower) CPU priority
BACKLOG = 64  # connections waiting to be accepted: a handful of viewers plus health probes
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

# the daemon's status document (core.payload.Status), or in `edgepose view` a device's status as received over MQTT
StatusSource = Callable[[], Mapping[str, Any]]


def host_names(text: str) -> Tuple[str, ...]:
    """``preview.hosts`` / ``--preview-host`` / ``--serve-host``: comma-separated host names, normalised."""
    names = tuple(_normal_host(n) for n in str(text).split(",") if n.strip())
    for n in names:
        if not n or any(c in n for c in "/[]@ \t") or not n.isprintable():
            raise ConfigError(f"bad preview host name {n!r}: expected a host name or address, e.g. pi.local")
    return names


def _normal_host(name: str) -> str:
    return name.strip().lower().rstrip(".")


def host_of(header: str) -> Optional[str]:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), normalised; None if malformed."""
    try:
        host, _ = split_host_port(header)
    except ValueError:
        return None
    return _normal_host(host)


def parse_listen(text: str, what: str = "--preview") -> Tuple[str, int]:
    """``PORT`` -> (127.0.0.1, PORT); ``HOST:PORT`` and ``[IPv6]:PORT`` -> (HOST, PORT)."""
    t = str(text).strip()
    try:
        host, port = (DEFAULT_HOST, int(t)) if t.isdigit() else split_host_port(t)
    except ValueError:
        host, port = "", None
    if not host or port is None or not 0 <= port <= 65535:
        raise ConfigError(f"bad {what} {text!r}: expected PORT or HOST:PORT (e.g. 8080 or 0.0.0.0:8080)")
    return host, port


class RateMeter:
    """Frames per second from the payloads' ``seq`` and ``ts`` (over the last few samples)."""

    def __init__(self, window: int = 8):
        self.samples: collections.deque[Tuple[int, float]] = collections.deque(maxlen=window)

    def add(self, payload: Mapping[str, Any]) -> Optional[float]:
        seq, ts = payload.get("seq"), payload.get("ts")
        if not isinstance(seq, int) or not isinstance(ts, (int, float)):
            return None
        if self.samples and seq <= self.samples[-1][0]:
            self.samples.clear()  # the sender restarted
        self.samples.append((seq, float(ts)))
        (s0, t0), (s1, t1) = self.samples[0], self.samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG
    preview: PreviewServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class PreviewServer:
    """HTTP server + encoder thread; see the module docstring.

    ``submit(image, payload)`` (or ``observe(frame, result, payload)`` as a
    daemon frame observer) hands over the newest picture; ``start()`` binds
    and starts the threads; ``close()`` stops them.
    """

    def __init__(self, listen: str, fps: float = 5.0, status_provider: Optional[StatusSource] = None,
                 title: str = "edgepose", skeleton: Optional[Sequence[Sequence[int]]] = None,
                 max_width: int = MAX_WIDTH, quality: int = QUALITY, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic, flag: str = "--preview",
                 hosts: Sequence[str] = ()):
        self.host, self.port = parse_listen(listen)
        # Host headers answered (see the module docstring); the arrival address is added per request
        self.hosts = frozenset((*LOOPBACK_NAMES, _normal_host(self.host), *(_normal_host(h) for h in hosts)))
        self._refused_host_logged = False
        self.flag = flag  # the option that chose the address (run: --preview, view: --serve), for errors
        self.period = 1.0 / max(fps, 0.01)
        self.status_provider = status_provider or dict
        self.title = title
        # None: the bones of the layout each payload's keypoint names are (draw.render)
        self.skeleton = None if skeleton is None else tuple(tuple(e) for e in skeleton)
        self.max_width, self.quality, self.max_clients = max_width, quality, max_clients
        self.clock = clock
        self._latest: Optional[Tuple[Any, Mapping[str, Any]]] = None
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._jpeg: Optional[bytes] = None
        self._jpeg_seq = 0
        self._clients = 0
        self._demand_until = 0.0
        self.encoded = 0  # JPEGs made (stays 0 while nobody watches)
        self.served = 0  # JPEGs sent
        self._httpd: Optional[_HTTPServer] = None
        self._threads: list = []

    # -- producer side (the daemon's thread): O(1), no copy -------------
    def submit(self, image: np.ndarray, payload: Mapping[str, Any]) -> None:
        self._latest = (image, payload)

    def observe(self, frame: Frame, result: Any, payload: Mapping[str, Any]) -> None:
        """A :class:`edgepose.daemon.service.Daemon` frame observer."""
        self._latest = (frame.image, payload)

    # -- lifecycle ------------------------------------------------------
    def start(self) -> PreviewServer:
        cls = _HTTPServer6 if ":" in self.host else _HTTPServer
        try:
            httpd = cls((self.host, self.port), _Handler)
        except OSError as e:
            where = f"{self.host}:{self.port}"
            if e.errno == errno.EADDRINUSE:
                raise DeviceUnavailableError(f"preview: port {self.port} on {self.host} is already in use; "
                                             f"choose another with {self.flag} [HOST:]PORT") from None
            if isinstance(e, socket.gaierror):
                raise DeviceUnavailableError(f"preview: cannot listen on {where}: unknown host") from None
            raise DeviceUnavailableError(f"preview: cannot listen on {where}: "
                                         f"{(e.strerror or str(e)).lower()}") from None
        httpd.preview = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._threads = [threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                          name="preview-http", daemon=True),
                         threading.Thread(target=self._encoder_main, name="preview-encoder", daemon=True)]
        for t in self._threads:
            t.start()
        log.info("preview on %s (%d fps at most)", self.url, round(1.0 / self.period))
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> PreviewStats:
        with self._cond:
            return {"url": self.url, "clients": self._clients, "encoded": self.encoded,
                    "served": self.served, "max_fps": round(1.0 / self.period, 2)}

    # -- encoder thread ---------------------------------------------------
    def _watched(self) -> bool:
        return self._clients > 0 or self.clock() < self._demand_until

    def _encoder_main(self) -> None:
        try:  # Linux nice values are per thread: inference keeps precedence over drawing
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)
        except (AttributeError, OSError):
            pass
        meter = RateMeter()
        last = None
        next_due = 0.0
        while not self._closed.is_set():
            with self._cond:
                while not self._closed.is_set() and not self._watched():
                    self._cond.wait(1.0)
            wait = next_due - self.clock()
            latest = self._latest
            if wait > 0 or latest is None or latest is last:
                self._closed.wait(max(wait, 0.0) if wait > 0 else min(self.period, 0.02))
                continue
            last = latest
            next_due = self.clock() + self.period
            image, payload = latest
            try:
                jpeg = self.picture(image, payload, meter.add(payload))
            except Exception:  # a bad frame must not end the preview
                log.exception("preview: drawing a frame failed")
                continue
            with self._cond:
                self._jpeg = jpeg
                self._jpeg_seq += 1
                self.encoded += 1
                self._cond.notify_all()

    def picture(self, image: np.ndarray, payload: Mapping[str, Any], fps: Optional[float]) -> bytes:
        """The JPEG the page shows for one frame: ``image`` (scaled to ``max_width``) with the pose drawn."""
        from edgepose.output import draw  # cv2 and numpy: only loaded once the preview draws
        return draw.encode_jpeg(draw.render(image, payload, fps, self.skeleton, max_width=self.max_width),
                                self.quality)

    # -- client side (HTTP handler threads) -----------------------------
    def _next_jpeg(self, after: int, timeout: float) -> Tuple[Optional[bytes], int]:
        """The first JPEG newer than ``after`` (waits up to ``timeout``); (None, after) if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jpeg_seq <= after and not self._closed.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, after
                self._cond.wait(left)
            if self._jpeg_seq <= after:
                return None, after
            self.served += 1
            return self._jpeg, self._jpeg_seq

    def _add_client(self) -> bool:
        with self._cond:
            if self._clients >= self.max_clients:
                return False
            self._clients += 1
            self._cond.notify_all()
            return True

    def _remove_client(self) -> None:
        with self._cond:
            self._clients -= 1

    def _one_frame(self, timeout: float) -> Optional[bytes]:
        """A fresh JPEG for /frame.jpg (wakes the encoder for DEMAND_S); the last one if none comes."""
        with self._cond:
            self._demand_until = self.clock() + DEMAND_S
            seq, stale = self._jpeg_seq, self._jpeg
            self._cond.notify_all()
        jpeg, _ = self._next_jpeg(seq, timeout)
        return jpeg or stale

    def host_allowed(self, header: Optional[str], local_address: str) -> bool:
        """Whether a request with this ``Host`` header (None: no header, an HTTP/1.0 client, not a
        browser) that arrived at ``local_address`` is answered."""
        if header is None:
            return True
        host = host_of(header)
        ok = host is not None and (host in self.hosts or host == _normal_host(local_address))
        if not ok and not self._refused_host_logged:
            self._refused_host_logged = True
            log.warning("preview: refused a request for host %r (421); to reach the page by that name, "
                        "add it to preview.hosts (%s-host NAME)", header[:80], self.flag)
        return ok

    def status(self) -> Dict[str, Any]:
        """``/status.json``: the provider's document with the page's counters (``preview``)."""
        st = dict(self.status_provider())
        st["preview"] = self.stats()
        return st


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = SEND_TIMEOUT_S
    server_version = "edgepose-preview"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("preview %s: " + fmt, self.client_address[0], *args)

    def do_GET(self) -> None:
        pv = self.server.preview
        path = self.path.split("?", 1)[0]
        try:
            if not pv.host_allowed(self.headers.get("Host"), self.connection.getsockname()[0]):
                self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain",
                           f"this server does not answer to that host name: add it to preview.hosts "
                           f"({pv.flag}-host NAME)\n".encode())
            elif path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page(pv.title).encode())
            elif path == "/status.json":
                self._send(HTTPStatus.OK, "application/json", json.dumps(pv.status()).encode())
            elif path == "/frame.jpg":
                jpeg = pv._one_frame(timeout=max(2.0, 2 * pv.period))
                if jpeg is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet\n")
                else:
                    self._send(HTTPStatus.OK, "image/jpeg", jpeg)
            elif path == "/stream.mjpg":
                self._stream(pv)
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            log.debug("preview: %s went away", self.client_address[0])

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, pv: PreviewServer) -> None:
        if not pv._add_client():
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many preview clients\n")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            # each part is followed at once by the next boundary: browsers show a part only once
            # they see where it ends, and the daemon may not send another for a while
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            seq, last = 0, None
            while not pv._closed.is_set():
                jpeg, seq = pv._next_jpeg(seq, timeout=1.0)
                if jpeg is None:
                    # nothing new for a second (a paused daemon, a quiet device): send the last picture
                    # again, so a browser that waits for the next part still shows it, and so a client
                    # that went away is noticed
                    if last is None:
                        continue
                    jpeg = last
                last = jpeg
                self.wfile.write(f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                                 + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        finally:
            pv._remove_client()


def page(title: str) -> str:
    return _PAGE.replace("{{title}}", html.escape(title))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} preview</title>
<style>
body{margin:0;background:#161616;color:#ddd;font:14px/1.4 system-ui,sans-serif}
header{padding:8px 12px;background:#222;display:flex;gap:12px;align-items:baseline}
h1{font-size:16px;margin:0}#state{color:#8c8}#state.off{color:#e66}
main{display:flex;flex-wrap:wrap;gap:12px;padding:12px}
#live{max-width:100%;background:#000;min-width:320px;min-height:240px}
table{border-collapse:collapse}td{padding:2px 8px;border-bottom:1px solid #333}
td:first-child{color:#999}pre{font-size:12px;max-width:40em;white-space:pre-wrap;color:#aaa}
</style></head><body>
<header><h1>{{title}}</h1><span id="state">connecting</span></header>
<main>
<img id="live" alt="live camera picture with the detected pose">
<section><table id="status"><tbody>
<tr><td>fps</td><td id="st-fps">-</td></tr>
<tr><td>inference p50 / p95 (ms)</td><td id="st-infer">-</td></tr>
<tr><td>frames</td><td id="st-frames">-</td></tr>
<tr><td>dropped frames</td><td id="st-dropped_frames">-</td></tr>
<tr><td>camera</td><td id="st-camera">-</td></tr>
<tr><td>model</td><td id="st-model">-</td></tr>
<tr><td>backend</td><td id="st-backend">-</td></tr>
<tr><td>CPU temperature (C)</td><td id="st-cpu_temp_c">-</td></tr>
<tr><td>uptime (s)</td><td id="st-uptime_s">-</td></tr>
<tr><td>preview clients</td><td id="st-clients">-</td></tr>
</tbody></table>
<details><summary>status JSON</summary><pre id="json"></pre></details></section>
</main>
<script>
"use strict";
const img = document.getElementById("live"), state = document.getElementById("state");
function set(id, v) {
  const e = document.getElementById("st-" + id);
  if (e) e.textContent = (v === null || v === undefined) ? "-" : v;
}
async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    const s = await r.json();
    for (const k of ["fps", "frames", "dropped_frames", "camera", "model", "cpu_temp_c", "uptime_s"]) set(k, s[k]);
    const inf = s.infer_ms || {};
    set("infer", (inf.p50 === undefined || inf.p50 === null) ? null : inf.p50 + " / " + inf.p95);
    set("backend", s.backend ? s.backend + (s.xnnpack ? " + XNNPACK" : "")
                              + (s.threads ? ", " + s.threads + " thread(s)" : "") : null);
    set("clients", s.preview ? s.preview.clients : null);
    document.getElementById("json").textContent = JSON.stringify(s, null, 1);
    state.textContent = "live"; state.className = "";
  } catch (e) { state.textContent = "offline"; state.className = "off"; }
  setTimeout(poll, 1000);
}
img.onerror = () => setTimeout(() => { img.src = "stream.mjpg?" + Date.now(); }, 1000);
// the stream never ends: start it after the page has loaded, so it does not hold up the load event
window.addEventListener("load", () => { img.src = "stream.mjpg"; });
poll();
</script></body></html>
"""
