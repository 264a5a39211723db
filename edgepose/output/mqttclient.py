"""The one MQTT client layer: connect (TLS, auth), backoff with jitter, one loop style.

Everything edgepose does over MQTT goes through here: the daemon's sink
(:mod:`edgepose.output.mqtt`) and the ``sub`` and ``view`` commands
(:class:`Subscriber`).  There is one way to run a paho client: one network
thread owns it and drives it with :class:`ClientLoop` (a ``select`` over the
MQTT socket and a wake-up pipe, then paho's ``loop_read``/``loop_write``/
``loop_misc``); nothing else touches the socket.  Reconnects wait
:func:`backoff_delay` (exponential, capped, jittered) so that many devices and
viewers do not hit a restarted broker at the same instant.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional, Sequence

from edgepose.core.config import join_host_port
from edgepose.core.errors import ConfigError, DeviceUnavailableError, InputMissingError

if TYPE_CHECKING:
    from edgepose.core.config import MqttConfig

log = logging.getLogger("edgepose.output.mqttclient")


# --------------------------------------------------------------------------- topic names
def check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#\0") or "" in prefix.split("/"):
        raise ConfigError(f"bad mqtt.prefix {prefix!r}: expected non-empty topic levels "
                          "without '+', '#' or empty levels")
    return prefix


def check_device(device: str) -> str:
    if not device or any(c in device for c in "/+#\0"):
        raise ConfigError(f"bad device id {device!r}: it may not be empty or contain '/', '+', '#'")
    return device


# --------------------------------------------------------------------------- connecting
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


def make_client(cfg: MqttConfig, client_id: str = "", clean_session: bool = True) -> Any:
    """A paho-mqtt 2.x client with credentials and TLS from ``cfg`` (an ``MqttConfig``)."""
    try:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError:  # pragma: no cover - paho-mqtt is an install requirement
        from edgepose.core.errors import RuntimeMissingError
        raise RuntimeMissingError("paho-mqtt is not installed: pip install 'paho-mqtt>=2'") from None
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
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


def reason_text(reason_code: Any) -> str:
    """paho's reason code as lower-case words ("not authorized")."""
    return str(getattr(reason_code, "getName", lambda: reason_code)()).lower()


# what a client says when the broker closed the link before its CONNACK (the commonest cause first)
CLOSED_BEFORE_ACCEPTING = "closed the connection before accepting it"
CLOSED_HINT = ("is it a TLS port (then add --tls / mqtt.tls), or does it want a client certificate "
               "(mqtt.tls_cert)? the broker's log says which")


# --------------------------------------------------------------------------- the loop
class ClientLoop:
    """Drives one paho client from the one thread that owns it: ``select`` over the MQTT socket and a
    wake-up pipe, then paho's read, write and housekeeping steps.  :meth:`wake` (any thread) ends a
    wait early, e.g. when a message is queued; ``on_woken`` runs in the loop's thread after a wake-up
    was drained."""

    def __init__(self, client: Any, on_woken: Callable[[], None] = lambda: None):
        self.client = client
        self._on_woken = on_woken
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (already woken) or closed
            pass

    def io_once(self, timeout: float) -> bool:
        """One select pass (at most ``timeout`` s); False if the socket failed under us."""
        c = self.client
        sock = c.socket()
        if sock is None:
            return True
        pending_tls = getattr(sock, "pending", None)
        buffered = bool(pending_tls and pending_tls() > 0)
        wlist = [sock] if c.want_write() else []
        try:
            r, w, _ = select.select([sock, self._wake_r], wlist, [], 0.0 if buffered else timeout)
        except (OSError, ValueError):  # socket closed under us
            return False
        if self._wake_r in r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
            # the caller clears its flag only after draining: a wake-up sent meanwhile stays in the pipe
            self._on_woken()
        if buffered or sock in r:
            c.loop_read()
        if c.socket() is not None and (sock in w or c.want_write()):
            c.loop_write()
        if c.socket() is not None:
            c.loop_misc()
        return True

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()


# --------------------------------------------------------------------------- subscribing
@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes


