"""systemd integration without a hard dependency on systemd-python.

* :class:`Notifier` speaks the sd_notify protocol: one datagram of
  ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
  (``@name`` is an abstract socket).  Without ``$NOTIFY_SOCKET`` every call is
  a no-op, so the daemon runs the same way from a terminal.
* :class:`ProgressWatchdog` sends ``WATCHDOG=1`` from its own thread, but only
  while the pipeline reports progress: a hung camera read or a stuck
  interpreter stops the pings and systemd restarts the service
  (``WatchdogSec=`` in ``deploy/edgepose.service``).
* :func:`setup_logging` logs to the journal with priorities when running
  under systemd.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
import time
from typing import Callable, Mapping, Optional, TextIO

from edgepose.core.errors import DeviceUnavailableError, RuntimeMissingError
from edgepose.core.logs import install_handler
from edgepose.core.logs import setup_logging as setup_logging_plain
from edgepose.daemon import board

log = logging.getLogger(__name__)

# logging level -> syslog priority (sd-daemon(3) "<N>" prefixes, journal PRIORITY=)
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (DEBUG and below -> 7)."""
    for threshold, prio in _PRIORITY:
        if levelno >= threshold:
            return prio
    return 7


def socket_address(name: str) -> str:
    """``$NOTIFY_SOCKET`` -> address for ``sendto`` (``@x`` -> abstract ``\\0x``)."""
    return "\0" + name[1:] if name.startswith("@") else name


class Notifier:
    """sd_notify(3) over a datagram socket; silent no-op when not under systemd.

    Sending never raises: a failure is logged once at warning level and the
    call returns False (a service must not die because the manager went away).
    """

    def __init__(self, address: Optional[str] = None, watchdog_usec: Optional[int] = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: Optional[int] = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        pid = os.getpid() if pid is None else pid
        usec: Optional[int] = None
        raw = environ.get("WATCHDOG_USEC", "")
        wpid = environ.get("WATCHDOG_PID", "")
        try:
            usec = int(raw) if raw else None
            if wpid and int(wpid) != pid:
                usec = None  # the watchdog is meant for another process (e.g. our parent)
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", raw, wpid)
            usec = None
        return cls(environ.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); True when a datagram was sent."""
        if not self.enabled or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = "1" if value is True else str(value)
            lines.append(f"{key.upper()}={' '.join(text.splitlines())}")
        data = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, socket_address(self.address or ""))
                return True
            except OSError as e:
                if not self._warned:
                    log.warning("cannot notify systemd at %s: %s", self.address, e)
                    self._warned = True
                return False

    def ready(self, status: Optional[str] = None) -> bool:
        return self.notify(ready=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd >= 253) match the
        # reload; older managers ignore it
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(reloading=1, monotonic_usec=usec)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class ProgressWatchdog:
    """Ping the systemd watchdog every ``interval`` s while progress is made.

    ``progress()`` is called by the pipeline after every processed frame.  A
    ping is sent only if the last progress is at most ``stall_timeout`` s old,
    so a stalled source or interpreter lets ``WatchdogSec=`` expire and
    systemd restarts the service.  ``interval=None`` (no watchdog configured)
    makes every method a no-op.
    """

    def __init__(self, notifier: Notifier, interval: Optional[float], stall_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("watchdog interval must be positive")
        self.notifier = notifier
        self.interval = interval
        self.stall_timeout = stall_timeout
        self.clock = clock
        self.pings = 0
        self._last: Optional[float] = None
        self._stalled = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self.interval is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgepose-watchdog", daemon=True)
        self._thread.start()
        log.debug("watchdog pings every %.1f s while frames arrive (stall timeout %.1f s)",
                  self.interval, self.stall_timeout)

    def progress(self) -> None:
        self._last = self.clock()

    def stalled_for(self) -> Optional[float]:
        """Seconds since the last progress (None before the first)."""
        last = self._last
        return None if last is None else self.clock() - last

    def tick(self) -> bool:
        """One watchdog decision: ping if progress is recent; True when pinged."""
        age = self.stalled_for()
        if age is not None and age <= self.stall_timeout:
            if self._stalled:
                log.info("frames are flowing again; watchdog pings resumed")
                self._stalled = False
            if self.notifier.watchdog():
                self.pings += 1
            return True
        if age is not None and not self._stalled:
            log.warning("no frame processed for %.1f s (stall timeout %.1f s): withholding watchdog "
                        "pings so systemd restarts the service", age, self.stall_timeout)
            self._stalled = True
        return False

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def under_systemd(environ: Mapping[str, str]) -> bool:
    """True when started by systemd (stderr goes to the journal or a unit's log)."""
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


class PriorityFormatter(logging.Formatter):
    """``<N>message`` on every line, for stderr read by journald (no timestamps:
    the journal adds its own)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def journal_handler() -> Optional[logging.Handler]:
    """systemd-python's JournalHandler when installed, else None."""
    try:
        from systemd.journal import JournalHandler  # systemd-python: no type information
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="edgepose")
    return handler


def setup_logging(level: str, environ: Mapping[str, str], stream: Optional[TextIO] = None,
                  journal: Callable[[], Optional[logging.Handler]] = journal_handler) -> str:
    """Configure root logging; returns the kind chosen: journal, stderr-priority or stderr.

    Under systemd: systemd-python's JournalHandler if importable, otherwise
    stderr with ``<N>`` priority prefixes.  Elsewhere the CLI's plain stderr
    format.
    """
    if not under_systemd(environ):
        setup_logging_plain(level)
        return "stderr"
    handler = journal()
    kind = "journal"
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        kind = "stderr-priority"
    handler.setFormatter(PriorityFormatter("%(message)s") if kind != "journal"
                         else logging.Formatter("%(message)s"))
    install_handler(handler, level)
    return kind


# --- restarting the installed service (calibrate-fps --apply) -------------------------------------

SERVICE_UNIT = "edgepose"
RESTART_TIMEOUT_S = 20 + 180 + 10  # the unit's TimeoutStopSec + TimeoutStartSec, and some slack


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
