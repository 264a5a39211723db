"""Home Assistant MQTT discovery: the device, its entities, presence with a hold time.

With the MQTT sink on (and ``[homeassistant] enabled``, the default), the sink
publishes on every (re)connect, retained, one discovery config per entity under
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (Home Assistant's
MQTT discovery layout; ``node_id`` is ``edgepose_<device>``), all naming one
device per edgepose device id.  See docs/mqtt.md for the entity list.

Only low-rate topics feed the entities: the ``presence`` topic (retained, written
only when presence or the people count changes) and the ``status`` topic
(retained, every ``mqtt.status_interval`` s); never the per-frame pose topic.

What was announced is remembered in a small JSON state file
(:func:`state_path`), so that a later run removes (empty retained payload) the
configs it no longer wants: all of them when discovery is turned off, the old
device's when the device id changed, the temperature sensor on a board that
lost its sensor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgepose.core.errors import ConfigError
from edgepose.core.files import temp_beside
from edgepose.output.sinks import StatusProvider

if TYPE_CHECKING:
    from edgepose.core.config import Config

log = logging.getLogger("edgepose.output.homeassistant")

STATE_FILE_NAME = "homeassistant.json"


# --------------------------------------------------------------------------- presence
class Presence:
    """Presence with a hold time: on at the first frame with a person, off only after ``hold`` s
    without one (so one missed frame does not flicker).  Thread-safe; ``clock`` is monotonic seconds.

    :meth:`update` (per frame) and :meth:`expire` (without a frame) return True when the state
    changed, i.e. when the retained presence topic must be written.
    """

    def __init__(self, hold: float, clock: Callable[[], float]):
        self.hold = float(hold)
        self._clock = clock
        self._lock = threading.Lock()
        self._present = False
        self._people = 0
        self._last_seen = float("-inf")

    def update(self, present: bool, people: Optional[int] = None) -> bool:
        now = self._clock()
        with self._lock:
            if present:
                self._last_seen = now
                count = 1 if people is None else int(people)
                changed = not self._present or count != self._people
                self._present, self._people = True, count
                return changed
        return self.expire(now)

    def expire(self, now: Optional[float] = None) -> bool:
        now = self._clock() if now is None else now
        with self._lock:
            if self._present and now - self._last_seen >= self.hold:
                self._present, self._people = False, 0
                return True
        return False

    def document(self) -> Dict[str, Any]:
        with self._lock:
            return {"present": self._present, "people": self._people}


# --------------------------------------------------------------------------- discovery configs
@dataclass(frozen=True)
class DeviceInfo:
    """What Home Assistant shows about the device."""
    device: str
    model: str
    sw_version: str
    configuration_url: Optional[str] = None  # the preview page, when it is on


def node_id(device: str) -> str:
    """Discovery node id of a device id (Home Assistant allows ``[a-zA-Z0-9_-]`` only)."""
    return "edgepose_" + re.sub(r"[^A-Za-z0-9_-]", "_", device)


def preview_url(listen: str) -> Optional[str]:
    """The preview page's URL for ``preview.listen`` (None when the page is off)."""
    if not listen:
        return None
    from edgepose.output.preview import parse_listen  # the page's own parser (no server is started)
    host, port = parse_listen(listen, "preview.listen")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


# (object_id, component, entity config without topics); None in a value: leave the key out
_STATUS_SENSORS: Tuple[Tuple[str, Dict[str, Any]], ...] = (
    ("pose_score", {"name": "Pose score", "value_template": "{{ value_json.score }}",
                    "state_class": "measurement", "suggested_display_precision": 2}),
    ("fps", {"name": "Frame rate", "value_template": "{{ value_json.fps }}", "unit_of_measurement": "fps",
             "state_class": "measurement", "suggested_display_precision": 1}),
    ("inference_ms", {"name": "Inference time", "value_template": "{{ value_json.infer_ms.p50 }}",
                      "unit_of_measurement": "ms", "device_class": "duration", "state_class": "measurement",
                      "suggested_display_precision": 1}),
    ("cpu_temperature", {"name": "CPU temperature", "value_template": "{{ value_json.cpu_temp_c }}",
                         "unit_of_measurement": "°C", "device_class": "temperature",
                         "state_class": "measurement"}),
    ("dropped_frames", {"name": "Dropped frames", "value_template": "{{ value_json.dropped_frames }}",
                        "state_class": "total_increasing"}),
    ("dropped_messages", {"name": "Dropped messages", "value_template": "{{ value_json.dropped_messages }}",
                          "state_class": "total_increasing"}),
)


def discovery_configs(discovery_prefix: str, info: DeviceInfo, availability_topic: str, status_topic: str,
                      presence_topic: str, cpu_temperature: bool) -> Dict[str, str]:
    """``{config topic: retained JSON payload}`` of every entity of the device.

    ``cpu_temperature``: whether the board reports one (else that sensor is not announced).
    """
    node = node_id(info.device)
    device: Dict[str, Any] = {"identifiers": [node], "name": f"{info.device} pose sensor",
                              "manufacturer": "edgepose", "model": f"edgepose ({info.model})",
                              "sw_version": info.sw_version}
    if info.configuration_url:
        device["configuration_url"] = info.configuration_url
    common = {"availability_topic": availability_topic, "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    entities: List[Tuple[str, str, Dict[str, Any]]] = [
        ("binary_sensor", "person", {"name": "Person present", "device_class": "occupancy",
                                     "state_topic": presence_topic,
                                     "value_template": "{{ 'ON' if value_json.present else 'OFF' }}"}),
        ("sensor", "people", {"name": "People", "state_topic": presence_topic, "state_class": "measurement",
                              "value_template": "{{ value_json.people }}"}),
    ]
    for object_id, cfg in _STATUS_SENSORS:
        if object_id == "cpu_temperature" and not cpu_temperature:
            continue
        entities.append(("sensor", object_id, dict(cfg, state_topic=status_topic,
                                                   entity_category="diagnostic")))
    out = {}
    for component, object_id, cfg in entities:
        payload = dict(cfg, unique_id=f"{node}_{object_id}", object_id=f"{node}_{object_id}", **common)
        out[f"{discovery_prefix}/{component}/{node}/{object_id}/config"] = json.dumps(payload, separators=(",", ":"))
    return out


