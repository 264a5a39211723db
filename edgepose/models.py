"""The model catalogue and the local model cache.

Catalogue entries (``models/catalogue.toml``) name a file by URL, mirror path,
sha256 and size.  :func:`resolve` turns ``--model NAME|PATH`` into a verified
local file, fetching it on first use into the cache directory from the
configured mirror (a directory or an http(s) URL laid out like
``../shared/models``) or from upstream.  Entries with a ``recipe`` are made
locally by ``edgepose models quantize`` and are never downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .errors import ConfigError, InputMissingError, ModelError

try:
    import tomllib as _toml
except ImportError:  # pragma: no cover
    import tomli as _toml  # type: ignore[no-redef]

log = logging.getLogger(__name__)

Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total or None)

def default_cache_dir(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("EDGEPOSE_MODEL_DIR"):
        return Path(environ["EDGEPOSE_MODEL_DIR"])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgepose" / "models"


def catalogue_path() -> Path:
    """models/catalogue.toml beside the package (source tree or editable install),
    else the copy a wheel installs under <prefix>/share/edgepose/models."""
    here = Path(__file__).resolve().parent.parent / "models" / "catalogue.toml"
    if here.is_file():
        return here
    return Path(sys.prefix) / "share" / "edgepose" / "models" / "catalogue.toml"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    sha256: str = ""
    url: str = ""
    mirror_path: str = ""
    size: int = 0
    format: str = "tflite"
    recipe: str = ""  # e.g. "int8": produced locally by `edgepose models quantize`
    source: str = ""  # the entry a recipe starts from
    input: Dict[str, Any] = field(default_factory=dict)
    output: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def local_only(self) -> bool:
        return bool(self.recipe)

    @property
    def filename(self) -> str:
        if self.mirror_path:
            return Path(self.mirror_path).name
        return "model.pb" if self.format == "frozen-graph" else "model.tflite"

    def cache_file(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / self.name / self.filename


def load_catalogue(path: Optional[Path] = None) -> Dict[str, ModelEntry]:
    path = path or catalogue_path()
    try:
        with open(path, "rb") as fh:
            raw = _toml.load(fh)
    except (OSError, _toml.TOMLDecodeError) as e:
        raise ModelError(f"cannot read the model catalogue {path}: {e}") from None
    known = {f for f in ModelEntry.__dataclass_fields__} - {"name", "extra"}
    out = {}
    for name, spec in raw.items():
        fields_ = {k: v for k, v in spec.items() if k in known}
        extra = {k: v for k, v in spec.items() if k not in known}
        out[name] = ModelEntry(name=name, extra=extra, **fields_)
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, entry: ModelEntry) -> None:
    """Raise ModelError if the file is truncated or fails its checksum."""
    size = path.stat().st_size
    if entry.size and size != entry.size:
        raise ModelError(f"model file {path} is truncated or wrong: {size} bytes, expected "
                         f"{entry.size} (delete it and run `edgepose models pull {entry.name}`)")
    if entry.sha256:
        got = sha256_of(path)
        if got != entry.sha256:
            raise ModelError(f"checksum mismatch for {path}: sha256 {got}, expected {entry.sha256} "
                             f"(delete it and run `edgepose models pull {entry.name}`)")


def _sources(entry: ModelEntry, mirror: str) -> List[str]:
    out = []
    if mirror:
        if "://" in mirror:
            out.append(mirror.rstrip("/") + "/" + entry.mirror_path)
        else:
            out.append(str(Path(mirror) / entry.mirror_path))
    if entry.url:
        out.append(entry.url)
    return out


def _copy_stream(src, dst, total: Optional[int], progress: Optional[Progress]) -> None:
    done = 0
    while True:
        chunk = src.read(1 << 16)
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)


def fetch(entry: ModelEntry, cache_dir: Path, mirror: str = "", progress: Optional[Progress] = None,
          timeout: float = 30.0) -> Path:
    """Download or copy ``entry`` into the cache, verify it, and return its path.

    The file is written to a temporary name and renamed only after the
    checksum passes, so a cache never holds a half-written model.
    """
    if entry.local_only:
        raise InputMissingError(
            f"model {entry.name} is made locally: run `edgepose models quantize {entry.source} "
            f"--mode {entry.recipe}` first")
    target = entry.cache_file(cache_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create model cache directory {target.parent}: {e}") from None
    errors = []
    for src in _sources(entry, mirror):
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".fetch-", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if "://" in src:
                    log.info("fetching %s from %s", entry.name, src)
                    with urllib.request.urlopen(src, timeout=timeout) as resp:  # noqa: S310
                        length = resp.headers.get("Content-Length")
                        _copy_stream(resp, out, int(length) if length else entry.size or None, progress)
                else:
                    log.info("copying %s from %s", entry.name, src)
                    with open(src, "rb") as fh:
                        _copy_stream(fh, out, os.path.getsize(src), progress)
            verify_file(tmp, entry)
            os.replace(tmp, target)
            return target
        except ModelError as e:
            raise ModelError(f"model {entry.name} from {src} failed verification: "
                             f"{str(e).split(':', 1)[-1].strip()}") from None
        except (OSError, urllib.error.URLError, ValueError) as e:
            errors.append(f"{src}: {e}")
            log.warning("could not fetch %s from %s: %s", entry.name, src, e)
        finally:
            if tmp.exists():
                tmp.unlink()
    raise InputMissingError(f"could not fetch model {entry.name}: " + "; ".join(errors))


def looks_like_path(name: str) -> bool:
    return name.endswith((".tflite", ".pb")) or os.sep in name or name.startswith(".")


def resolve(name: str, cache_dir: Optional[Path] = None, mirror: str = "",
            progress: Optional[Progress] = None,
            catalogue: Optional[Dict[str, ModelEntry]] = None) -> Path:
    """``--model NAME|PATH`` to a verified local file (fetched on first use)."""
    if looks_like_path(name):
        p = Path(name).expanduser()
        if not p.is_file():
            raise InputMissingError(f"model file {name} does not exist")
        return p
    catalogue = load_catalogue() if catalogue is None else catalogue
    if name not in catalogue:
        raise ConfigError(f"unknown model {name!r}: expected a path to a .tflite file or one of "
                          + ", ".join(catalogue))
    entry = catalogue[name]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = entry.cache_file(cache_dir)
    if target.is_file():
        if entry.local_only:
            return target
        verify_file(target, entry)
        return target
    return fetch(entry, cache_dir, mirror, progress)


def cache_state(entry: ModelEntry, cache_dir: Path) -> str:
    p = entry.cache_file(cache_dir)
    if not p.is_file():
        return "not cached"
    if entry.local_only:
        return "built"
    try:
        verify_file(p, entry)
    except ModelError:
        return "CORRUPT"
    return "cached"


def report_path(model_path: Path) -> Path:
    """The JSON report written beside a locally built model: ``<stem>.report.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.json")


