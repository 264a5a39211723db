"""Where payloads go: the Sink protocol and the stdout sink (output/factory.py picks one from the config).

A sink gets one schema-v1 payload dict per frame.  Sinks that report on
their own (MQTT) take a ``status_provider`` callable returning the daemon's
status dict and a ``meta`` dict describing the model, and publish those
themselves on their own schedule so that status keeps flowing even while the
capture loop is blocked.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, TextIO

from edgepose.core.errors import OutputError
from edgepose.core.payload import Status

StatusProvider = Callable[[], Status]  # the daemon's status document


class Sink(Protocol):
    def start(self) -> None: ...

    def wait_connected(self, timeout: float, interrupt: Optional[Any] = None) -> bool:
        """Wait at most ``timeout`` s until the sink can deliver (interrupted by ``interrupt.is_set()``)."""
        ...

    def publish_pose(self, payload: Mapping[str, Any]) -> None: ...

    def stats(self) -> Dict[str, Any]: ...

    def close(self, handover_to: Optional[Sink] = None) -> None:
        """Stop; ``handover_to``: the sink replacing this one on a reload (it goes on where this one stops)."""
        ...

    def count_on(self, stats: Dict[str, Any]) -> None:
        """Before :meth:`start`: go on from the counters of the (closed) sink this one replaces on a reload,
        so that the final status still adds up to the whole run."""
        ...


def to_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


class StdoutSink:
    """One JSON object per line on stdout (or any text stream)."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stdout
        if self.stream is None or getattr(self.stream, "missing", False):  # started with stdout closed (`>&-`)
            raise OutputError("stdout is closed: poses have nowhere to go (use --sink mqtt or --sink none)")
        self.published = 0

    def count_on(self, stats: Dict[str, Any]) -> None:
        self.published += int(stats.get("published", 0))

    def start(self) -> None:
        pass

    def wait_connected(self, timeout: float, interrupt: Optional[Any] = None) -> bool:
        return True  # a stream is always there

    def publish_pose(self, payload: Mapping[str, Any]) -> None:
        # a full disk or closed stdout: cli.GuardedStdout raises OutputError (74) from these calls; a reader
        # that went away raises BrokenPipeError, which the CLI ends quietly with 0
        self.stream.write(to_json(payload) + "\n")
        self.stream.flush()
        self.published += 1

    def stats(self) -> Dict[str, Any]:
        return {"sink": "stdout", "published": self.published}

    def close(self, handover_to: Optional[Sink] = None) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError, OutputError):  # a broken pipe or a full disk was reported where it happened
            pass


class NullSink(StdoutSink):
    """Discards payloads (benchmarks, preview-only runs)."""

    def publish_pose(self, payload: Mapping[str, Any]) -> None:
        self.published += 1

    def stats(self) -> Dict[str, Any]:
        return {"sink": "none", "published": self.published}
