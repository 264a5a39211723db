"""MQTT output that survives broker outages, and the ``edgepose sub`` command.

Topics (``<prefix>/<device>/...``, see docs/mqtt.md):

* ``pose``          one schema-v1 payload per frame (QoS ``mqtt.qos``, not retained)
* ``availability``  retained ``online`` / ``offline``; ``offline`` is also the last will
* ``status``        retained JSON every ``mqtt.status_interval`` seconds while connected,
                    right after every (re)connect and once more on a clean close
* ``meta``          retained JSON: keypoint names, skeleton, model and input size

Threading model of :class:`MqttSink`: the capture loop only appends the
payload dict to a bounded queue (``publish_pose`` never touches the network
and does not even encode JSON).  One network thread owns the paho client: it
encodes payloads (while the capture thread sits in inference), connects (never
blocking the caller), reconnects with bounded exponential backoff plus jitter,
runs the socket with ``select`` and moves queued messages to the broker.  A
status thread calls the daemon's ``status_provider`` on its own timer, so
status keeps flowing while the capture loop is blocked.

Status is never queued: one built while disconnected is discarded, and one the
broker had not acknowledged when the connection died is removed from paho's
resend queue on the reconnect, so the first status after ``online`` is always
a fresh one.  Poses are queued (QoS 1) exactly as described above.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import select
import socket
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Optional

from edgepose.core.config import join_host_port
from edgepose.core.errors import ConfigError, DeviceUnavailableError, EX_TEMPFAIL, InputMissingError
from edgepose.core.payload import pose_problem
from edgepose.output.sinks import StatusProvider, to_json

log = logging.getLogger("edgepose.output.mqtt")

# pose messages handed to paho at once; the rest wait in our own bounded queue
POSE_INFLIGHT = 16
# seconds between socket housekeeping passes (keepalive pings, timeouts)
_TICK = 0.5


# --------------------------------------------------------------------------- topics
@dataclass(frozen=True)
class Topics:
    pose: str
    availability: str
    status: str
    meta: str

    @classmethod
    def for_device(cls, prefix: str, device: str) -> "Topics":
        base = f"{check_prefix(prefix)}/{check_device(device)}"
        return cls(f"{base}/pose", f"{base}/availability", f"{base}/status", f"{base}/meta")


def check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#\0") or "" in prefix.split("/"):
        raise ConfigError(f"bad mqtt.prefix {prefix!r}: expected non-empty topic levels "
                          "without '+', '#' or empty levels")
    return prefix


def check_device(device: str) -> str:
    if not device or any(c in device for c in "/+#\0"):
        raise ConfigError(f"bad device id {device!r}: it may not be empty or contain '/', '+', '#'")
    return device


# --------------------------------------------------------------------------- connection
def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random) -> float:
    """Reconnect delay: ``lo * 2**attempt`` capped at ``hi``, jittered into its upper half.

    The result is never below ``lo`` nor above ``hi``, and attempts of many
    devices after a broker restart are spread over ``[d/2, d]``.
    """
    d = min(hi, lo * (2.0 ** min(attempt, 32)))
    return min(hi, max(lo, d * (0.5 + 0.5 * rng.random())))


def _check_file(key: str, path: str) -> str:
    if path and not os.path.isfile(path):
        raise InputMissingError(f"mqtt.{key} file {path} does not exist")
    return path


def make_client(cfg, client_id: str = "", clean_session: bool = True):
    """A paho-mqtt 2.x client with credentials and TLS from ``cfg`` (an ``MqttConfig``)."""
    try:
        import paho.mqtt.client as paho
    except ImportError:  # pragma: no cover - paho-mqtt is an install requirement
        from edgepose.core.errors import RuntimeMissingError
        raise RuntimeMissingError("paho-mqtt is not installed: pip install 'paho-mqtt>=2'") from None
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=paho.MQTTv311)
    client.suppress_exceptions = True  # a callback exception never kills the network loop
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password or None)
    elif cfg.password:
        raise ConfigError("mqtt.password is set but mqtt.username is empty")
    if cfg.tls or cfg.tls_ca or cfg.tls_cert:
        if cfg.tls_key and not cfg.tls_cert:
            raise ConfigError("mqtt.tls_key is set but mqtt.tls_cert is empty")
        try:
            client.tls_set(ca_certs=_check_file("tls_ca", cfg.tls_ca) or None,
                           certfile=_check_file("tls_cert", cfg.tls_cert) or None,
                           keyfile=_check_file("tls_key", cfg.tls_key) or None,
                           cert_reqs=ssl.CERT_REQUIRED)
        except ssl.SSLError as e:
            raise ConfigError(f"cannot load the MQTT TLS files (mqtt.tls_ca/tls_cert/tls_key): {e}") from None
        client.tls_insecure_set(bool(cfg.tls_insecure))
    return client


def describe_error(exc: BaseException) -> str:
    """Short text for a failed TCP/TLS connection attempt."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls error: certificate rejected ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"tls error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"unreachable: unknown host ({exc.strerror})"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "unreachable: timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreachable: {exc.strerror.lower()}"
    return f"unreachable: {exc}"


