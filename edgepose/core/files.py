"""Filesystem checks shared by the commands that write a file at the end of their work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple, Union


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


def temp_beside(target: Path, prefix: str, suffix: str) -> Tuple[int, Path]:
    """A new file beside ``target`` to write its replacement into: (fd, path).  Created with mode 0644 less
    the umask (``tempfile.mkstemp`` would make it 0600: a config or model a service user cannot read)."""
    for _ in range(100):
        tmp = Path(target).parent / f"{prefix}{os.urandom(6).hex()}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {Path(target).parent}")


def keep_owner_and_mode(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the mode of the file it is about to replace and, as root, its owner and group (a
    ``sudo`` rewrite of a service's file must leave one the service user can still read); nothing when
    ``target`` does not exist yet."""
    try:
        st = Path(target).stat()
    except FileNotFoundError:
        return
    os.chmod(tmp, st.st_mode & 0o7777)
    if hasattr(os, "chown") and os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
