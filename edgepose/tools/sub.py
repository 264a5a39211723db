"""``edgepose sub``: subscribe to a device's poses and print them (and the MQTT flags ``view`` shares).

Messages cross a trust boundary (anyone who can publish to the broker can send
anything): :class:`Printer` prints what it can and skips the rest with one line
per kind of problem.  The connection is the client layer's
:class:`edgepose.output.mqttclient.Subscriber`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, TextIO

from edgepose.core.config import split_host_port
from edgepose.core.errors import EX_TEMPFAIL, UsageError
from edgepose.core.payload import read_message
from edgepose.output.mqttclient import Subscriber, check_device, check_prefix
from edgepose.output.sinks import to_json

log = logging.getLogger("edgepose.tools.sub")

KINDS = ("pose", "availability", "status", "meta")


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
    """HH:MM:SS.mmm of ``ts`` (now when it is not a usable time)."""
    try:
        t = float(ts)
        local = time.localtime(t)
    except (TypeError, ValueError, OverflowError, OSError):
        t = time.time()
        local = time.localtime(t)
    return time.strftime("%H:%M:%S", local) + f".{int((t % 1) * 1000):03d}"


def printable(text: str) -> str:
    """``text`` with control characters (a newline that would forge a line) shown escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_pose(p: Dict[str, Any]) -> str:
    kps = " ".join(f"{k.get('name')}={k.get('x', 0):.0f},{k.get('y', 0):.0f}"
                   for k in p.get("keypoints", []) if isinstance(k, dict))
    lat = (p.get("latency_ms") or {}).get("total")
    lat_s = f" {lat:.1f}ms" if isinstance(lat, (int, float)) else ""
    people = p.get("people")
    if isinstance(people, list):  # v2 (multi-person): everyone by id, the lead person's keypoints below
        seen = f"{len(people)} people [" + " ".join(f"#{q.get('id')}={float(q.get('score') or 0):.2f}"
                                                    for q in people if isinstance(q, dict)) + "]"
    else:
        seen = 'person' if p.get('present') else 'nobody'
    return (f"{_clock_text(p.get('ts'))} {p.get('device', '?')} #{p.get('seq', '?')} "
            f"{seen} score={float(p.get('score') or 0):.2f}"
            f"{lat_s} {kps}")


def format_status(device: str, s: Dict[str, Any]) -> str:
    infer_ms = s.get("infer_ms")
    infer: Dict[str, Any] = infer_ms if isinstance(infer_ms, dict) else {}
    fps = s.get("fps")
    parts = [f"{fps:.1f} fps" if isinstance(fps, (int, float)) and not isinstance(fps, bool) else None,
             f"infer p50 {infer.get('p50')} ms p95 {infer.get('p95')} ms" if infer.get("p50") is not None else None,
             f"frames {s.get('frames')}" if "frames" in s else None,
             f"dropped frames {s.get('dropped_frames')}" if "dropped_frames" in s else None,
             f"published {s.get('published')}", f"queued {s.get('queued')}",
             f"dropped messages {s.get('dropped_messages')}",
             f"camera {s.get('camera')}" if "camera" in s else None,
             f"model {s.get('model')}" if "model" in s else None,
             f"cpu {s.get('cpu_temp_c')} C" if s.get("cpu_temp_c") is not None else None]
    return f"{_clock_text(s.get('ts'))} {device} status: " + ", ".join(p for p in parts if p)


