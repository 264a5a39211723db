"""Root logging set-up shared by the command line and the daemon (one handler on the root logger)."""

from __future__ import annotations

import logging
import sys


def install_handler(handler: logging.Handler, level: str) -> None:
    """Make ``handler`` the root logger's only handler, at ``level`` (a name; unknown names: INFO)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))


def setup_logging(level: str = "INFO") -> None:
    """Plain stderr logging (``edgepose: LEVEL: message``); the daemon swaps in journal logging under systemd."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edgepose: %(levelname)s: %(message)s"))
    install_handler(handler, level)
