"""Errors that end a command with one clear line and a sysexits exit code.

The CLI catches :class:`EdgeposeError`, logs ``str(error)`` once and exits with
``error.exit_code``; no traceback reaches the user.
"""

from __future__ import annotations

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78


class EdgeposeError(Exception):
    """Base class: a failure the user can act on, with a one-line message."""

    exit_code = EX_SOFTWARE


class UsageError(EdgeposeError):
    exit_code = EX_USAGE


class ConfigError(EdgeposeError):
    """Unknown key, bad value or unreadable config file (exit 78)."""

    exit_code = EX_CONFIG


class InputMissingError(EdgeposeError):
    """A file, folder or model that was asked for does not exist (exit 66)."""

    exit_code = EX_NOINPUT


class ModelError(EdgeposeError):
    """A model file is corrupt, truncated, fails its checksum or is not a heatmap model (exit 65)."""

    exit_code = EX_DATAERR


class DeviceUnavailableError(EdgeposeError):
    """A camera or other device cannot be opened (exit 69)."""

    exit_code = EX_UNAVAILABLE


class RuntimeMissingError(EdgeposeError):
    """No TFLite runtime (or another optional package) is installed (exit 69)."""

    exit_code = EX_UNAVAILABLE


class OutputError(EdgeposeError):
    """Output cannot be written where it goes (stdout on a full disk, closed)."""

    exit_code = EX_IOERR

    @classmethod
    def writing_stdout(cls, e: OSError) -> OutputError:
        return cls(f"cannot write to stdout: {e.strerror or e}")
