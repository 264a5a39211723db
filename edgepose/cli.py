"""The ``edgepose`` command line (thin: parsing, logging, error reporting).

Each subcommand lives in the module of its stage, which provides
``add_arguments(parser)`` and ``command(args) -> int``.  This module only
builds the parser, sets up logging and turns :class:`EdgeposeError` into one
clear line and its exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Any, Iterable, List, Optional, TextIO

from edgepose import __version__
from edgepose.core.errors import EX_SOFTWARE, EdgeposeError, OutputError, UsageError
from edgepose.core.logs import setup_logging

log = logging.getLogger("edgepose")

# name -> (module, help); modules are imported lazily so `edgepose --help` stays fast
COMMANDS = {
    "run": ("edgepose.daemon.service", "run the pose pipeline (camera/file -> keypoints -> stdout/MQTT)"),
    "models": ("edgepose.tools.modelcmd", "list, pull, inspect, verify and quantize models"),
    "eval": ("edgepose.tools.evaluate", "measure accuracy (PCK) on a COCO-format keypoint file"),
    "calibrate-fps": ("edgepose.tools.calibrate", "find and save the fastest configuration this board sustains"),
    "sub": ("edgepose.tools.sub", "subscribe to a device's poses and print them"),
    "view": ("edgepose.tools.viewer", "render a device's poses from MQTT to a window, file or page"),
}
ALIASES = {"watch": "sub"}


def _load(name: str) -> ModuleType:
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def _command_word(argv: List[str]) -> Optional[str]:
    """The first word that is neither an option nor the value of ``--log-level LEVEL``."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--log-level":
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def build_parser(argv: List[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgepose", description="Pose sensor daemon for edge boards.")
    parser.add_argument("--version", action="version", version=f"edgepose {__version__}")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_word(argv)
    if wanted is not None:
        wanted = ALIASES.get(wanted, wanted)
    for name, (_module, help_) in COMMANDS.items():
        aliases = [a for a, t in ALIASES.items() if t == name]
        p = sub.add_parser(name, help=help_, aliases=aliases, description=help_)
        p.set_defaults(command=name)
        # only the chosen subcommand's module is imported (and must exist)
        if name == wanted:
            try:
                mod = _load(name)
            except ImportError as e:
                raise UsageError(f"`edgepose {name}` is not available in this install: {e}") from None
            p.add_argument("--log-level", default=argparse.SUPPRESS,
                           choices=["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"],
                           help="logging level (default info)")
            mod.add_arguments(p)
    return parser


# OpenCV's and FFmpeg's own stderr warnings ("can't open camera by index", "moov atom not found")
# repeat, in native form, what edgepose reports in one line; read when cv2 is first imported/used.
# Set them in the environment to see those lines again.
QUIET_NATIVE_ENV = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


class GuardedStdout:
    """``sys.stdout`` while a command runs: a write that cannot happen (stdout closed with ``>&-``, a full
    disk) is an :class:`OutputError` (one line, exit 74) wherever it happens; a reader that went away
    (``| head``) stays a BrokenPipeError (exit 0)."""

    def __init__(self, stream: Optional[TextIO]):
        self.stream = stream
        self.missing = stream is None  # started with stdout closed

    def _do(self, op: str, *args: Any) -> Any:
        if self.stream is None:
            if op == "flush":
                return None
            raise OutputError("stdout is closed: there is nowhere to print the result (do not start it with >&-)")
        try:
            return getattr(self.stream, op)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError.writing_stdout(e) from None

    def write(self, text: str) -> int:
        return int(self._do("write", text))

    def writelines(self, lines: Iterable[str]) -> None:
        self._do("writelines", lines)

    def flush(self) -> None:
        self._do("flush")

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: Optional[List[str]] = None) -> int:
    real = sys.stdout
    sys.stdout = GuardedStdout(real)
    try:
        return _main(argv)
    finally:
        sys.stdout = real


def _main(argv: Optional[List[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for key, value in QUIET_NATIVE_ENV.items():
        os.environ.setdefault(key, value)
    setup_logging("INFO")
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.log_level:
            setup_logging(args.log_level)
        if not args.command:
            parser.print_help(sys.stderr)
            return 64
        rc = int(_load(args.command).command(args) or 0)
        sys.stdout.flush()  # a full disk shows here, not in the interpreter's exit
        return rc
    except EdgeposeError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception:  # a bug: keep the traceback for the report, but say so plainly
        log.exception("internal error (please report this with the lines above)")
        return EX_SOFTWARE


def entry_point() -> None:  # console_scripts
    try:
        rc = main()
    except SystemExit as e:  # argparse's --help and --version: their output is flushed below too
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        _discard_stdout()
    except OSError as e:  # a full disk seen only now (--help, --version): one line, 74
        _discard_stdout()
        if rc == 0:
            log.error("%s", OutputError.writing_stdout(e))
            rc = OutputError.exit_code
    sys.exit(rc)


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's own flush at exit does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    entry_point()
