"""Subscribers for the MQTT tests: ``mosquitto_sub`` (a client edgepose did not write) and a
small recording paho client that survives broker restarts with a persistent session."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import paho.mqtt.client as paho


def wait_for(pred: Callable[[], object], timeout: float = 10.0, step: float = 0.02):
    """Poll ``pred`` until it returns something truthy (returned) or time runs out (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    t: float

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self):
        return json.loads(self.payload)


class Collector:
    """Records every message on ``topic``; reconnects by itself (paho's own loop).

    ``persistent=True`` uses a fixed client id and clean_session=False, so a
    broker with persistence keeps QoS 1 messages for it while it is away.
    """

    def __init__(self, broker, topic: str = "edgepose/#", qos: int = 1, persistent: bool = False,
                 client_id: str = "", username: Optional[str] = None, password: Optional[str] = None):
        self.msgs: List[Msg] = []
        self.lock = threading.Lock()
        self.connects = 0
        cid = client_id or (f"collector-{id(self):x}" if persistent else "")
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid,
                             clean_session=not persistent)
        self.c.reconnect_delay_set(0.05, 0.3)
        if username:
            self.c.username_pw_set(username, password)
        self.topic, self.qos = topic, qos
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, 30)
        self.c.loop_start()
        assert wait_for(lambda: self.connects, 10), "collector could not subscribe"

    def _on_connect(self, c, u, flags, rc, props):
        if not rc.is_failure:
            c.subscribe(self.topic, self.qos)
            self.connects += 1

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append(Msg(m.topic, m.payload, bool(m.retain), time.monotonic()))

    def of(self, suffix: str) -> List[Msg]:
        with self.lock:
            return [m for m in self.msgs if m.topic.endswith("/" + suffix)]

    def seqs(self) -> List[int]:
        return [m.json()["seq"] for m in self.of("pose")]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class MosquittoSub:
    """``mosquitto_sub -v`` in the background; lines are "<retain> <topic> <payload>"."""

    def __init__(self, broker, topic: str = "edgepose/#", extra: Optional[List[str]] = None):
        self.lines: List[str] = []
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "1",
             "-F", "%r %t %p", *(extra or [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def messages(self, suffix: str):
        """(retained, payload text) for topics ending in ``/suffix``."""
        out = []
        for line in list(self.lines):
            r, topic, payload = line.split(" ", 2)
            if topic.endswith("/" + suffix):
                out.append((r == "1", payload))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)
        self._t.join(2)
