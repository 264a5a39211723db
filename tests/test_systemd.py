"""sd_notify protocol, progress watchdog, journal logging and exit codes.

Everything talks to a real AF_UNIX datagram socket (path and abstract), the
way systemd receives notifications; the daemon tests run the real pipeline on
a real clip and model.  The only fake is the hung camera read (a camera that
stops delivering frames cannot be produced here), said where it is used.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from edgepose.capture.sources import SourceState, open_source
from edgepose.core import config as config_mod
from edgepose.daemon import systemd
from edgepose.daemon.service import Daemon

from conftest import MIRROR, REPO, VIDEOS, run_cli

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it


class Receiver:
    """A datagram socket standing in for systemd's notify socket (with SO_PASSCRED)."""

    def __init__(self, address: str) -> None:
        self.name = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # arrival times stamped by the kernel, not by this (possibly late) thread
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(systemd.socket_address(address))
        self.messages: list = []  # (arrival time.time(), sender pid, {key: value})
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(16))
            except socket.timeout:
                continue
            except OSError:
                return
            pid, arrival = None, time.time()
            for level, type_, cdata in anc:
                if level == socket.SOL_SOCKET and type_ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
                elif level == socket.SOL_SOCKET and type_ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    arrival = sec + nsec / 1e9
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((arrival, pid, fields))

    def keys(self, key: str) -> list:
        return [(t, f) for t, _, f in self.messages if key in f]

    def wait_for(self, key: str, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.keys(key)
            if found:
                return found[0][1]
            time.sleep(0.02)
        raise AssertionError(f"no {key}= within {timeout}s; got {[m[2] for m in self.messages]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request, tmp_path):
    addr = str(tmp_path / "notify") if request.param == "path" else f"@edgepose-test-{uuid.uuid4().hex}"
    r = Receiver(addr)
    yield r
    r.close()


def wait_messages(r: Receiver, n: int, timeout: float = 5.0) -> list:
    end = time.monotonic() + timeout
    while len(r.messages) < n and time.monotonic() < end:
        time.sleep(0.01)
    return [m[2] for m in r.messages]


# --- Notifier -------------------------------------------------------------------

def test_notify_protocol_on_a_real_socket(receiver):
    n = systemd.Notifier.from_environ({"NOTIFY_SOCKET": receiver.name})
    assert n.enabled
    assert n.ready(status="warming up")
    assert n.status("2.0 fps, broker connected\nsecond line")
    assert n.watchdog()
    assert n.reloading()
    assert n.stopping()
    assert n.notify(extend_timeout_usec=5000000)
    msgs = wait_messages(receiver, 6)
    assert msgs[0] == {"READY": "1", "STATUS": "warming up"}
    assert msgs[1] == {"STATUS": "2.0 fps, broker connected second line"}  # one line per field
    assert msgs[2] == {"WATCHDOG": "1"}
    assert msgs[3]["RELOADING"] == "1" and int(msgs[3]["MONOTONIC_USEC"]) > 0
    assert msgs[4] == {"STOPPING": "1"}
    assert msgs[5] == {"EXTEND_TIMEOUT_USEC": "5000000"}
    # the kernel vouches for the sender, as systemd checks with NotifyAccess=main
    assert {pid for _, pid, _ in receiver.messages} == {os.getpid()}
    n.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = systemd.Notifier.from_environ({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_unreachable_socket_warns_once_and_never_raises(tmp_path, caplog):
    n = systemd.Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="edgepose.daemon.systemd"):
        assert n.ready() is False
        assert n.watchdog() is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    n = systemd.Notifier.from_environ({"NOTIFY_SOCKET": "@x", **env})
    assert n.watchdog_interval == expected
    # no socket: no watchdog either
    assert systemd.Notifier.from_environ(env).watchdog_interval is None


# --- ProgressWatchdog -------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_watchdog_decision_follows_progress_age(receiver):
    clock = FakeClock()
    n = systemd.Notifier(receiver.name, 2_000_000)
    w = systemd.ProgressWatchdog(n, n.watchdog_interval, stall_timeout=5.0, clock=clock)
    assert w.tick() is False  # nothing processed yet: no ping (READY comes after the first frame)
    w.progress()
    clock.t += 4.9
    assert w.tick() is True
    clock.t += 0.2  # 5.1 s since the last frame
    assert w.tick() is False
    w.progress()
    assert w.tick() is True
    assert len(wait_messages(receiver, 2)) == 2 and w.pings == 2


@pytest.mark.slow
def test_watchdog_pings_at_the_interval_only_while_frames_flow(receiver):
    n = systemd.Notifier.from_environ({"NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "200000"})
    assert n.watchdog_interval == pytest.approx(0.1)
    w = systemd.ProgressWatchdog(n, n.watchdog_interval, stall_timeout=0.35)
    w.start()
    flowing = time.monotonic()
    while time.monotonic() - flowing < 1.0:  # a source delivering 50 frames/s
        w.progress()
        stalled_at = time.time()
        time.sleep(0.02)
    time.sleep(1.0)  # the source stalls
    w.stop()
    pings = [t for t, _ in receiver.keys("WATCHDOG")]
    during = [t for t in pings if t < stalled_at]
    after = [t for t in pings if t >= stalled_at]
    assert 7 <= len(during) <= 11, pings
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert 0.07 < sum(gaps) / len(gaps) < 0.14, gaps
    # pings stop once the last frame is older than stall_timeout (+ one interval of slack)
    assert all(t - stalled_at <= 0.35 + 0.1 + 0.05 for t in after), (after, stalled_at)
    assert len(after) <= 4


def test_watchdog_without_interval_is_inert():
    w = systemd.ProgressWatchdog(systemd.Notifier(None), None, 1.0)
    w.start()
    w.progress()
    assert not w.active
    w.stop()


# --- the daemon under a notify socket -------------------------------------------

class HungAfter:
    """A real clip source whose read() hangs after ``n`` frames.

    Stands in for a camera whose read blocks forever (no hardware here); the
    frames before the hang are real decoded video frames.
    """

    def __init__(self, inner, n: int, release: threading.Event) -> None:
        self.inner, self.n, self.release = inner, n, release
        self.reads = 0

    def read(self, timeout: float = 0.5):
        if self.reads >= self.n:
            self.release.wait()
            return None
        frame = self.inner.read(timeout=timeout)
        if frame is not None:
            self.reads += 1
        return frame

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _watch_daemon(receiver, model_cache, wrap, frames: int, camera=None, after_stop=None):
    """Run a Daemon on demo.mp4 (its source wrapped by ``wrap``) under the notify socket, with a 200 ms
    watchdog and stall_timeout 0.5 s, until it has processed ``frames`` frames; watch 1.5 s more, then
    stop it (``after_stop`` unblocks a source that hangs).  Returns (exit code, frames, when the watch began)."""
    cfg = config_mod.load(None, {"camera": {"source": str(VIDEOS / "demo.mp4"), **(camera or {})},
                                 "output": {"sink": "none"},
                                 "model": {"name": "hourglass", "dir": str(model_cache), "mirror": str(MIRROR)},
                                 "service": {"stall_timeout": 0.5}, "runtime": {"threads": 1}}, environ={})
    env = {"NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "200000"}
    daemon = Daemon(cfg, environ=env, source_factory=lambda uri, **kw: wrap(open_source(uri, **kw)))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", daemon.run()), daemon=True)
    t.start()
    try:
        receiver.wait_for("READY", timeout=60)
        end = time.monotonic() + 30
        while daemon.stats.frames < frames and time.monotonic() < end:
            time.sleep(0.02)
        seen, began = daemon.stats.frames, time.time()
        time.sleep(1.5)
    finally:
        daemon.stop_event.set()
        if after_stop:
            after_stop()
        t.join(30)
    return result.get("rc"), seen, began


@pytest.mark.slow
def test_daemon_hung_camera_read_stops_watchdog_pings(receiver, model_cache):
    release = threading.Event()
    # wait until the source hangs, then watch for stall_timeout + 1 s
    rc, frames, hung_at = _watch_daemon(receiver, model_cache, lambda src: HungAfter(src, 3, release), 3,
                                        after_stop=release.set)
    assert frames == 3
    assert rc == 0
    pings = [tt for tt, _ in receiver.keys("WATCHDOG")]
    assert pings, "no watchdog pings while frames were processed"
    late = [p - hung_at for p in pings if p - hung_at > 0.5 + 0.1 + 0.1]
    assert not late, f"watchdog kept pinging {late} s after the camera hung"
    fields = [f for _, _, f in receiver.messages]
    ready_at = next(i for i, f in enumerate(fields) if "READY" in f)
    assert any("WATCHDOG" in f for f in fields[ready_at:])
    assert fields[-1] == {"STOPPING": "1"}


class LostAfter:
    """A real clip source that, after ``n`` frames, acts as a camera that is gone and being reopened
    (``reconnecting``) for ``lost_s`` seconds already: no camera hardware exists here."""

    live = True

    def __init__(self, inner, n: int, lost_s: float) -> None:
        self.inner, self.n, self.lost_s = inner, n, lost_s
        self.reads = 0

    def read(self, timeout: float = 0.5):
        if self.reads >= self.n:
            time.sleep(min(timeout, 0.05))
            return None
        frame = self.inner.read(timeout=timeout)
        self.reads += frame is not None
        return frame

    @property
    def state(self):
        return SourceState.RECONNECTING if self.reads >= self.n else SourceState.OK

    def lost_for(self) -> float:
        return self.lost_s if self.reads >= self.n else 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.slow
@pytest.mark.parametrize("lost_s,pings_go_on", [(5.0, True), (120.0, False)])
def test_a_camera_gone_longer_than_gone_timeout_stops_the_watchdog(lost_s, pings_go_on, receiver, model_cache):
    """While a camera is being reopened the daemon keeps pinging (it is alive and says so); once it has been
    gone longer than camera.gone_timeout (60 s) the pings stop, so systemd restarts it.  Whatever wraps the
    source (RotatedSource, always) must pass lost_for() through."""
    rc, _, lost_at = _watch_daemon(receiver, model_cache, lambda src: LostAfter(src, 2, lost_s), 2,
                                   camera={"rotate": 180})
    assert rc == 0
    late = [tt - lost_at for tt, _ in receiver.keys("WATCHDOG") if tt - lost_at > 0.5 + 0.2]
    assert bool(late) is pings_go_on, late


@pytest.mark.slow
def test_edgepose_run_notifies_ready_status_watchdog_and_stopping_on_sigterm(receiver, edgepose_env):
    env = dict(edgepose_env, NOTIFY_SOCKET=receiver.name, WATCHDOG_USEC="400000",
               INVOCATION_ID=uuid.uuid4().hex)
    env.pop("JOURNAL_STREAM", None)
    # 5-frame clip at 2 fps: ~2.5 s of running, enough to see pings and send SIGTERM
    # WATCHDOG_PID names the main process, as systemd sets it: the shell's own PID, kept by exec
    proc = subprocess.Popen(["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', sys.executable, "-m", "edgepose.cli",
                             "run", "--source", str(VIDEOS / "demo.mp4"), "--model", "hourglass", "--sink", "none",
                             "--fps", "2"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        receiver.wait_for("READY", timeout=60)
        time.sleep(0.7)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    fields = [f for _, _, f in receiver.messages]
    assert {pid for _, pid, _ in receiver.messages} == {proc.pid}
    assert any("STATUS" in f and "fps" in f["STATUS"] for f in fields)
    ready_at = next(i for i, f in enumerate(fields) if "READY" in f)
    assert any("WATCHDOG" in f for f in fields[ready_at:]), fields
    assert fields[-1] == {"STOPPING": "1"}
    # under systemd without systemd-python: syslog priorities on stderr, no timestamps
    # (TFLite's native "INFO: Created ... delegate" line is not ours and has no prefix)
    lines = [ln for ln in err.splitlines() if ln.strip() and "TensorFlow Lite" not in ln]
    assert lines and all(ln.startswith("<") for ln in lines), err
    assert any(ln.startswith("<6>") and "SIGTERM" in ln for ln in lines), err


def test_config_error_exits_78_with_one_error_priority_line(tmp_path, edgepose_env):
    bad = tmp_path / "edgepose.toml"
    bad.write_text('[mqtt]\nport = "not a number"\n')
    env = dict(edgepose_env, INVOCATION_ID="x", NOTIFY_SOCKET="@edgepose-unused")
    r = run_cli(["run", "--config", bad], env)
    assert r.returncode == 78, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>") and "mqtt.port" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# --- logging --------------------------------------------------------------------

def test_logging_under_systemd_without_systemd_python_uses_priority_prefixes():
    stream = io.StringIO()
    kind = systemd.setup_logging("debug", {"JOURNAL_STREAM": "8:1234"}, stream=stream, journal=lambda: None)
    try:
        logging.getLogger("edgepose.t").warning("camera lost\nreopening")
        logging.getLogger("edgepose.t").debug("detail")
        logging.getLogger("edgepose.t").error("broken")
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
    assert kind == "stderr-priority"
    assert stream.getvalue().splitlines() == ["<4>camera lost", "<4>reopening", "<7>detail", "<3>broken"]


def test_logging_under_systemd_prefers_the_journal_handler():
    captured = []

    class Journal(logging.Handler):  # the JournalHandler interface: a logging.Handler
        def emit(self, record):
            captured.append((record.levelno, self.format(record)))

    kind = systemd.setup_logging("info", {"INVOCATION_ID": "abc"}, journal=Journal)
    try:
        logging.getLogger("edgepose.t").info("hello")
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
    assert kind == "journal" and captured == [(logging.INFO, "hello")]


def test_logging_outside_systemd_is_plain_stderr(capsys):
    assert systemd.setup_logging("info", {}) == "stderr"
    logging.getLogger("edgepose.t").info("plain")
    assert "edgepose: INFO: plain" in capsys.readouterr().err


def test_syslog_priorities():
    assert [systemd.syslog_priority(lv) for lv in (5, 10, 20, 30, 40, 50)] == [7, 7, 6, 4, 3, 2]


def test_stop_event_is_safe_to_set_from_a_signal_handler():
    """SIGTERM's handler sets the daemon's stop event.  A threading.Event would deadlock when the signal
    lands while the main thread holds the Event's own lock inside wait(); WakeEvent takes no lock, and its
    wait() returns as soon as the handler ran."""
    from edgepose.daemon.service import WakeEvent

    ev = WakeEvent()
    old = signal.signal(signal.SIGALRM, lambda *_: ev.set())
    try:
        # a handler firing during wait() wakes it, many times over
        for _ in range(50):
            ev.clear()
            signal.setitimer(signal.ITIMER_REAL, 0.002)
            t0 = time.monotonic()
            assert ev.wait(5.0) is True
            assert time.monotonic() - t0 < 2.0
        ev.clear()
        assert ev.is_set() is False and ev.wait(0.01) is False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
