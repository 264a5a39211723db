"""Frame sources: cameras, streams, video files, images, folders and globs.

``open_source(uri)`` parses what the user typed and returns a
:class:`FrameSource`:

* **finite** sources (video file, image, folder, glob) yield every frame in
  order, read ahead by one thread into a small bounded queue so decoding a
  frame overlaps inference of the previous one; ``read()`` returns ``None``
  once exhausted;
* **live** sources (``N`` camera index, ``/dev/videoN``, ``rtsp://...``,
  ``csi://N``) are read by a capture thread that keeps only the newest frame
  (no growing lag; overwritten frames are counted as dropped) and reopens a
  lost camera with exponential backoff, reporting its state.

Hardware-only paths (picamera2 on a Pi, nvarguscamerasrc on a Jetson) are
thin adapters; the logic around them takes an injectable ``opener``.
"""

from __future__ import annotations

import dataclasses
import glob
import http.client
import logging
import os
import queue
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Protocol, Tuple, cast
from urllib.parse import urlsplit

import cv2
import numpy as np

from edgepose.capture.imagesize import ImageRefused, decode_bounded
from edgepose.core.errors import (
    DeviceUnavailableError,
    EdgeposeError,
    InputMissingError,
    RuntimeMissingError,
    UsageError,
)
from edgepose.core.text import control_character, redact, split_credentials

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv",
              ".h264", ".h265", ".mjpg", ".mjpeg", ".3gp"}  # OpenCV decides what it reads: names for wording
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceState(str, Enum):
    """Where a source is (``camera`` in the status document, as its value)."""

    OPENING = "opening"
    OK = "ok"
    RECONNECTING = "reconnecting"  # a live source that was lost, being reopened with backoff


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8, HxWx3
    ts: float  # capture time, UNIX seconds
    index: int  # frame number from this source, from 0
    capture_ms: float = 0.0  # time spent grabbing/decoding it
    still: bool = False  # an unrelated photo (image files), not the next frame of a sequence

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


class Capture(Protocol):
    """What a live opener returns (cv2.VideoCapture fits)."""

    def read(self) -> Tuple[bool, Optional[np.ndarray]]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | v4l2 | stream | csi | snapshot | video | image | images
    uri: str
    index: int = 0
    paths: Tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "v4l2", "stream", "csi", "snapshot")


def parse_source(uri: str) -> SourceSpec:
    """Classify what the user typed; missing files are an InputMissingError (66)."""
    uri = str(uri).strip()
    if not uri:
        raise UsageError("empty source: give a camera index (0) or a file, folder, glob or URL")
    bad = control_character(uri)
    if bad:
        raise UsageError(f"source {uri!r} has a control character ({bad}): not a camera, file or URL")
    try:
        return _parse_source(uri)
    except OSError as e:  # ENAMETOOLONG, ELOOP, EACCES on a folder on the way, ...
        raise InputMissingError(f"source {_shorten(uri)} cannot be used: {e.strerror or e}") from None
    except (UnicodeEncodeError, UnicodeDecodeError) as e:  # a lone surrogate has no file-system encoding
        raise InputMissingError(f"source {_shorten(ascii(uri))} cannot be used: {e.reason}") from None


def _shorten(text: str, most: int = 120) -> str:
    return text if len(text) <= most else f"{text[:most // 2]}...{text[-most // 2:]} ({len(text)} characters)"


def _parse_source(uri: str) -> SourceSpec:
    if uri.isdigit():
        return SourceSpec("camera", uri, index=int(uri))
    m = re.fullmatch(r"/dev/video(\d+)", uri)
    if m:
        return SourceSpec("v4l2", uri, index=int(m.group(1)))
    m = re.fullmatch(r"csi://(\d+)", uri)
    if m:
        return SourceSpec("csi", uri, index=int(m.group(1)))
    if uri.startswith(STREAM_SCHEMES):
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError as e:
            raise UsageError(f"bad source URL {redact(uri)}: {e}") from None
        if uri.startswith(("http://", "https://")) and Path(parts.path).suffix.lower() in IMAGE_EXTS:
            return SourceSpec("snapshot", uri)  # an IP camera's still image, polled
        return SourceSpec("stream", uri)
    if any(c in uri for c in "*?[") and not Path(os.path.expanduser(uri)).exists():  # `shot[1].png` as named
        paths = tuple(sorted(p for p in glob.glob(uri) if Path(p).suffix.lower() in IMAGE_EXTS))
        if not paths:
            raise InputMissingError(f"no images match {uri}")
        return SourceSpec("images", uri, paths=paths)
    p = Path(os.path.expanduser(uri))
    if p.is_dir():
        paths = tuple(str(q) for q in images_in(p))
        if not paths:
            raise InputMissingError(f"folder {uri} has no images ({', '.join(sorted(IMAGE_EXTS))})")
        return SourceSpec("images", uri, paths=paths)
    if not p.exists():
        raise InputMissingError(f"source {uri} does not exist (expected a camera index, a file, "
                                f"a folder, a glob, /dev/videoN, csi://N or rtsp://...)")
    if p.suffix.lower() in IMAGE_EXTS:
        return SourceSpec("image", str(p), paths=(str(p),))
    return SourceSpec("video", str(p))


