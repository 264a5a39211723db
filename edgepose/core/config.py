"""Configuration: TOML file, ``EDGEPOSE_*`` environment, command line.

Precedence: command line > environment > file > defaults.  Every key lives in
one section (``[camera]``, ``[model]``, ...).  An unknown section or key, or a
value of the wrong type or outside its allowed values, raises
:class:`~edgepose.core.errors.ConfigError` naming the key and what is allowed.

Environment variables are ``EDGEPOSE_<SECTION>_<KEY>`` in upper case, e.g.
``EDGEPOSE_MQTT_HOST`` or ``EDGEPOSE_MODEL_MIRROR``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edgepose.core.errors import ConfigError

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml  # type: ignore[no-redef]

SERVICE_CONFIG_PATH = "/etc/edgepose/edgepose.toml"


def _opt(default: Any, doc: str, choices: Optional[Tuple[Any, ...]] = None,
         minimum: Optional[float] = None, maximum: Optional[float] = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices,
                                            "min": minimum, "max": maximum})


@dataclass
class CameraConfig:
    source: str = _opt("0", "camera index (V4L2 via OpenCV) or URI: video file, image file, "
                            "folder or glob of images, rtsp://..., /dev/videoN, csi://N")
    width: int = _opt(640, "requested capture width for live cameras", minimum=16)
    height: int = _opt(480, "requested capture height for live cameras", minimum=16)
    fps: float = _opt(0.0, "requested capture frame rate for live cameras (0 = driver default; "
                            "for a snapshot URL: fetches a second, 0 = 2)",
                      minimum=0)
    reopen_backoff_max: float = _opt(10.0, "longest wait (s) between attempts to reopen a lost camera",
                                     minimum=0.1)
    gone_timeout: float = _opt(60.0, "seconds a live camera may stay lost before the daemon stops "
                                     "its watchdog pings (systemd then restarts it)", minimum=1)
    rotate: int = _opt(0, "turn every frame clockwise by this many degrees before anything else (a camera "
                          "mounted sideways or upside down); keypoints are in the turned frame's pixels",
                       choices=(0, 90, 180, 270))


@dataclass
class ModelConfig:
    name: str = _opt("cpm", "catalogue name (cpm, hourglass, cpm-int8, ...) or path to a .tflite file")
    dir: str = _opt("", "model cache directory (default $EDGEPOSE_MODEL_DIR, else "
                         "$XDG_CACHE_HOME/edgepose/models, else ~/.cache/edgepose/models)")
    mirror: str = _opt("", "local mirror directory or http(s) URL to fetch models from")
    score_threshold: float = _opt(0.3, "pose score at or above which `present` is true (set for CPM; "
                                       "multiplied by the catalogue's score_scale for other models)",
                                  minimum=0, maximum=1)
    decoder: str = _opt("subpixel", "heatmap decoder", choices=("subpixel", "argmax", "upstream"))
    fit: str = _opt("pad", "how a whole frame is fitted to the square model input",
                    choices=("pad", "stretch"))


@dataclass
class RuntimeConfig:
    backend: str = _opt("auto", "TFLite runtime", choices=("auto", "litert", "tflite-runtime"))
    threads: int = _opt(0, "interpreter threads (0 = number of CPU cores)", minimum=0, maximum=64)
    xnnpack: bool = _opt(True, "use the XNNPACK delegate")
    max_fps: float = _opt(0.0, "frame-rate cap for inference (0 = as fast as possible)", minimum=0)
    max_frames: int = _opt(0, "stop after this many frames (0 = no limit)", minimum=0)


@dataclass
class OutputConfig:
    sink: str = _opt("stdout", "where poses go", choices=("stdout", "mqtt", "none"))
    device: str = _opt("", "device id used in payloads and topics (default: hostname)")


@dataclass
class MqttConfig:
    host: str = _opt("localhost", "broker host")
    port: int = _opt(1883, "broker port", minimum=1, maximum=65535)
    prefix: str = _opt("edgepose", "topic prefix")
    client_id: str = _opt("", "MQTT client id (default edgepose-<device>)")
    qos: int = _opt(0, "QoS of pose messages", choices=(0, 1))
    rate_limit: float = _opt(0.0, "most pose messages per second (0 = every frame)", minimum=0)
    queue_size: int = _opt(1000, "pose messages kept while disconnected (QoS 1, drop-oldest)",
                           minimum=1)
    status_interval: float = _opt(10.0, "seconds between retained status messages", minimum=0.5)
    keepalive: int = _opt(30, "MQTT keepalive (s)", minimum=5, maximum=65535)  # a 16-bit field
    username: str = _opt("", "username")
    password: str = _opt("", "password")
    tls: bool = _opt(False, "connect with TLS (also on when tls_ca or tls_cert is set)")
    tls_ca: str = _opt("", "CA certificate file (turns TLS on; empty: the system CA store)")
    tls_cert: str = _opt("", "client certificate file (turns TLS on)")
    tls_key: str = _opt("", "client key file")
    tls_insecure: bool = _opt(False, "do not check the broker's host name (testing only)")
    reconnect_min: float = _opt(1.0, "first reconnect delay (s)", minimum=0.05)
    reconnect_max: float = _opt(60.0, "longest reconnect delay (s); also the retry delay after the "
                                      "broker refused the credentials or certificate", minimum=0.1)
    close_timeout: float = _opt(2.0, "seconds a clean shutdown waits to deliver queued messages "
                                     "and `offline`", minimum=0)
    startup_wait: float = _opt(5.0, "seconds the daemon waits at start (and after a reload) for its first "
                                    "broker connection before the next frame; ends early if the broker "
                                    "refuses or cannot be reached (at most 10: the systemd watchdog)",
                               minimum=0, maximum=10)


@dataclass
class SmoothingConfig:
    enabled: bool = _opt(True, "One Euro smoothing of keypoints")
    min_cutoff: float = _opt(0.5, "One Euro cutoff frequency (Hz) of a still keypoint (lower = smoother)",
                             minimum=0.0001)
    beta: float = _opt(5.0, "One Euro speed coefficient, per pose size per second (higher = less lag)",
                       minimum=0)
    d_cutoff: float = _opt(1.0, "One Euro derivative cutoff (Hz)", minimum=0.0001)


@dataclass
class TrackingConfig:
    enabled: bool = _opt(True, "crop the next frame around a confident pose")
    min_score: float = _opt(0.25, "pose score needed to keep tracking (set for CPM; multiplied by the "
                                  "model's catalogue score_scale, 0.59 for Hourglass)", minimum=0, maximum=1)
    margin: float = _opt(1.7, "crop size as a multiple of the keypoint box", minimum=1.0)
    search: float = _opt(0.5, "while lost, also try tiles of this fraction of the frame's longer side "
                              "in turn with the whole frame (0 = whole frame only, else 0.1 to 1)", minimum=0, maximum=1)


@dataclass
class ServiceConfig:
    watchdog: bool = _opt(True, "send systemd watchdog pings while frames are processed")
    stall_timeout: float = _opt(10.0, "seconds without a processed frame before pings stop",
                                minimum=0.5)


@dataclass
class PreviewConfig:
    listen: str = _opt("", "[HOST:]PORT of the preview page (empty = off; host defaults to 127.0.0.1)")
    fps: float = _opt(5.0, "most preview frames encoded per second", minimum=0.1)
    hosts: str = _opt("", "more host names the page answers to, comma-separated (e.g. \"pi.local\"); the "
                          "address it listens on, localhost, 127.0.0.1 and [::1] always work, other names get 421")


@dataclass
class HomeAssistantConfig:
    enabled: bool = _opt(True, "announce the device to Home Assistant by MQTT discovery (only with the MQTT "
                               "sink); false removes what this host announced before")
    discovery_prefix: str = _opt("homeassistant", "Home Assistant's MQTT discovery prefix")
    presence_hold: float = _opt(3.0, "seconds without a person before \"person present\" turns off (a missed "
                                     "frame does not flicker); it turns on at the first frame with one",
                                minimum=0)
    state_file: str = _opt("", "where the daemon remembers the discovery topics it announced (default "
                               "$STATE_DIRECTORY/homeassistant.json, else $XDG_STATE_HOME/edgepose/"
                               "homeassistant.json, else ~/.local/state/edgepose/homeassistant.json)")


@dataclass
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    path: Optional[str] = None  # the file this came from, if any

    @property
    def device_id(self) -> str:
        return self.output.device or socket.gethostname().split(".")[0] or "edgepose"

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return {s.name: dataclasses.asdict(getattr(self, s.name)) for s in sections()}


def split_host_port(text: str) -> Tuple[str, Optional[int]]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` -> (host, port or None).

    A bare IPv6 address (more than one ``:``, no brackets) is all host.  Raises
    ValueError when the port is not a number in 0..65535 or the host is empty.
    """
    t = str(text).strip()
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(t)
        port = rest[1:] if rest else None
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, None
    if not host or (port is not None and not (port.isdigit() and int(port) <= 65535)):
        raise ValueError(t)
    return host, None if port is None else int(port)


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`: ``host:port``, ``[v6]:port`` for IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sections():
    return [f for f in dataclasses.fields(Config) if f.name != "path"]


def _section_fields(section: str) -> Dict[str, dataclasses.Field]:
    for f in sections():
        if f.name == section:
            return {g.name: g for g in dataclasses.fields(f.default_factory())}  # type: ignore[misc]
    allowed = ", ".join(s.name for s in sections())
    raise ConfigError(f"unknown config section [{section}]; allowed sections: {allowed}")


def _describe(f: dataclasses.Field) -> str:
    md = f.metadata
    if md.get("choices"):
        return "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in md["choices"])
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
        _type_of(f)]
    lo, hi = md.get("min"), md.get("max")
    if lo is not None and hi is not None:
        return f"{kind} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{kind} >= {lo:g}"
    return kind


def _type_of(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, type) else {"bool": bool, "int": int, "float": float,
                                                  "str": str}[str(f.type)]
    return t


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(section: str, key: str, value: Any, from_text: bool = False) -> Any:
    """Check and convert one value; raise ConfigError naming the key otherwise."""
    fields_ = _section_fields(section)
    if key not in fields_:
        allowed = ", ".join(fields_)
        raise ConfigError(f"unknown config key {section}.{key}; allowed keys in [{section}]: {allowed}")
    f = fields_[key]
    t = _type_of(f)
    bad = ConfigError(f"bad value {value!r} for {section}.{key}: expected {_describe(f)}")
    try:
        if t is bool:
            if isinstance(value, bool):
                out: Any = value
            elif from_text and str(value).strip().lower() in _TRUE | _FALSE:
                out = str(value).strip().lower() in _TRUE
            else:
                raise bad
        elif t is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise bad
            if isinstance(value, str) and not from_text:
                raise bad
            out = int(value)
        elif t is float:
            if isinstance(value, bool) or (isinstance(value, str) and not from_text):
                raise bad
            out = float(value)
            if not math.isfinite(out):  # nan passes every bound check, inf every minimum
                raise bad
        else:
            if not isinstance(value, str):
                if from_text or isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)  # e.g. camera.source = 0
                else:
                    raise bad
            out = value
    except (TypeError, ValueError):
        raise bad from None
    md = f.metadata
    if md.get("choices") and out not in md["choices"]:
        raise bad
    if md.get("min") is not None and out < md["min"]:
        raise bad
    if md.get("max") is not None and out > md["max"]:
        raise bad
    return out


def apply_mapping(cfg: Config, data: Mapping[str, Any], origin: str, from_text: bool = False) -> None:
    """Apply ``{section: {key: value}}`` onto ``cfg`` with full validation."""
    for section, values in data.items():
        if not isinstance(values, Mapping):
            owner = [s.name for s in sections() if section in _section_fields(s.name)]
            hint = f" (it belongs in {' or '.join(f'[{o}]' for o in owner)})" if owner else ""
            raise ConfigError(f"{origin}: {section} = ... is outside any [section]{hint}"
                              if not any(s.name == section for s in sections())
                              else f"{origin}: [{section}] must be a table of keys")
        try:
            _section_fields(section)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
        target = getattr(cfg, section)
        for key, value in values.items():
            try:
                setattr(target, key, coerce(section, key, value, from_text))
            except ConfigError as e:
                raise ConfigError(f"{origin}: {e}") from None


def read_file(path: str) -> Dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return _toml.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except _toml.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def env_mapping(environ: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """Collect ``EDGEPOSE_<SECTION>_<KEY>`` variables.

    A variable naming a known section with an unknown key is an error (it is
    surely a typo); ``EDGEPOSE_*`` variables naming no section at all (such as
    ``EDGEPOSE_CONFIG`` or a test's ``EDGEPOSE_SHARED``) are not config keys
    and are left alone.
    """
    out: Dict[str, Dict[str, str]] = {}
    names = {s.name for s in sections()}
    for var, value in environ.items():
        if not var.startswith("EDGEPOSE_"):
            continue
        rest = var[len("EDGEPOSE_"):].lower()
        section = next((n for n in sorted(names, key=len, reverse=True) if rest.startswith(n + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1:]
        if key not in _section_fields(section):
            raise ConfigError(f"unknown environment variable {var}: [{section}] has no key {key!r}; "
                              f"allowed keys: {', '.join(_section_fields(section))}")
        out.setdefault(section, {})[key] = value
    return out


def load(path: Optional[str] = None, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
         environ: Optional[Mapping[str, str]] = None) -> Config:
    """Build the effective config: defaults < file < environment < overrides (CLI)."""
    environ = os.environ if environ is None else environ
    cfg = Config()
    path = path or environ.get("EDGEPOSE_CONFIG") or None
    if path:
        apply_mapping(cfg, read_file(path), path)
        cfg.path = path
    apply_mapping(cfg, env_mapping(environ), "environment", from_text=True)
    if overrides:
        apply_mapping(cfg, {k: v for k, v in overrides.items() if v}, "command line")
    return cfg


def reference_markdown() -> str:
    """The configuration reference table (kept in README by a test)."""
    lines = []
    for s in sections():
        lines.append(f"### [{s.name}]\n")
        lines.append("| key | default | allowed | meaning |")
        lines.append("|---|---|---|---|")
        for f in dataclasses.fields(s.default_factory()):  # type: ignore[misc]
            d = f.default
            shown = f'"{d}"' if isinstance(d, str) else str(d).lower() if isinstance(d, bool) else d
            lines.append(f"| `{f.name}` | `{shown}` | {_describe(f)} | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)
