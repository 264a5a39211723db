"""MQTT output that survives broker outages (the daemon's sink).

Topics (``<prefix>/<device>/...``, see docs/mqtt.md):

* ``pose``          one schema-v1 payload per frame (QoS ``mqtt.qos``, not retained)
* ``availability``  retained ``online`` / ``offline``; ``offline`` is also the last will
* ``status``        retained JSON every ``mqtt.status_interval`` seconds while connected,
                    right after every (re)connect and once more on a clean close
* ``meta``          retained JSON: keypoint names, skeleton, model and input size
* ``presence``      retained ``{"present": bool, "people": n}``, written on every (re)connect and
                    whenever it changes (with ``homeassistant.presence_hold``); with Home Assistant
                    discovery on, also the discovery configs (:mod:`edgepose.output.homeassistant`)

Threading model of :class:`MqttSink`: the capture loop only appends the
payload dict to a bounded queue (``publish_pose`` never touches the network
and does not even encode JSON).  One network thread owns the paho client: it
encodes payloads (while the capture thread sits in inference), connects (never
blocking the caller), reconnects with bounded exponential backoff plus jitter,
runs the socket with the client layer's one loop (:mod:`edgepose.output.mqttclient`)
and moves queued messages to the broker.  A status thread calls the daemon's
``status_provider`` on its own timer, so status keeps flowing while the capture
loop is blocked.

Status is never queued: one built while disconnected is discarded, and one the
broker had not acknowledged when the connection died is removed from paho's
resend queue on the reconnect, so the first status after ``online`` is always
a fresh one.  Poses are queued (QoS 1) exactly as described above.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Union

from edgepose.core.config import MqttConfig, join_host_port
from edgepose.core.errors import ConfigError
from edgepose.core.payload import SinkStatus, with_sink_status
from edgepose.output.homeassistant import HomeAssistant
from edgepose.output.mqttclient import (
    CLOSED_BEFORE_ACCEPTING,
    ClientLoop,
    backoff_delay,
    check_device,
    check_prefix,
    describe_error,
    make_client,
    reason_text,
)
from edgepose.output.sinks import StatusProvider, to_json

log = logging.getLogger("edgepose.output.mqtt")

# pose messages handed to paho at once; the rest wait in our own bounded queue
POSE_INFLIGHT = 16
# seconds between socket housekeeping passes (keepalive pings, timeouts)
_TICK = 0.5


class BrokerState(str, Enum):
    """Where the sink's connection is (``broker`` in status and stats, as its value).  While the broker cannot
    be reached or refuses, ``broker`` says what went wrong instead (``unreachable: ...``, ``refused: ...``,
    ``tls error: ...``: docs/mqtt.md)."""

    NOT_STARTED = "not started"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # the network thread ended
    CLOSED = "closed"  # close() returned


# --------------------------------------------------------------------------- topics
@dataclass(frozen=True)
class Topics:
    pose: str
    availability: str
    status: str
    meta: str
    presence: str

    @classmethod
    def for_device(cls, prefix: str, device: str) -> Topics:
        base = f"{check_prefix(prefix)}/{check_device(device)}"
        return cls(f"{base}/pose", f"{base}/availability", f"{base}/status", f"{base}/meta", f"{base}/presence")


# --------------------------------------------------------------------------- the sink
class MqttSink:
    """Publishes poses, availability, status and meta; see the module docstring.

    ``clock`` (monotonic seconds) drives the rate limit and reconnect timing,
    ``wallclock`` the ``ts`` of status messages, ``rng`` the reconnect jitter.
    ``homeassistant``: Home Assistant discovery and presence (None: no presence topic, no discovery).
    """

    def __init__(self, mqtt_cfg: MqttConfig, device: str, meta: Mapping[str, Any],
                 status_provider: StatusProvider,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 rng: Optional[random.Random] = None,
                 homeassistant: Optional[HomeAssistant] = None):
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
        self._ha = homeassistant
        self._presence_changed = False  # set by the capture thread, published by the network thread

        c = make_client(mqtt_cfg, self.client_id)
        c.will_set(self.topics.availability, "offline", qos=1, retain=True)
        c.max_inflight_messages_set(POSE_INFLIGHT + 8)  # room for availability/meta/status/presence
        # discovery configs are sent at once on every connect: paho queues what exceeds the inflight window
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c

        self._lock = threading.Lock()
        self._queue: Deque[Any] = deque()       # pose payloads not yet handed to paho
        self._pending: Dict[int, int] = {}      # paho mid -> qos of pose messages on their way
        self._connected = False
        self._state: Union[BrokerState, str] = BrokerState.NOT_STARTED  # or the text of a problem
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
        self._loop = ClientLoop(c, on_woken=self._on_woken)
        self._threads: list = []
        self._started = False
        self._closed = False

    # --- Sink protocol ---------------------------------------------------
    def start(self) -> None:
        """Start the network and status threads; returns at once (never waits for the broker)."""
        if self._started:
            return
        self._started = True
        self._set_state(BrokerState.CONNECTING)
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

    def publish_pose(self, payload: Mapping[str, Any]) -> None:
        """Queue one pose (a few microseconds; never blocks on the network).

        The dict is encoded to JSON later by the network thread (in parallel
        with the next inference), so the caller must not modify it afterwards.
        """
        if self._closed:
            return
        people = payload.get("people")  # a multi-person (v2) payload: everyone counts
        if self._ha is not None and self._ha.presence.update(bool(payload.get("present")),
                                                             len(people) if isinstance(people, list) else None):
            self._presence_changed = True
            self._wake()
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
            out: Dict[str, Any] = {"sink": "mqtt", "connected": self._connected, "broker": self._broker_text(),
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
        self._set_state(BrokerState.CLOSED)
        self._loop.close()

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
        self._loop.wake()

    def _on_woken(self) -> None:
        with self._lock:
            self._woken = False

    # --- state and logging -----------------------------------------------
    def _set_state(self, state: Union[BrokerState, str]) -> None:
        """``state``: a BrokerState, or the text of the problem that ended the last attempt."""
        with self._lock:
            self._state = state
        if state is not BrokerState.CONNECTING:  # an outcome: a problem, refused, closed (wait_connected)
            self._first_try.set()

    def _broker_text(self) -> str:
        """``broker`` in stats and status (call with the lock held)."""
        state = self._state
        return state.value if isinstance(state, BrokerState) else state

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
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self._refused = f"refused: {reason_text(reason_code)}"
                self._set_state(self._refused)
                return
            self._refused = None
            with self._lock:
                self._connected = True
                self._epoch += 1
                self._status_json = None  # built before this connection: stale
                self._counts["connects"] += 1
                self._state = BrokerState.CONNECTED
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
        """On every (re)connect: ``online`` and meta (retained), Home Assistant discovery and presence,
        then a fresh status."""
        self._client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._client.publish(self.topics.meta, self._meta_json, qos=1, retain=True)
        if self._ha is not None:
            for topic, payload in self._ha.messages(self.broker, self.topics.availability, self.topics.status,
                                                    self.topics.presence):
                self._client.publish(topic, payload, qos=1, retain=True)
            self._presence_changed = False
            self._publish_presence()
        self._status_now.set()

    def _publish_presence(self) -> None:
        if self._ha is None:
            return
        self._client.publish(self.topics.presence, to_json(self._ha.presence.document()), qos=1, retain=True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            reason = reason_text(reason_code)
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
                self._state = BrokerState.DISCONNECTED if self._closing.is_set() else BrokerState.CONNECTING
        if was and not self._closing.is_set():
            self._down_since = self._clock()
            log.warning("mqtt: connection to %s lost (%s); reconnecting", self.broker, reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
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
                self._set_state(BrokerState.CONNECTING)
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
                    problem = f"{CLOSED_BEFORE_ACCEPTING} (see the broker's log)"
                    self._set_state(problem)
                    self._report_problem(problem, logging.WARNING, delay)
            self._closing.wait(delay)
        self._set_state(BrokerState.DISCONNECTED)

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
        """One pass of the client layer's loop over the MQTT socket and the wake-up pipe."""
        if not self._loop.io_once(timeout):
            self._drop_connection()

    def _pump(self) -> None:
        """Move queued poses (up to POSE_INFLIGHT in flight) and a fresh status to paho."""
        c = self._client
        with self._lock:
            status, self._status_json = self._status_json, None
        if status is not None:
            self._publish_status(status)
        if self._ha is not None and (self._presence_changed or self._ha.presence.expire()):
            self._presence_changed = False
            self._publish_presence()
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

    def _publish_status(self, text: str) -> Any:  # paho MQTTMessageInfo
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
        doc: Mapping[str, Any]
        try:
            doc = with_sink_status(self._status_provider(), self.status_fields())
            self._status_error = None
        except Exception as e:  # the daemon's provider failed: still report the sink
            if str(e) != self._status_error:
                log.warning("mqtt: status provider failed: %s", e, exc_info=True)
            self._status_error = str(e)
            doc = {"status_error": str(e), **self.status_fields()}
        try:
            return to_json(doc)
        except (TypeError, ValueError) as e:
            log.warning("mqtt: status is not JSON-serialisable: %s", e)
            return None

    def status_fields(self) -> SinkStatus:
        """What the sink adds to the daemon's status document."""
        s = self.stats()
        return {"device": self.device, "ts": round(self._wallclock(), 3), "broker": s["broker"],
                "published": s["published"], "queued": s["queued"],
                "dropped_messages": s["dropped_messages"], "rate_limited": s["rate_limited"],
                "connects": s["connects"], "qos": s["qos"]}
