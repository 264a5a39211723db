"""Filesystem checks shared by the commands that write a file at the end of their work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union


def write_problem(path: Union[str, Path]) -> Optional[str]:
    """Why a file cannot be written (created or replaced through a temporary file beside it) at ``path``;
    None when it can.  Checked by creating and removing such a temporary file, because ``os.access``
    says yes to root even where nothing can be created (sysfs, read-only or immutable folders)."""
    p = Path(path)
    if p.is_dir():
        return "it is a directory"
    if not p.parent.is_dir():
        return f"directory {p.parent} does not exist"
    try:
        fd, probe = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


def absent(path: Union[str, Path], kind: str = "file") -> str:
    """How ``path`` fails to be a ``kind`` ("file" or "folder") that exists: for "X ... does not exist"."""
    return f"is not a {kind}" if Path(path).exists() else "does not exist"