def verify_local(path: Path) -> None:
    """Check a locally built model against the sha256 its report recorded."""
    import json

    rp = report_path(path)
    try:
        report = json.loads(rp.read_text())
        want = report["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{path} has no readable report {rp.name}; rebuild it with `edgepose models quantize`") from None
    got = sha256_of(path)
    if got != want:
        raise ModelError(f"checksum mismatch for {path}: sha256 {got}, its report says {want}")


def verify_cache(cache_dir: Path, catalogue: Optional[Dict[str, ModelEntry]] = None) -> List[tuple]:
    """(name, state) for every catalogue entry: "ok", "not cached" or the problem."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    out = []
    for name, entry in catalogue.items():
        p = entry.cache_file(Path(cache_dir))
        if not p.is_file():
            out.append((name, "not cached"))
            continue
        try:
            verify_local(p) if entry.local_only else verify_file(p, entry)
            out.append((name, "ok"))
        except ModelError as e:
            out.append((name, f"BAD: {e}"))
    return out


def stderr_progress(stream=None) -> Progress:
    """A simple progress bar for interactive commands (writes to stderr)."""
    stream = stream or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    state = {"last": -1}

    def show(done: int, total: Optional[int]) -> None:
        if total:
            pct = int(done * 100 / total)
            if pct == state["last"]:
                return
            state["last"] = pct
            bar = "#" * (pct // 4)
            line = f"\r  [{bar:<25}] {pct:3d}% {done / 1e6:6.2f} MB"
            if interactive or pct == 100:
                stream.write(line + ("\n" if pct == 100 else ""))
                stream.flush()
        elif interactive:
            stream.write(f"\r  {done / 1e6:6.2f} MB")
            stream.flush()

    return show