class Printer:
    """Turns received messages into lines: poses to ``out`` (text or ``json`` lines), the rest to
    ``out`` (or ``info`` with ``json``), skipped messages once per device, kind and problem to ``info``."""

    def __init__(self, out: TextIO, info: TextIO, json_lines: bool = False):
        self.out, self.info, self.json_lines = out, info, json_lines
        self.tracker = SeqTracker()
        self.poses = 0
        self.skipped: set = set()  # (device, kind, problem) already reported

    def _write(self, line: str, stream: TextIO) -> None:
        stream.write(printable(line) + "\n")
        stream.flush()

    def handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 3:
            return
        dev, kind = parts[-2], parts[-1]
        note = self.info if self.json_lines else self.out
        if kind == "availability":
            self._write(f"{_clock_text(None)} {dev} is {payload.decode('utf-8', 'replace')}", note)
            return
        if kind not in KINDS:
            return
        doc, problem = read_message(kind, payload)
        if problem:
            if (dev, kind, problem) not in self.skipped:  # once: a bad publisher can send many
                self.skipped.add((dev, kind, problem))
                text = payload[:80].decode("utf-8", "replace")
                self._write(f"{_clock_text(None)} {dev} {kind} skipped: {problem}: {text!r}", self.info)
            return
        if kind == "status":
            self._write(format_status(dev, doc), note)
        elif kind == "meta":
            size = doc.get("input") if isinstance(doc.get("input"), dict) else {}
            names = doc.get("keypoints")
            self._write(f"{_clock_text(None)} {dev} meta: model {doc.get('model')} "
                        f"{size.get('width', '?')}x{size.get('height', '?')}, "
                        f"{len(names) if isinstance(names, list) else '?'} keypoints", note)
        elif kind == "pose":
            gap = self.tracker.observe(dev, doc["seq"]) if "seq" in doc else None
            if gap:
                self._write(f"{_clock_text(None)} {dev} {gap}", note)
            self._write(to_json(doc) if self.json_lines else format_pose(doc), self.out)
            self.poses += 1


# --------------------------------------------------------------------------- shared flags
def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """``--config`` and the broker flags (shared by ``edgepose sub`` and ``edgepose view``)."""
    p.add_argument("--config", metavar="PATH", help="config file (for the [mqtt] connection settings)")
    p.add_argument("--broker", metavar="HOST[:PORT]",
                   help="MQTT broker (mqtt.host, mqtt.port); IPv6 as [ADDR]:PORT, as for `edgepose run`")
    p.add_argument("--host", help="broker host (mqtt.host; same as --broker HOST)")
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


def broker_overrides(broker: Optional[str], host: Optional[str], port: Optional[int]) -> Dict[str, Any]:
    """``[mqtt]`` host/port from ``--broker HOST[:PORT]`` or its aliases ``--host``/``--port``."""
    out: Dict[str, Any] = {}
    if broker is not None:
        if host is not None:
            raise UsageError("give the broker once: --broker HOST[:PORT] or --host/--port")
        try:
            host, bport = split_host_port(broker)
        except ValueError:
            raise UsageError(f"bad --broker {broker!r}: expected HOST, HOST:PORT or [IPv6]:PORT") from None
        if bport is not None and port is not None and bport != port:
            raise UsageError(f"--broker {broker} and --port {port} name different ports")
        port = bport if bport is not None else port
    if host is not None:
        out["host"] = host
    if port is not None:
        out["port"] = port
    return out


def connection_config(args):
    """The config with the flags of :func:`add_connection_arguments` applied to ``[mqtt]``."""
    from edgepose.core import config
    keys = {"prefix": args.prefix, "username": args.username,
            "password": args.password, "tls": args.tls, "tls_ca": args.tls_ca,
            "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_insecure": args.tls_insecure}
    mqtt = {k: v for k, v in keys.items() if v is not None}
    mqtt.update(broker_overrides(args.broker, args.host, args.port))
    return config.load(args.config, {"mqtt": mqtt})


# --------------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_arguments(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--device", metavar="ID", help="device id (default: output.device from the "
                     "config, else all devices)")
    who.add_argument("--all", action="store_true", help="all devices under the prefix")
    add_stop_arguments(p, "give up after S seconds (exit 75 if --count was not reached)")
    p.add_argument("--json", action="store_true",
                   help="print pose payloads as JSON lines (status/availability go to stderr)")


def command(args) -> int:
    cfg = connection_config(args)
    device = "+" if args.all else (args.device or cfg.output.device or "+")
    if device != "+":
        check_device(device)
    base = f"{check_prefix(cfg.mqtt.prefix)}/{device}"
    printer = Printer(sys.stdout, sys.stderr, args.json)
    sub = Subscriber(cfg.mqtt, f"edgepose-sub-{os.getpid()}", [f"{base}/{k}" for k in KINDS], qos=1)
    sub.start()
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    timed_out = False
    try:
        while not (args.count and printer.poses >= args.count):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                break
            for m in sub.take(0.2 if left is None else min(0.2, left)):
                printer.handle(m.topic, m.payload)
                if args.count and printer.poses >= args.count:
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching
    finally:
        sub.close()
    if timed_out and args.count and printer.poses < args.count:
        log.error("timed out after %g s: received %d of %d poses", args.timeout, printer.poses, args.count)
        return EX_TEMPFAIL
    return 0