# --------------------------------------------------------------------------- what was announced
def state_path(configured: str, environ: Mapping[str, str]) -> Path:
    """``homeassistant.state_file``, else systemd's ``$STATE_DIRECTORY`` (the unit's StateDirectory),
    else ``$XDG_STATE_HOME/edgepose``, else ``~/.local/state/edgepose``."""
    if configured:
        return Path(configured)
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0]) / STATE_FILE_NAME
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "edgepose" / STATE_FILE_NAME


class AnnouncedTopics:
    """The discovery config topics announced on a broker, kept in a small JSON file.

    ``{"brokers": {"host:port": [topic, ...]}}``; a file that is missing or unreadable counts as
    nothing announced (logged), and one that cannot be written is logged, never fatal: discovery
    itself goes on, only the later clean-up would miss those topics.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> Dict[str, List[str]]:
        try:
            data = json.loads(self.path.read_text())
            brokers = data["brokers"]
            return {str(k): [t for t in v if isinstance(t, str)] for k, v in brokers.items() if isinstance(v, list)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("homeassistant: ignoring unreadable state file %s: %s", self.path, e)
            return {}

    def get(self, broker: str) -> List[str]:
        return self._read().get(broker, [])

    def put(self, broker: str, topics: List[str]) -> None:
        data = self._read()
        if topics:
            data[broker] = sorted(topics)
        else:
            data.pop(broker, None)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_beside(self.path, f".{self.path.name}.", ".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps({"brokers": data}, indent=1) + "\n")
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as e:
            log.warning("homeassistant: cannot write %s (%s): configs announced now will not be removed "
                        "automatically if discovery is turned off or the device id changes", self.path, e)


# --------------------------------------------------------------------------- what the sink calls
class HomeAssistant:
    """Discovery for one sink: :meth:`messages` on every (re)connect, :attr:`presence` per frame.

    ``enabled=False`` announces nothing and only removes what was announced before.
    ``cpu_temperature`` is asked once, on the first connect (the board either has a sensor or not).
    """

    def __init__(self, enabled: bool, discovery_prefix: str, info: DeviceInfo, presence: Presence,
                 announced: AnnouncedTopics, cpu_temperature: Callable[[], bool]):
        from edgepose.output.mqttclient import check_prefix
        self.enabled = enabled
        try:
            self.discovery_prefix = check_prefix(discovery_prefix)
        except ConfigError:
            raise ConfigError(f"bad homeassistant.discovery_prefix {discovery_prefix!r}: expected non-empty "
                              "topic levels without '+', '#' or empty levels") from None
        self.info = info
        self.presence = presence
        self.announced = announced
        self._cpu_temperature = cpu_temperature
        self._configs: Optional[Dict[str, str]] = None

    def configs(self, availability_topic: str, status_topic: str, presence_topic: str) -> Dict[str, str]:
        if not self.enabled:
            return {}
        if self._configs is None:
            self._configs = discovery_configs(self.discovery_prefix, self.info, availability_topic, status_topic,
                                              presence_topic, self._cpu_temperature())
        return self._configs

    def messages(self, broker: str, availability_topic: str, status_topic: str,
                 presence_topic: str) -> List[Tuple[str, str]]:
        """(topic, retained payload) to publish on a connect: removals first, then the configs.

        Updates the state file to what is announced now.
        """
        configs = self.configs(availability_topic, status_topic, presence_topic)
        before = self.announced.get(broker)
        stale = [t for t in before if t not in configs]
        if stale:
            log.info("homeassistant: removing %d discovery config(s) announced before: %s", len(stale),
                     ", ".join(stale))
        if configs and not before:
            log.info("homeassistant: announcing device %s (%d entities) under %s/", node_id(self.info.device),
                     len(configs), self.discovery_prefix)
        if sorted(configs) != sorted(before):
            self.announced.put(broker, list(configs))
        return [(t, "") for t in stale] + list(configs.items())


def from_config(cfg: Config, device: str, meta: Mapping[str, Any], status_provider: StatusProvider,
                clock: Callable[[], float], environ: Optional[Mapping[str, str]] = None) -> HomeAssistant:
    """The :class:`HomeAssistant` of a full :class:`~edgepose.core.config.Config` (the MQTT sink's factory)."""
    ha = cfg.homeassistant
    info = DeviceInfo(device=device, model=str(meta.get("model", "")),
                      sw_version=str(meta.get("edgepose_version", "")),
                      configuration_url=preview_url(cfg.preview.listen))

    def cpu_temperature() -> bool:
        try:
            return status_provider().get("cpu_temp_c") is not None
        except Exception:  # the daemon's provider failed: the sink logs that on its own
            return False

    return HomeAssistant(ha.enabled, ha.discovery_prefix, info, Presence(ha.presence_hold, clock),
                         AnnouncedTopics(state_path(ha.state_file, os.environ if environ is None else environ)),
                         cpu_temperature)
