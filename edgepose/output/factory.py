"""The sink a config names (stdout, none or MQTT): the daemon's one way to make a sink.

Apart from sinks.py so that the MQTT sink (which uses sinks.py) is imported only when chosen,
without an import cycle between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from edgepose.output.sinks import NullSink, Sink, StatusProvider, StdoutSink

if TYPE_CHECKING:
    from edgepose.core.config import Config


def make_sink(cfg: Config, device: str, meta: Mapping[str, Any], status_provider: StatusProvider) -> Sink:
    """The sink named by ``cfg.output.sink`` (MQTT is imported only when used)."""
    kind = cfg.output.sink
    if kind == "stdout":
        return StdoutSink()
    if kind == "none":
        return NullSink()
    import time

    from edgepose.output import homeassistant
    from edgepose.output.mqtt import MqttSink
    ha = homeassistant.from_config(cfg, device, meta, status_provider, clock=time.monotonic)
    return MqttSink(cfg.mqtt, device=device, meta=meta, status_provider=status_provider, homeassistant=ha)