class FrameSource:
    live = False

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        raise NotImplementedError

    @property
    def exhausted(self) -> bool:
        return False

    @property
    def state(self) -> SourceState:
        return SourceState.OK

    @property
    def dropped(self) -> int:
        return 0

    def lost_for(self) -> float:
        """Seconds a live source has been lost (0 while it delivers, and for files)."""
        return 0.0

    def close(self) -> None:
        pass


class FiniteSource(FrameSource):
    """Every frame of a file/folder, in order, read ahead by one thread."""

    def __init__(self, frames: Callable[[], Iterator[np.ndarray]], name: str, prefetch: int = 2,
                 clock: Callable[[], float] = time.time, stills: bool = False):
        self.name = name
        self.stills = stills  # image files: every frame is a photo of its own (no tracking/smoothing across)
        self._q: queue.Queue[Optional[Frame]] = queue.Queue(maxsize=prefetch)  # None: the end
        self._stop = threading.Event()
        self._done = False
        self._clock = clock
        self._thread = threading.Thread(target=self._run, args=(frames,), name="edgepose-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Optional[Frame]) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, frames: Callable[[], Iterator[np.ndarray]]) -> None:
        try:
            index = 0
            it = frames()
            while not self._stop.is_set():
                t0 = time.perf_counter()
                img = next(it, None)
                if img is None:
                    break
                frame = Frame(img, self._clock(), index, (time.perf_counter() - t0) * 1e3, self.stills)
                if not self._put(frame):
                    return
                index += 1
        except Exception as e:  # a decode error ends the source, with one line
            log.error("reading %s failed: %s", self.name, e)
        self._put(None)

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        if self._done:
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._done = True
            return None
        item.ts = self._clock()  # read ahead: the frame enters the pipeline now
        return item

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _video_frames(path: str) -> Callable[[], Iterator[np.ndarray]]:
    def gen() -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(path)
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                yield img
        finally:
            cap.release()
    return gen


def _image_frames(paths: Tuple[str, ...]) -> Callable[[], Iterator[np.ndarray]]:
    def gen() -> Iterator[np.ndarray]:
        for p in paths:
            img = _read_image(p)
            if img is None:
                continue
            yield img
    return gen


def _read_image(path: str, warn: bool = True) -> Optional[np.ndarray]:
    """An image file as BGR within the pixel limit (capture.imagesize), or None with one warning."""
    try:
        return decode_bounded(path=path)
    except (ImageRefused, OSError) as e:
        if warn:
            log.warning("skipping %s: %s", path, e.strerror if isinstance(e, OSError) and e.strerror else e)
        return None


class LiveSource(FrameSource):
    """A camera or stream read by its own thread that keeps only the newest frame.

    ``opener()`` returns a :class:`Capture` or raises/returns None when the
    device cannot be opened.  A failed read marks the source ``lost`` and the
    thread reopens with exponential backoff up to ``backoff_max`` seconds.
    """

    live = True

    def __init__(self, opener: Callable[[], Optional[Capture]], name: str, backoff_max: float = 10.0,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.name = name
        self._opener = opener
        self._backoff_max = backoff_max
        self._clock = clock
        self._mono = monotonic
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._last_returned = -1
        self._index = 0
        self._dropped = 0
        self._state = SourceState.OPENING
        self._lost_since: Optional[float] = None
        self._stop = threading.Event()
        self._open_error: Optional[Exception] = None
        cap = self._open_once()
        if cap is None:
            if isinstance(self._open_error, EdgeposeError):  # e.g. picamera2 missing: say that, not "connected?"
                raise self._open_error
            if parse_source(name).kind in ("stream", "snapshot"):
                raise DeviceUnavailableError(f"cannot open stream {name} (is the address right and the stream "
                                             f"up?{_reason(self._open_error)})")
            raise DeviceUnavailableError(f"cannot open camera {name} (is it connected, and is this user "
                                         f"in the 'video' group?{_reason(self._open_error)})")
        self._cap = cap
        self._state = SourceState.OK
        self._thread = threading.Thread(target=self._run, name="edgepose-capture", daemon=True)
        self._thread.start()

    def _open_once(self) -> Optional[Capture]:
        try:
            cap = self._opener()
        except Exception as e:
            log.debug("opening %s failed: %s", self.name, e)
            self._open_error = e
            return None
        if cap is None or (hasattr(cap, "isOpened") and not cap.isOpened()):
            return None
        return cap

    def _run(self) -> None:
        first_delay = min(0.25, self._backoff_max)
        delay = first_delay
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                ok, img = self._cap.read()
            except Exception as e:
                log.warning("camera %s read error: %s", self.name, e)
                ok, img = False, None
            if ok and img is not None:
                frame = Frame(img, self._clock(), self._index, (time.perf_counter() - t0) * 1e3)
                self._index += 1
                with self._cond:
                    if self._latest is not None and self._latest.index != self._last_returned:
                        self._dropped += 1
                    self._latest = frame
                    if self._state is not SourceState.OK:
                        log.info("camera %s is back", self.name)
                    self._state = SourceState.OK
                    self._lost_since = None
                    self._cond.notify_all()
                delay = first_delay
                continue
            if self._stop.is_set():  # a read cut short by close(): not a lost camera
                break
            # lost: release and reopen with backoff
            with self._cond:
                if self._state is SourceState.OK:
                    log.warning("camera %s lost; reopening with backoff (up to %.0fs between tries)",
                                self.name, self._backoff_max)
                    self._lost_since = self._mono()
                self._state = SourceState.RECONNECTING
            try:
                self._cap.release()
            except Exception:
                pass
            while not self._stop.is_set():
                if self._stop.wait(delay):
                    return
                cap = self._open_once()
                delay = min(delay * 2, self._backoff_max)
                if cap is not None:
                    self._cap = cap
                    break
                log.info("camera %s still unavailable; next try in %.1fs", self.name, delay)

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The newest frame not returned before, or None after ``timeout`` seconds."""
        with self._cond:
            got = self._cond.wait_for(
                lambda: self._stop.is_set() or (self._latest is not None and
                                                self._latest.index != self._last_returned), timeout)
            if not got or self._latest is None or self._stop.is_set():
                return None
            self._last_returned = self._latest.index
            return self._latest

    @property
    def state(self) -> SourceState:
        return self._state

    def lost_for(self) -> float:
        """Seconds since the camera was lost (0 when it is fine)."""
        since = self._lost_since
        return 0.0 if since is None else self._mono() - since

    @property
    def dropped(self) -> int:
        return self._dropped

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        interrupt = getattr(self._cap, "interrupt", None)  # a capture that waits between reads (snapshots)
        if interrupt is not None:
            interrupt()
        self._thread.join(timeout=2)
        try:
            self._cap.release()
        except Exception:
            pass


def _reason(error: Optional[Exception]) -> str:
    """`` last error: ...`` for an open that raised (not for one that returned a closed capture)."""
    return f" last error: {error}" if error is not None else ""


# --- openers for live hardware -------------------------------------------------

def is_jetson(root: str = "/") -> bool:
    return os.path.exists(os.path.join(root, "etc/nv_tegra_release"))


def is_raspberry_pi(root: str = "/") -> bool:
    try:
        with open(os.path.join(root, "proc/device-tree/model"), "rb") as fh:
            return b"Raspberry Pi" in fh.read()
    except OSError:
        return False


def jetson_csi_pipeline(sensor_id: int, width: int, height: int, fps: float) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc -> BGR appsink)."""
    rate = int(round(fps)) if fps else 30
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
            f"framerate=(fraction){rate}/1, format=(string)NV12 ! "
            f"nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! "
            f"video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


class Picamera2Module(Protocol):
    """What edgepose uses of the picamera2 module (which has no type information): its camera class."""

    Picamera2: Callable[[int], Any]


class Picamera2Capture:
    """Adapter from picamera2 (Raspberry Pi CSI cameras, via libcamera) to the Capture protocol."""

    def __init__(self, index: int, width: int, height: int, fps: float,
                 module: Optional[Picamera2Module] = None):
        if module is None:
            try:
                import picamera2  # no type information
            except ImportError:
                raise RuntimeMissingError(
                    "csi:// on a Raspberry Pi needs picamera2: `sudo apt install python3-picamera2` and a "
                    "virtualenv made with --system-site-packages (deploy/install.sh does this)") from None
            module = picamera2
        self._cam = module.Picamera2(index)
        controls = {"FrameRate": float(fps)} if fps else {}
        # "RGB888" in libcamera terms is B,G,R byte order in memory: what OpenCV calls BGR
        conf = self._cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"},
                                                    controls=controls)
        self._cam.configure(conf)
        self._cam.start()

    def isOpened(self) -> bool:  # noqa: N802 - cv2 naming
        return True

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        return True, self._cam.capture_array("main")

    def release(self) -> None:
        self._cam.stop()
        self._cam.close()


SNAPSHOT_FPS = 2.0  # how often a snapshot URL is fetched when camera.fps is 0
MAX_SNAPSHOT_BYTES = 32 << 20
SNAPSHOT_DEADLINE = 10.0  # seconds one fetch may take in all (connect, headers, body)


class _Deadline:
    """Shuts down every socket of one fetch when ``seconds`` have passed, so that a blocked read returns
    at once: a per-read timeout never fires on a server that sends a byte every few seconds."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socks: List[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if not self.expired:
                return
        self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass


class _Connecting(Protocol):
    """The socket factory every http.client connection keeps (private, so not in the type stubs)."""

    _create_connection: Callable[..., socket.socket]


class _DeadlineMixin(urllib.request.AbstractHTTPHandler):
    """A urllib handler whose connections hand their sockets to a :class:`_Deadline`."""

    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def do_open(self, http_class: Callable[..., http.client.HTTPConnection], req: urllib.request.Request,
                **kw: Any) -> http.client.HTTPResponse:
        deadline = self._deadline

        def connection(*a: Any, **k: Any) -> http.client.HTTPConnection:
            conn = http_class(*a, **k)
            connecting = cast(_Connecting, conn)
            create = connecting._create_connection

            def tracked(*args: Any, **kwargs: Any) -> socket.socket:
                sock = create(*args, **kwargs)
                deadline.add(sock)
                return sock
            connecting._create_connection = tracked
            return conn

        return super().do_open(connection, req, **kw)


class _DeadlineHTTP(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPS(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


class SnapshotCapture:
    """An http(s) URL of a still image (an IP camera's ``snapshot.jpg``) read as a camera: every read
    fetches and decodes it again, no more often than ``fps`` times a second (``SNAPSHOT_FPS`` if 0),
    so the capture thread does not hammer the camera.  A failed fetch is a failed read: the source is
    then ``lost`` and retried with backoff, as a camera would be."""

    def __init__(self, url: str, fps: float = 0.0, timeout: float = 5.0, deadline: float = SNAPSHOT_DEADLINE,
                 fetch: Optional[Callable[[], bytes]] = None,
                 sleep: Optional[Callable[[float], None]] = None, clock: Callable[[], float] = time.monotonic):
        self._wake = threading.Event()  # interrupt(): the source is closing
        url, self.headers = split_credentials(url)  # http://user:pass@cam/snap.jpg: Basic auth
        self.url, self.timeout, self.deadline = url, timeout, deadline
        self.period = 1.0 / (fps if fps and fps > 0 else SNAPSHOT_FPS)
        self._fetch = fetch or self._urlopen
        self._sleep, self._clock = sleep or self._wake.wait, clock
        self._next = 0.0
        self._first: Optional[np.ndarray] = None
        self.error: Optional[Exception] = None

    def _urlopen(self) -> bytes:
        """One fetch, over within ``deadline`` seconds however slowly the server sends: ``timeout`` bounds
        each wait for a byte, and a server dripping one byte every few seconds never trips it."""
        import urllib.request

        req = urllib.request.Request(self.url, headers=self.headers)
        with _Deadline(self.deadline) as deadline:
            opener = urllib.request.build_opener(_DeadlineHTTP(deadline), _DeadlineHTTPS(deadline))
            try:
                with opener.open(req, timeout=self.timeout) as r:
                    data: bytes = r.read(MAX_SNAPSHOT_BYTES)
            except (OSError, http.client.HTTPException):
                if not deadline.expired:
                    raise
                data = b""
        if deadline.expired:  # also a body without Content-Length cut short: not a whole image
            raise TimeoutError(f"{redact(self.url)} sent no whole image within {self.deadline:g} s")
        return data

    def _get(self) -> Optional[np.ndarray]:
        wait = self._next - self._clock()
        if wait > 0:
            self._sleep(wait)
        if self._wake.is_set():
            self.error = OSError("closed")
            return None
        self._next = self._clock() + self.period
        try:
            data = self._fetch()
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts: OSError
            self.error = e
            return None
        if not data:
            self.error = ValueError(f"{redact(self.url)} answered with no data")
            return None
        try:
            img = decode_bounded(data, name=redact(self.url))
        except ImageRefused as e:
            self.error = e
            return None
        self.error = None
        return img

    def probe(self) -> SnapshotCapture:
        """Fetch once (its image is the first frame); raise what went wrong if it fails."""
        self._first = self._get()
        if self._first is None:
            raise self.error or OSError("no image")
        return self

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        img, self._first = self._first, None  # the probe's image first
        if img is None:
            img = self._get()
        return img is not None, img

    def interrupt(self) -> None:
        """End a wait between fetches at once (the source is being closed)."""
        self._wake.set()

    def release(self) -> None:
        self._wake.set()


def default_opener(spec: SourceSpec, width: int, height: int, fps: float,
                   root: str = "/") -> Callable[[], Optional[Capture]]:
    """How to open a live source on this machine."""
    if spec.kind == "csi":
        if is_jetson(root):
            pipe = jetson_csi_pipeline(spec.index, width, height, fps)
            return lambda: cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER)
        return lambda: Picamera2Capture(spec.index, width, height, fps)

    if spec.kind == "snapshot":
        return lambda: SnapshotCapture(spec.uri, fps).probe()

    def open_cv() -> Optional[Capture]:
        if spec.kind == "stream":
            cap = cv2.VideoCapture(spec.uri)
        else:
            cap = cv2.VideoCapture(spec.index, cv2.CAP_V4L2)
            if width and height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    return open_cv


def open_source(uri: str, width: int = 640, height: int = 480, fps: float = 0.0,
                backoff_max: float = 10.0, opener: Optional[Callable[[], Optional[Capture]]] = None
                ) -> FrameSource:
    """Open what ``uri`` names. Raises InputMissingError (66) / DeviceUnavailableError (69)."""
    spec = parse_source(uri)
    if spec.live:
        return LiveSource(opener or default_opener(spec, width, height, fps), redact(spec.uri), backoff_max)
    if spec.kind == "video":
        cap = cv2.VideoCapture(spec.uri)
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if not ok:
            if Path(spec.uri).suffix.lower() in VIDEO_EXTS:
                raise InputMissingError(f"cannot decode video {spec.uri} (not a video OpenCV can read)")
            raise InputMissingError(f"cannot decode {spec.uri}: neither an image nor a video OpenCV can read "
                                    f"(images: {', '.join(sorted(IMAGE_EXTS))})")
        return FiniteSource(_video_frames(spec.uri), spec.uri)
    if spec.kind == "image":
        try:
            decode_bounded(path=spec.uri)
        except (ImageRefused, OSError) as e:
            raise InputMissingError(f"cannot read image {spec.uri}: {e}") from None
    elif not any(_read_image(p, warn=False) is not None for p in spec.paths):  # stops at the first good one
        raise InputMissingError(f"none of the {len(spec.paths)} image files of {spec.uri} can be read")
    return FiniteSource(_image_frames(spec.paths), spec.uri, stills=True)


ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class RotatedSource(FrameSource):
    """``inner``'s frames turned clockwise by ``degrees`` (0, 90, 180, 270): a camera mounted sideways or
    upside down.  Everything downstream (model, keypoints, payload ``frame`` size) sees the upright frame;
    the pose models are not rotation-invariant.  ``degrees`` may be changed between reads (a reload)."""

    def __init__(self, inner: FrameSource, degrees: int = 0):
        if degrees not in (0, *ROTATIONS):
            raise ValueError(f"rotation must be 0, 90, 180 or 270 degrees, not {degrees!r}")
        self.inner, self.degrees = inner, degrees

    @property
    def live(self) -> bool:  # type: ignore[override]
        return self.inner.live

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        frame = self.inner.read(timeout)
        if frame is None or not self.degrees:
            return frame
        return dataclasses.replace(frame, image=cv2.rotate(frame.image, ROTATIONS[self.degrees]))

    @property
    def exhausted(self) -> bool:
        return self.inner.exhausted

    @property
    def state(self) -> SourceState:
        return self.inner.state

    @property
    def dropped(self) -> int:
        return self.inner.dropped

    def lost_for(self) -> float:
        return self.inner.lost_for()

    def close(self) -> None:
        self.inner.close()


def images_in(folder: Path) -> List[Path]:
    """The image files of a folder, in name order (the one definition of "an image file")."""
    return sorted(q for q in Path(folder).iterdir() if q.suffix.lower() in IMAGE_EXTS)