def _reason_text(reason_code) -> str:
    return str(getattr(reason_code, "getName", lambda: reason_code)()).lower()


# --------------------------------------------------------------------------- the sink
class MqttSink:
    """Publishes poses, availability, status and meta; see the module docstring.

    ``clock`` (monotonic seconds) drives the rate limit and reconnect timing,
    ``wallclock`` the ``ts`` of status messages, ``rng`` the reconnect jitter.
    """

    def __init__(self, mqtt_cfg, device: str, meta: Dict[str, Any],
                 status_provider: StatusProvider,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 rng: Optional[random.Random] = None):
        self.cfg = mqtt_cfg
        if self.cfg.reconnect_max < self.cfg.reconnect_min:
            raise ConfigError("mqtt.reconnect_max must be >= mqtt.reconnect_min")
        self.device = device
        self.topics = Topics.for_device(mqtt_cfg.prefix, device)
        self.meta = dict(meta)  # payload.make_meta(): keypoint names, skeleton, model, input size
        try:
            self._meta_json = to_json(self.meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta is not JSON-serialisable: {e}") from None
        self.client_id = mqtt_cfg.client_id or f"edgepose-{device}"
        self.broker = join_host_port(mqtt_cfg.host, mqtt_cfg.port)
        self._status_provider = status_provider
        self._clock = clock
        self._wallclock = wallclock
        self._rng = rng or random.Random()

        c = make_client(mqtt_cfg, self.client_id)
        c.will_set(self.topics.availability, "offline", qos=1, retain=True)
        c.max_inflight_messages_set(POSE_INFLIGHT + 8)  # room for availability/meta/status
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c

        self._lock = threading.Lock()
        self._queue: Deque[Any] = deque()       # pose payloads not yet handed to paho
        self._pending: Dict[int, int] = {}      # paho mid -> qos of pose messages on their way
        self._connected = False
        self._state = "not started"
        self._counts = {"published": 0, "dropped_messages": 0, "rate_limited": 0, "connects": 0,
                        "status_published": 0}
        self._handover = False  # close(handover_to=...): the successor keeps our topics up
        self._next_pose_at = float("-inf")
        self._status_json: Optional[str] = None  # built while connected, not yet handed to paho
        self._status_mids: set = set()          # paho mids of status messages not yet acknowledged
        self._epoch = 0                         # bumped on every connect and disconnect
        self._status_error: Optional[str] = None
        self._refused: Optional[str] = None
        self._problem: Optional[str] = None     # last problem logged (each is logged once)
        self._down_since: Optional[float] = None
        self._abort = False

        self._closing = threading.Event()
        self._first_try = threading.Event()     # set by the first state other than `connecting`
        self._stop = threading.Event()
        self._status_now = threading.Event()
        self._woken = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._threads: list = []
        self._started = False
        self._closed = False

    # --- Sink protocol ---------------------------------------------------
    def start(self) -> None:
        """Start the network and status threads; returns at once (never waits for the broker)."""
        if self._started:
            return
        self._started = True
        self._set_state("connecting")
        for target, name in ((self._network_main, "edgepose-mqtt"), (self._status_main, "edgepose-mqtt-status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wait_connected(self, timeout: float, interrupt: Optional[Any] = None) -> bool:
        """Wait (at most ``timeout`` s) for the outcome of the first connection attempt; True if connected.

        Returns early when the broker accepts, refuses or cannot be reached (so a daemon
        whose broker is down does not wait for nothing), or when ``interrupt`` (anything
        with ``is_set()``, e.g. the daemon's stop event) is set.  The daemon calls it once
        before its first frame: at QoS 0 a pose decoded before the connection is up is dropped.
        """
        end = self._clock() + timeout
        while timeout > 0 and not self._first_try.is_set() and not (interrupt is not None and interrupt.is_set()):
            left = end - self._clock()
            if left <= 0:
                log.info("mqtt: no answer from %s within %g s; starting anyway (poses are %s until it "
                         "connects)", self.broker, timeout, "queued" if self.cfg.qos else "counted as dropped")
                break
            self._first_try.wait(min(left, 0.1))
        with self._lock:
            return self._connected

    def publish_pose(self, payload: Dict[str, Any]) -> None:
        """Queue one pose (a few microseconds; never blocks on the network).

        The dict is encoded to JSON later by the network thread (in parallel
        with the next inference), so the caller must not modify it afterwards.
        """
        if self._closed:
            return
        if self.cfg.rate_limit > 0 and not self._rate_ok(self._clock()):
            with self._lock:
                self._counts["rate_limited"] += 1
            return
        data = payload
        with self._lock:
            if not self._connected and self.cfg.qos == 0:
                self._counts["dropped_messages"] += 1  # QoS 0 cannot wait: counted, not hidden
                return
            if len(self._queue) >= self.cfg.queue_size:
                self._queue.popleft()
                self._counts["dropped_messages"] += 1
            self._queue.append(data)
            wake = self._connected and not self._woken
            if wake:
                self._woken = True
        if wake:
            self._wake()

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            out: Dict[str, Any] = {"sink": "mqtt", "connected": self._connected, "broker": self._state,
                                   "broker_address": self.broker, "client_id": self.client_id,
                                   "qos": self.cfg.qos,
                                   "queued": len(self._queue) + len(self._pending)}
            out.update(self._counts)
        return out

    def count_on(self, stats: Dict[str, Any]) -> None:
        """Go on from the counters of the closed sink this one replaces on a reload (see sinks.Sink)."""
        with self._lock:
            for key in self._counts:
                value = stats.get(key, 0)
                self._counts[key] += value if isinstance(value, int) and not isinstance(value, bool) else 0

    def close(self, handover_to: Optional[Any] = None) -> None:
        """Deliver queued messages and ``offline`` for at most ``close_timeout`` s, then disconnect.

        ``handover_to``: the sink replacing this one on a reload.  When it publishes the same
        availability topic on the same broker, the device is not going away: the final status and
        ``offline`` are left out (it publishes ``online`` and its status as soon as it connects).
        """
        if self._closed:
            return
        self._handover = (isinstance(handover_to, MqttSink) and handover_to.broker == self.broker
                          and handover_to.topics.availability == self.topics.availability)
        self._closed = True
        self._closing.set()
        self._status_now.set()
        self._wake()
        if self._threads:
            # the network thread may sit in a TCP connect (paho's 5 s connect timeout)
            self._threads[0].join(self.cfg.close_timeout + self._client.connect_timeout + 2.0)
        self._stop.set()
        self._status_now.set()
        for t in self._threads[1:]:
            t.join(2.0)
        with self._lock:
            lost = len(self._queue) + len(self._pending)
            self._counts["dropped_messages"] += lost
            self._queue.clear()
            self._pending.clear()
        if lost:
            log.warning("mqtt: %d queued pose message(s) were not delivered before shutdown", lost)
        self._set_state("closed")
        self._wake_r.close()
        self._wake_w.close()

    # --- capture-thread helpers ------------------------------------------
    def _rate_ok(self, now: float) -> bool:
        interval = 1.0 / self.cfg.rate_limit
        if now < self._next_pose_at - 0.1 * interval:
            return False
        if now - self._next_pose_at < interval:
            self._next_pose_at += interval  # keep the cadence exact over time
        else:
            self._next_pose_at = now + interval
        return True

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (already woken) or closed
            pass

    # --- state and logging -----------------------------------------------
    def _set_state(self, text: str) -> None:
        with self._lock:
            self._state = text
        if text != "connecting":  # an outcome: a problem, refused, closed (wait_connected)
            self._first_try.set()

    def _report_problem(self, text: str, level: int, retry_s: float) -> None:
        """Log a connection problem once per distinct problem (not on every retry)."""
        if text != self._problem:
            self._problem = text
            log.log(level, "mqtt: broker %s %s; retrying in %.1f s (then up to every %g s), "
                    "poses are %s meanwhile", self.broker, text, retry_s, self.cfg.reconnect_max,
                    "queued" if self.cfg.qos else "counted as dropped")
        else:
            log.debug("mqtt: broker %s %s; retry in %.1f s", self.broker, text, retry_s)

    # --- paho callbacks (network thread) ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            if reason_code.is_failure:
                self._refused = f"refused: {_reason_text(reason_code)}"
                self._set_state(self._refused)
                return
            self._refused = None
            with self._lock:
                self._connected = True
                self._epoch += 1
                self._status_json = None  # built before this connection: stale
                self._counts["connects"] += 1
                self._state = "connected"
            self._first_try.set()
            self._forget_unsent_status()
            if self._down_since is not None:
                log.info("mqtt: reconnected to %s after %.1f s", self.broker, self._clock() - self._down_since)
            else:
                log.info("mqtt: connected to %s as %s", self.broker, self.client_id)
            self._problem = None
            self._down_since = None
            self._announce()
        except Exception:  # never let a bug here take the connection down
            log.exception("mqtt: error while handling the connection")

    def _forget_unsent_status(self) -> None:
        """Remove status messages of an earlier connection from paho's resend queue.

        paho re-sends every unacknowledged QoS 1 message after the CONNACK (right
        after ``on_connect``); for poses that is what we want, for a status it
        would put an old document (and the retained value) after ``online``.
        paho has no public API to cancel a message, hence its private queue.
        """
        with self._lock:
            mids, self._status_mids = self._status_mids, set()
        if not mids:
            return
        c = self._client
        out = getattr(c, "_out_messages", None)
        mutex = getattr(c, "_out_message_mutex", None)
        if out is None or mutex is None:  # another paho layout: a fresh status follows anyway
            return
        with mutex:
            gone = sum(out.pop(mid, None) is not None for mid in mids)
        if gone:
            log.debug("mqtt: discarded %d unacknowledged status message(s) of the previous connection", gone)

    def _announce(self) -> None:
        """On every (re)connect: ``online`` and meta (retained), then a fresh status."""
        self._client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._client.publish(self.topics.meta, self._meta_json, qos=1, retain=True)
        self._status_now.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            reason = _reason_text(reason_code)
            self._mark_disconnected("socket closed" if reason == "unspecified error" else reason)
        except Exception:
            log.exception("mqtt: error while handling a disconnect")

    def _mark_disconnected(self, reason: str) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self._epoch += 1
            self._status_json = None  # status is never delivered late (docs/mqtt.md)
            # QoS 0 messages still in paho's buffer are discarded on reconnect: count them
            lost = [mid for mid, q in self._pending.items() if q == 0]
            for mid in lost:
                del self._pending[mid]
            self._counts["dropped_messages"] += len(lost)
            if not self._refused:
                self._state = "disconnected" if self._closing.is_set() else "connecting"
        if was and not self._closing.is_set():
            self._down_since = self._clock()
            log.warning("mqtt: connection to %s lost (%s); reconnecting", self.broker, reason)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if self._pending.pop(mid, None) is not None:
                self._counts["published"] += 1
            else:
                self._status_mids.discard(mid)

    # --- network thread --------------------------------------------------
    def _network_main(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            self._refused = None
            was_connected = False
            try:
                self._set_state("connecting")
                self._client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
            except Exception as e:  # OSError, ssl.SSLError, ValueError (bad host)
                problem = describe_error(e)
                self._set_state(problem)
                slow = problem.startswith("tls error: certificate")  # will not fix itself
                delay = self.cfg.reconnect_max if slow else backoff_delay(
                    attempt, self.cfg.reconnect_min, self.cfg.reconnect_max, self._rng)
                attempt += 1
                self._report_problem(problem, logging.ERROR if slow else logging.WARNING, delay)
                self._closing.wait(delay)
                continue
            try:
                was_connected = self._serve()
            except Exception:
                log.exception("mqtt: unexpected error in the network loop; reconnecting")
                self._drop_connection()
            if self._closing.is_set():
                break
            if self._refused:
                delay = self.cfg.reconnect_max  # wrong credentials: slow retry, one clear line
                hint = " (check mqtt.username / mqtt.password)" if "auth" in self._refused or \
                    "password" in self._refused else ""
                self._report_problem(self._refused + hint, logging.ERROR, delay)
            else:
                if was_connected:
                    attempt = 0
                delay = backoff_delay(attempt, self.cfg.reconnect_min, self.cfg.reconnect_max, self._rng)
                attempt += 1
                if not was_connected:  # e.g. a TLS listener that wants a client certificate
                    problem = "closed the connection before accepting it (see the broker's log)"
                    self._set_state(problem)
                    self._report_problem(problem, logging.WARNING, delay)
            self._closing.wait(delay)
        self._set_state("disconnected")

    def _serve(self) -> bool:
        """Run one connection until it ends; True if the broker accepted it."""
        accepted = False
        self._abort = False
        while self._client.socket() is not None and not self._abort:
            if self._closing.is_set():
                if self._connected:
                    self._finish()
                else:
                    self._drop_connection()
                return accepted
            accepted = accepted or self._connected
            if self._connected:
                self._pump()
            self._io_once(_TICK)
        return accepted or self._connected

    def _io_once(self, timeout: float) -> None:
        """One select pass over the MQTT socket and the wake-up pipe."""
        c = self._client
        sock = c.socket()
        if sock is None:
            return
        pending_tls = getattr(sock, "pending", None)
        buffered = bool(pending_tls and pending_tls() > 0)
        wlist = [sock] if c.want_write() else []
        try:
            r, w, _ = select.select([sock, self._wake_r], wlist, [], 0.0 if buffered else timeout)
        except (OSError, ValueError):  # socket closed under us
            self._drop_connection()
            return
        if self._wake_r in r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
            # clear the flag only after draining: a wake-up sent meanwhile stays in the pipe
            with self._lock:
                self._woken = False
        if buffered or sock in r:
            c.loop_read()
        if c.socket() is not None and (sock in w or c.want_write()):
            c.loop_write()
        if c.socket() is not None:
            c.loop_misc()

    def _pump(self) -> None:
        """Move queued poses (up to POSE_INFLIGHT in flight) and a fresh status to paho."""
        c = self._client
        with self._lock:
            status, self._status_json = self._status_json, None
        if status is not None:
            self._publish_status(status)
        qos = self.cfg.qos
        while self._connected:
            with self._lock:
                if not self._queue or len(self._pending) >= POSE_INFLIGHT:
                    return
                data = self._queue.popleft()
            if isinstance(data, dict):
                try:
                    data = to_json(data).encode()
                except (TypeError, ValueError) as e:  # e.g. NaN: a bug upstream, never a crash here
                    log.error("mqtt: dropping a pose that cannot be encoded as JSON: %s", e)
                    with self._lock:
                        self._counts["dropped_messages"] += 1
                    continue
            info = c.publish(self.topics.pose, data, qos=qos)
            with self._lock:
                if info.rc != 0:  # the connection went away under us
                    if qos:
                        self._queue.appendleft(data)
                    else:
                        self._counts["dropped_messages"] += 1
                    return
                if info.is_published():  # QoS 0 written at once
                    self._counts["published"] += 1
                else:
                    self._pending[info.mid] = qos

    def _publish_status(self, text: str):
        info = self._client.publish(self.topics.status, text, qos=1, retain=True)
        with self._lock:
            if info.rc == 0:
                self._counts["status_published"] += 1
            if not info.is_published():
                self._status_mids.add(info.mid)
        return info

    def _finish(self) -> None:
        """Clean shutdown on a live connection: flush poses, final status, offline, disconnect."""
        deadline = self._clock() + self.cfg.close_timeout
        while self._connected and self._clock() < deadline:
            with self._lock:
                busy = bool(self._queue or self._pending)
            if not busy:
                break
            self._pump()
            self._io_once(0.05)
        if not self._handover:
            self._say_goodbye(deadline)
        self._client.disconnect()
        for _ in range(20):  # send the DISCONNECT packet
            if self._client.socket() is None or not self._client.want_write():
                break
            self._client.loop_write()
        self._drop_connection()

    def _say_goodbye(self, deadline: float) -> None:
        """The final status (retained: it must describe the whole run, not the last periodic one) and
        ``offline``, waiting for both until ``deadline`` or at least 1 s."""
        with self._lock:
            self._status_json = None
        final = self._build_status() if self._connected else None
        sent = [self._publish_status(final)] if final is not None else []
        info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
        sent.append(info)
        end = max(deadline, self._clock() + 1.0)
        while self._connected and not all(i.is_published() for i in sent) and self._clock() < end:
            self._io_once(0.05)
        if final is not None and not sent[0].is_published():
            log.warning("mqtt: could not confirm the final status on %s before shutdown", self.topics.status)
        if not info.is_published():
            log.warning("mqtt: could not confirm `offline` on %s before shutdown", self.topics.availability)

    def _drop_connection(self) -> None:
        """End the current connection from our side (paho closes the socket)."""
        self._abort = True
        try:
            self._client.disconnect()
            if self._client.socket() is not None:
                self._client.loop_write()
        except Exception:
            log.debug("mqtt: error while dropping the connection", exc_info=True)
        self._mark_disconnected("dropped")

    # --- status thread ---------------------------------------------------
    def _status_main(self) -> None:
        while not self._stop.is_set() and not self._closing.is_set():
            self._status_now.wait(self.cfg.status_interval)
            self._status_now.clear()
            if self._stop.is_set() or self._closing.is_set():
                break
            with self._lock:
                epoch, connected = self._epoch, self._connected
            # the provider is still called while disconnected (the daemon's view stays current)
            text = self._build_status()
            if text is None:
                continue
            with self._lock:
                # only a status built on the current, live connection may be sent: one built
                # while down (or across a reconnect) would arrive after `online` and be stale
                keep = connected and self._connected and self._epoch == epoch and not self._closing.is_set()
                if keep:
                    self._status_json = text
            if keep:
                self._wake()
            else:
                log.debug("mqtt: status built while disconnected or across a reconnect: discarded (never queued)")

    def _build_status(self) -> Optional[str]:
        """The daemon's status document plus :meth:`status_fields`, as JSON (None if it cannot be encoded)."""
        try:
            status = dict(self._status_provider() or {})
            self._status_error = None
        except Exception as e:  # the daemon's provider failed: still report the sink
            if str(e) != self._status_error:
                log.warning("mqtt: status provider failed: %s", e, exc_info=True)
            self._status_error = str(e)
            status = {"status_error": str(e)}
        status.update(self.status_fields())
        try:
            return to_json(status)
        except (TypeError, ValueError) as e:
            log.warning("mqtt: status is not JSON-serialisable: %s", e)
            return None

    def status_fields(self) -> Dict[str, Any]:
        """What the sink adds to the daemon's status document."""
        s = self.stats()
        return {"device": self.device, "ts": round(self._wallclock(), 3), "broker": s["broker"],
                "published": s["published"], "queued": s["queued"],
                "dropped_messages": s["dropped_messages"], "rate_limited": s["rate_limited"],
                "connects": s["connects"], "qos": s["qos"]}


# --------------------------------------------------------------------------- sub / watch
class SeqTracker:
    """Detects gaps and duplicates in each device's ``seq`` (see docs/mqtt.md)."""

    def __init__(self) -> None:
        self.last: Dict[str, int] = {}
        self.missing = 0
        self.duplicates = 0

    def observe(self, device: str, seq: int) -> Optional[str]:
        prev = self.last.get(device)
        if prev is None or seq == prev + 1:
            self.last[device] = seq
            return None
        if seq > prev + 1:
            self.last[device] = seq
            n = seq - prev - 1
            self.missing += n
            return f"gap: {n} message(s) missing (seq {prev + 1}..{seq - 1})"
        if seq <= 1 < prev:  # the daemon restarted and counts from the start again
            self.last[device] = seq
            return f"seq restarted at {seq} (daemon restarted?)"
        self.duplicates += 1
        return f"duplicate or late message: seq {seq} after {prev}"


def _clock_text(ts: Any) -> str:
    try:
        t = float(ts)
    except (TypeError, ValueError):
        t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def format_pose(p: Dict[str, Any]) -> str:
    kps = " ".join(f"{k.get('name')}={k.get('x', 0):.0f},{k.get('y', 0):.0f}"
                   for k in p.get("keypoints", []) if isinstance(k, dict))
    lat = (p.get("latency_ms") or {}).get("total")
    lat_s = f" {lat:.1f}ms" if isinstance(lat, (int, float)) else ""
    return (f"{_clock_text(p.get('ts'))} {p.get('device', '?')} #{p.get('seq', '?')} "
            f"{'person' if p.get('present') else 'nobody'} score={float(p.get('score') or 0):.2f}"
            f"{lat_s} {kps}")


def format_status(device: str, s: Dict[str, Any]) -> str:
    infer = s.get("infer_ms") if isinstance(s.get("infer_ms"), dict) else {}
    parts = [f"{s.get('fps', 0):.1f} fps" if isinstance(s.get("fps"), (int, float)) else None,
             f"infer p50 {infer.get('p50')} ms p95 {infer.get('p95')} ms" if infer.get("p50") is not None else None,
             f"frames {s.get('frames')}" if "frames" in s else None,
             f"dropped frames {s.get('dropped_frames')}" if "dropped_frames" in s else None,
             f"published {s.get('published')}", f"queued {s.get('queued')}",
             f"dropped messages {s.get('dropped_messages')}",
             f"camera {s.get('camera')}" if "camera" in s else None,
             f"model {s.get('model')}" if "model" in s else None,
             f"cpu {s.get('cpu_temp_c')} C" if s.get("cpu_temp_c") is not None else None]
    return f"{_clock_text(s.get('ts'))} {device} status: " + ", ".join(p for p in parts if p)


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """``--config`` and the broker flags (shared by ``edgepose sub`` and ``edgepose view``)."""
    p.add_argument("--config", metavar="PATH", help="config file (for the [mqtt] connection settings)")
    p.add_argument("--host", help="broker host (mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (mqtt.port)")
    p.add_argument("--prefix", help="topic prefix (mqtt.prefix)")
    p.add_argument("--username", help="user name (mqtt.username)")
    p.add_argument("--password", help="password (mqtt.password; prefer EDGEPOSE_MQTT_PASSWORD)")
    p.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate (mqtt.tls_ca)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (mqtt.tls_cert)")
    p.add_argument("--tls-key", metavar="FILE", help="client key (mqtt.tls_key)")
    p.add_argument("--tls-insecure", action="store_true", default=None,
                   help="do not check the broker's host name (testing only)")


def bounded_arg(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, and refuse it unless ``ok`` (nan fails every bound)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


count_arg = bounded_arg(int, lambda v: v >= 0, "a count >= 0 (0 means no limit)")
seconds_arg = bounded_arg(float, lambda v: math.isfinite(v) and v >= 0,
                          "a number of seconds >= 0 (0 means no limit)")


def add_stop_arguments(p: argparse.ArgumentParser, timeout_help: str) -> None:
    """--count and --timeout of the commands that subscribe (sub, view)."""
    p.add_argument("--count", type=count_arg, default=0, metavar="N", help="exit after N poses")
    p.add_argument("--timeout", type=seconds_arg, default=0, metavar="S", help=timeout_help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_arguments(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--device", metavar="ID", help="device id (default: output.device from the "
                     "config, else all devices)")
    who.add_argument("--all", action="store_true", help="all devices under the prefix")
    add_stop_arguments(p, "give up after S seconds (exit 75 if --count was not reached)")
    p.add_argument("--json", action="store_true",
                   help="print pose payloads as JSON lines (status/availability go to stderr)")


def connection_config(args):
    """The config with the flags of :func:`add_connection_arguments` applied to ``[mqtt]``."""
    from edgepose.core import config
    keys = {"host": args.host, "port": args.port, "prefix": args.prefix, "username": args.username,
            "password": args.password, "tls": args.tls, "tls_ca": args.tls_ca,
            "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_insecure": args.tls_insecure}
    return config.load(args.config, {"mqtt": {k: v for k, v in keys.items() if v is not None}})


def command(args) -> int:
    cfg = connection_config(args)
    device = "+" if args.all else (args.device or cfg.output.device or "+")
    if device != "+":
        check_device(device)
    base = f"{check_prefix(cfg.mqtt.prefix)}/{device}"
    out = sys.stdout
    tracker = SeqTracker()
    state: Dict[str, Any] = {"poses": 0, "refused": None, "timed_out": False}
    skipped: set = set()  # (topic kind, problem) already reported
    client = make_client(cfg.mqtt, f"edgepose-sub-{os.getpid()}")

    def write(line: str, stream=None) -> None:
        (stream or out).write(line + "\n")
        (stream or out).flush()

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            state["refused"] = _reason_text(reason_code)
            return
        c.subscribe([(f"{base}/{t}", 1) for t in ("pose", "availability", "status", "meta")])

    def on_message(c, userdata, msg):
        parts = msg.topic.split("/")
        dev, kind = parts[-2], parts[-1]
        info = sys.stderr if args.json else None
        text = msg.payload.decode("utf-8", "replace")
        if kind == "availability":
            write(f"{_clock_text(None)} {dev} is {text}", info)
            return
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
            problem = "not JSON"
        else:
            problem = pose_problem(doc) if kind == "pose" else (
                None if isinstance(doc, dict) else "not a JSON object")
        if problem:
            if (dev, kind, problem) not in skipped:  # once per topic and kind: a bad publisher can send many
                skipped.add((dev, kind, problem))
                write(f"{_clock_text(None)} {dev} {kind} skipped: {problem}: {text[:80]!r}", sys.stderr)
            return
        if kind == "status":
            write(format_status(dev, doc), info)
        elif kind == "meta":
            size = doc.get("input") if isinstance(doc.get("input"), dict) else {}
            names = doc.get("keypoints")
            write(f"{_clock_text(None)} {dev} meta: model {doc.get('model')} "
                  f"{size.get('width', '?')}x{size.get('height', '?')}, "
                  f"{len(names) if isinstance(names, list) else '?'} keypoints", info)
        elif kind == "pose":
            note = tracker.observe(dev, doc.get("seq")) if isinstance(doc.get("seq"), int) else None
            if note:
                write(f"{_clock_text(None)} {dev} {note}", info)
            write(to_json(doc) if args.json else format_pose(doc))
            state["poses"] += 1

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.keepalive)
    except Exception as e:
        raise DeviceUnavailableError(f"cannot connect to the MQTT broker at "
                                     f"{join_host_port(cfg.mqtt.host, cfg.mqtt.port)}: {describe_error(e)}") from None
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None

    def done() -> bool:
        return bool(state["refused"] or (args.count and state["poses"] >= args.count))

    try:
        while not done():
            if deadline is not None and time.monotonic() >= deadline:
                state["timed_out"] = True
                break
            if client.loop(timeout=0.2) != 0 and not done():  # connection lost: keep trying
                log.warning("connection to %s lost; reconnecting", join_host_port(cfg.mqtt.host, cfg.mqtt.port))
                while not done() and (deadline is None or time.monotonic() < deadline):
                    time.sleep(1.0)
                    try:
                        client.reconnect()
                        break
                    except Exception as e:
                        log.debug("reconnect failed: %s", describe_error(e))
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching
    finally:
        try:
            client.disconnect()
            client.loop(timeout=0.1)
        except Exception:
            pass
    if state["refused"]:
        raise DeviceUnavailableError(f"the MQTT broker at {join_host_port(cfg.mqtt.host, cfg.mqtt.port)} refused the "
                                     f"connection: {state['refused']}")
    if state["timed_out"] and args.count and state["poses"] < args.count:
        log.error("timed out after %g s: received %d of %d poses", args.timeout, state["poses"], args.count)
        return EX_TEMPFAIL
    return 0
