"""Writing a config back: set keys in a TOML file in place, keeping its comments, layout, mode and owner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional

from edgepose.core import config as config_mod
from edgepose.core.errors import ConfigError
from edgepose.core.files import keep_owner_and_mode, temp_beside, write_problem


def update_toml(text: str, values: Mapping[str, Mapping[str, Any]], origin: str = "config") -> str:
    """Set ``values`` in a TOML document, keeping every other key, comment and the layout (tomlkit).

    The result is checked to be a valid edgepose config before it is returned.
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as e:
        raise ConfigError(f"{origin} is not valid TOML: {e}") from None
    for section, kv in values.items():
        if section not in doc:
            doc.add(section, tomlkit.table())
        tbl = doc[section]
        if not isinstance(tbl, MutableMapping):
            raise ConfigError(f"{origin}: {section} is not a table")
        for key, value in kv.items():
            tbl[key] = value
    out = tomlkit.dumps(doc)
    try:
        import tomllib as _toml
    except ImportError:  # pragma: no cover - Python < 3.11
        import tomli as _toml
    config_mod.apply_mapping(config_mod.Config(), _toml.loads(out), origin)
    return out


def check_writable(path: str) -> bool:
    """Raise ConfigError unless ``path`` can be updated (or created); returns whether it exists."""
    p = Path(path)
    exists = p.is_file()
    if not p.is_dir() and not os.access(p if exists else p.parent, os.W_OK) and p.parent.is_dir():
        raise ConfigError(f"cannot write {path}: permission denied (run with sudo, or give --write FILE)")
    problem = write_problem(p)  # what write_config will do: a temporary file beside it
    if problem:
        hint = "is the service installed? " if not p.parent.is_dir() else ""
        raise ConfigError(f"cannot write {path}: {problem} ({hint}give --write FILE to write another config)")
    return exists


def config_target(path: str) -> Optional[str]:
    """The current text of the config file ``--write`` will update (None: it will be created).

    Raises ConfigError unless it can be written and is a valid config already, so ``calibrate-fps``
    says so before its sweep instead of after it.
    """
    exists = check_writable(os.path.realpath(path))  # a link: its target is what gets written
    text = ""
    try:
        if exists:
            with open(path, encoding="utf-8", newline="") as fh:  # newline="": CRLF stays CRLF
                text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    update_toml(text, {}, str(path))
    return text if exists else None


def write_config(path: str, values: Mapping[str, Mapping[str, Any]]) -> None:
    """Update ``path`` in place (atomically, keeping its mode, owner and line endings); create it if it
    is missing.  A symbolic link is followed: the file it points to is updated."""
    p = Path(os.path.realpath(path))
    text = config_target(path)
    new = update_toml(text or "", values, str(path))
    if "\r\n" in (text or ""):  # a CRLF file: the keys added are CRLF too
        new = new.replace("\r\n", "\n").replace("\n", "\r\n")
    tmp: Optional[Path] = None
    try:
        fd, tmp = temp_beside(p, f".{p.name}.", ".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(new)
        keep_owner_and_mode(tmp, p)  # a new file: 0644 less the umask, readable by the service user
        os.replace(tmp, p)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