class Subscriber:
    """A subscription for the ``sub`` and ``view`` commands.

    :meth:`start` makes the first connection (a broker that cannot be reached is a
    :class:`DeviceUnavailableError` at once), then a network thread runs it with
    :class:`ClientLoop`, resubscribes after every reconnect and reconnects with
    :func:`backoff_delay`.  Messages are handed to the caller's thread through a
    bounded queue (:meth:`take`), so all parsing and printing happens there.  A
    broker that refuses the credentials, or closes the very first connection
    before accepting it (plain MQTT at a TLS port), ends the subscription: the
    next :meth:`take` raises :class:`DeviceUnavailableError` with one line.
    """

    def __init__(self, cfg: MqttConfig, client_id: str, topics: Sequence[str], qos: int = 0, queue_size: int = 1024,
                 on_subscribed: Optional[Callable[[], None]] = None, rng: Optional[random.Random] = None):
        self.cfg = cfg
        self.broker = join_host_port(cfg.host, cfg.port)
        self.topics = list(topics)
        self.qos = qos
        self._on_subscribed = on_subscribed
        self._rng = rng or random.Random()
        c = make_client(cfg, client_id)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c
        self._loop = ClientLoop(c)
        self._cond = threading.Condition()
        self._messages: Deque[Message] = collections.deque()
        self._queue_size = queue_size
        self.dropped = 0  # messages dropped because the caller fell behind
        self._failure: Optional[str] = None
        self._refused: Optional[str] = None
        self._accepted = False
        self._closing = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- caller's thread --------------------------------------------------
    def start(self) -> Subscriber:
        try:
            self._client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        except Exception as e:  # OSError, ssl.SSLError, ValueError (bad host)
            self._loop.close()
            raise DeviceUnavailableError(f"cannot connect to the MQTT broker at {self.broker}: "
                                         f"{describe_error(e)}") from None
        self._thread = threading.Thread(target=self._network_main, name="edgepose-mqtt-sub", daemon=True)
        self._thread.start()
        return self

    def take(self, timeout: float) -> List[Message]:
        """The messages that arrived since the last call, oldest first (waits up to ``timeout`` for one).

        Raises :class:`DeviceUnavailableError` once the subscription has ended for good
        (refused, or the first connection was closed before the broker accepted it)."""
        with self._cond:
            if not self._messages and self._failure is None:
                self._cond.wait(timeout)
            out = list(self._messages)
            self._messages.clear()
            failure = self._failure
        if failure is not None and not out:
            raise DeviceUnavailableError(failure)
        return out

    def close(self) -> None:
        self._closing.set()
        self._loop.wake()
        if self._thread is not None:
            self._thread.join(5.0)
        self._loop.close()

    # --- paho callbacks (network thread) ---------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = reason_text(reason_code)
            return
        self._accepted = True
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        # called on the broker's SUBACK, not when the request is queued: from here on nothing is missed
        if any(rc.is_failure for rc in reason_codes):
            log.warning("the broker refused a subscription: %s", ", ".join(str(rc) for rc in reason_codes))
        if self._on_subscribed is not None:
            self._on_subscribed()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            if len(self._messages) >= self._queue_size:
                self._messages.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("messages arrive faster than they are shown: dropping the oldest")
            self._messages.append(Message(msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    # --- network thread --------------------------------------------------
    def _fail(self, text: str) -> None:
        with self._cond:
            self._failure = text
            self._cond.notify_all()

    def _serve(self) -> bool:
        """Run one connection until it ends; True if the broker accepted it."""
        self._accepted = False
        while self._client.socket() is not None and not self._closing.is_set() and self._refused is None:
            if not self._loop.io_once(0.5):
                break
        return self._accepted

    def _network_main(self) -> None:
        attempt, ever_accepted = 0, False
        while not self._closing.is_set():
            accepted = self._serve()
            ever_accepted = ever_accepted or accepted
            if self._closing.is_set():
                break
            if self._refused is not None:
                self._fail(f"the MQTT broker at {self.broker} refused the connection: {self._refused}")
                break
            if not ever_accepted:  # the first handshake failed: it will not fix itself
                self._fail(f"the MQTT broker at {self.broker} {CLOSED_BEFORE_ACCEPTING}: {CLOSED_HINT}")
                break
            if accepted:
                attempt = 0
                log.warning("connection to %s lost; reconnecting", self.broker)
            while not self._closing.is_set():
                delay = backoff_delay(attempt, self.cfg.reconnect_min, self.cfg.reconnect_max, self._rng)
                attempt += 1
                if self._closing.wait(delay):
                    break
                try:
                    self._client.reconnect()
                    break
                except Exception as e:
                    log.debug("reconnect to %s failed: %s; next try in up to %g s", self.broker,
                              describe_error(e), self.cfg.reconnect_max)
        try:
            self._client.disconnect()
            for _ in range(20):  # send the DISCONNECT packet
                if self._client.socket() is None or not self._client.want_write():
                    break
                self._client.loop_write()
        except Exception:
            log.debug("error while disconnecting", exc_info=True)
