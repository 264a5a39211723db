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
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, TextIO

from edgepose.core.errors import ConfigError, InputMissingError, ModelError
from edgepose.core.files import absent, keep_owner_and_mode, temp_beside
from edgepose.core.text import redact, split_credentials

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as _toml

log = logging.getLogger(__name__)

Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total or None)

def default_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("EDGEPOSE_MODEL_DIR"):
        return Path(environ["EDGEPOSE_MODEL_DIR"])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgepose" / "models"


# the source tree (a checkout or an editable install): models/, deploy/ beside the package
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
# where setup.py's data_files land under an installation prefix
_SHARE = Path("share") / "edgepose"


def install_prefixes() -> List[Path]:
    """Every prefix under which setup.py's ``data_files`` (``share/edgepose/...``) can land.

    First the prefix this very package was installed under (``<prefix>/lib/python3.X/site-packages``
    or Debian's ``<prefix>/lib/python3/dist-packages``: ``pip --prefix``, ``--root``, venvs), then
    ``sys.prefix``, ``sys.exec_prefix``, ``site.USER_BASE`` (``pip install --user``), the ``data``
    path of every ``sysconfig`` install scheme (Debian's ``posix_local`` is /usr/local), /usr/local
    and /usr.  Duplicates removed, order kept.
    """
    import site
    import sysconfig

    found: List[Path] = []
    for anc in Path(__file__).resolve().parents:
        if anc.name in ("site-packages", "dist-packages"):
            found.append(anc.parents[2] if anc.parent.name.startswith("python") else anc.parents[1])
            break
    found += [Path(sys.prefix), Path(sys.exec_prefix)]
    try:
        found.append(Path(site.getuserbase()))
    except (AttributeError, TypeError, OSError):  # pragma: no cover - embedded interpreters
        pass
    for scheme in sysconfig.get_scheme_names():
        try:
            found.append(Path(sysconfig.get_paths(scheme)["data"]))
        except (KeyError, ValueError, TypeError):  # pragma: no cover - a scheme this platform cannot expand
            pass
    found += [Path("/usr/local"), Path("/usr")]
    out: List[Path] = []
    for p in found:
        if p not in out:
            out.append(p)
    return out


def data_search(relpath: str, prefixes: Optional[Sequence[Path]] = None,
                source_root: Optional[Path] = None) -> List[Path]:
    """Every place the data file ``relpath`` (``models/catalogue.toml``, ``deploy/edgepose.service``)
    can be, in the order :func:`data_path` tries them: ``<source_root>/<relpath>`` (the source tree
    or an editable install), then ``<prefix>/share/edgepose/<relpath>`` for each of ``prefixes``
    (default :func:`install_prefixes`)."""
    source_root = _SOURCE_ROOT if source_root is None else Path(source_root)
    prefixes = install_prefixes() if prefixes is None else [Path(p) for p in prefixes]
    return [source_root / relpath] + [p / _SHARE / relpath for p in prefixes]


def data_path(relpath: str, prefixes: Optional[Sequence[Path]] = None,
              source_root: Optional[Path] = None) -> Path:
    """The first of :func:`data_search` that exists.  When none does, where a normal install
    puts it (``sys.prefix/share/edgepose/<relpath>``, or under the first of the given
    ``prefixes``), so an error names the expected place."""
    places = data_search(relpath, prefixes, source_root)
    for p in places:
        if p.exists():
            return p
    if prefixes is None:
        return Path(sys.prefix) / _SHARE / relpath
    return places[1] if len(places) > 1 else places[0]


def catalogue_path(prefixes: Optional[Sequence[Path]] = None, source_root: Optional[Path] = None) -> Path:
    """models/catalogue.toml beside the package (source tree or editable install), else the copy
    setup.py installs as ``<prefix>/share/edgepose/models/catalogue.toml`` (see :func:`data_path`)."""
    return data_path("models/catalogue.toml", prefixes, source_root)


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
    searched = path is None
    path = catalogue_path() if path is None else path
    try:
        with open(path, "rb") as fh:
            raw = _toml.load(fh)
    except (OSError, _toml.TOMLDecodeError) as e:
        if searched and not Path(path).exists():
            others = [str(p) for p in data_search("models/catalogue.toml") if p != Path(path)]
            raise ModelError(f"cannot read the model catalogue {path}: no such file (also looked in "
                             f"{', '.join(others)}; reinstall edgepose)") from None
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


def build_hint(entry: ModelEntry) -> str:
    """The command that builds the locally made variant ``entry`` (``cpm-int8-mixed`` ...):
    ``edgepose models quantize NAME [--calib DIR] --eval FILE.json``.  int8 recipes (the mixed
    int8/float ones too) need calibration photos; float16/dynamic/float32 do not.  ``--eval`` is
    optional (COCO keypoints the report measures agreement and PCK on)."""
    calib = " --calib DIR" if entry.recipe == "int8" else ""
    return f"edgepose models quantize {entry.name}{calib} --eval FILE.json"


def repair_hint(entry: ModelEntry) -> str:
    """The command that replaces a bad cached file of ``entry``: ``pull NAME --force`` for a
    downloaded model, the build command for a locally made one."""
    return build_hint(entry) if entry.local_only else f"edgepose models pull {entry.name} --force"


def check_file(path: Path, entry: ModelEntry) -> Optional[str]:
    """What is wrong with ``path`` as a copy of ``entry`` (wrong size or sha256), or None."""
    size = Path(path).stat().st_size
    if entry.size and size != entry.size:
        return f"truncated or wrong: {size} bytes, expected {entry.size}"
    if entry.sha256:
        got = sha256_of(path)
        if got != entry.sha256:
            return f"checksum mismatch: sha256 {got}, expected {entry.sha256}"
    return None


def verify_file(path: Path, entry: ModelEntry) -> None:
    """Raise ModelError if the cached file is truncated or fails its checksum."""
    problem = check_file(path, entry)
    if problem:
        raise ModelError(f"cached model file {path} is bad: {problem}; "
                         f"`{repair_hint(entry)}` fetches it again")


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


PART_PREFIX, PART_SUFFIX = ".fetch-", ".part"
STALE_PART_AGE = 600.0  # s without a write after which a .fetch-*.part file is a dead download's


def clean_stale_parts(cache_dir: Path, max_age: float = STALE_PART_AGE, now: Optional[float] = None) -> List[Path]:
    """Remove the ``.fetch-*.part`` files a killed download (SIGTERM, SIGKILL, power loss) left in the
    cache, and return them.  Only stale ones: a download in progress writes its file every few
    milliseconds (and gives up after ``timeout`` seconds without data), so a file nobody wrote to for
    ``max_age`` seconds (10 minutes) belongs to no running process; a younger one may be another
    process's download and is left alone."""
    now = time.time() if now is None else now
    removed = []
    for part in Path(cache_dir).glob(f"*/{PART_PREFIX}*{PART_SUFFIX}"):
        try:
            if now - part.stat().st_mtime > max_age:
                part.unlink()
                removed.append(part)
        except OSError:  # gone meanwhile (another process cleaned it), or not ours to remove
            continue
    if removed:
        log.info("removed %d unfinished download(s) left in the model cache: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _mirror_hint(mirror: str) -> str:
    if mirror:
        return (f"; check the mirror {redact(mirror)} (a folder or http(s) URL laid out as <name>/<file>, "
                f"like ../shared/models)")
    return ("; without network, fetch models from a mirror: a folder or http(s) URL laid out as <name>/<file>, "
            "given as EDGEPOSE_MODEL_MIRROR=DIR|URL, --model-mirror (run) or --mirror (models), or "
            "model.mirror in the config file (docs/models.md)")


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _copy_stream(src: _Readable, dst: BinaryIO, total: Optional[int], progress: Optional[Progress]) -> int:
    done = 0
    while True:
        chunk = src.read(1 << 16)
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return done


def fetch(entry: ModelEntry, cache_dir: Path, mirror: str = "", progress: Optional[Progress] = None,
          timeout: float = 30.0) -> Path:
    """Download or copy ``entry`` into the cache, verify it, and return its path.

    The file is written to a temporary name and renamed only after the
    checksum passes, so a cache never holds a half-written model.  A new file
    gets mode 0644 less the umask; one that replaces a cached file (``pull
    --force``) keeps that file's mode and, as root, its owner.  An HTTP transfer
    that ends before its Content-Length is an interrupted download, a failed
    source like a refused connection (the next source is tried), not a bad file.
    """
    if entry.local_only:
        raise InputMissingError(
            f"model {entry.name} is made locally and is not built yet: run `{build_hint(entry)}` first ("
            + ("DIR: calibration photos; " if entry.recipe == "int8" else "")
            + "--eval FILE.json, COCO keypoints for the accuracy report, is optional)")
    target = entry.cache_file(cache_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create model cache directory {target.parent}: {e}") from None
    clean_stale_parts(cache_dir)
    errors = []
    sources = _sources(entry, mirror)
    mirror_src = sources[0] if mirror else None
    for src in sources:
        shown = redact(src)  # a mirror's http://user:password@host/...: never in the log
        try:
            fd, tmp = temp_beside(target, PART_PREFIX, PART_SUFFIX)
        except OSError as e:
            raise ConfigError(f"cannot write to model cache directory {target.parent}: {e}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                if "://" in src:
                    log.info("fetching %s from %s", entry.name, shown)
                    url, headers = split_credentials(src)  # user:password@ as HTTP Basic auth
                    req = urllib.request.Request(url, headers=headers)
                    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                        length = resp.headers.get("Content-Length")
                        length = int(length) if length and length.strip().isdigit() else None
                        done = _copy_stream(resp, out, length or entry.size or None, progress)
                        if length is not None and done < length:
                            raise ConnectionError(f"download interrupted: the connection closed after {done} of "
                                                  f"{length} bytes")
                else:
                    log.info("copying %s from %s", entry.name, src)
                    with open(src, "rb") as fh:
                        _copy_stream(fh, out, os.path.getsize(src), progress)
            problem = check_file(tmp, entry)
            if problem:
                whose = "the mirror's copy" if src == mirror_src else "the upstream copy"
                fix = ("replace that file in the mirror, or use another mirror" if src == mirror_src
                       else "try again later or use a mirror")
                raise ModelError(f"{whose} of model {entry.name} at {shown} is bad: {problem}; nothing was "
                                 f"cached ({fix})")
            keep_owner_and_mode(tmp, target)
            os.replace(tmp, target)
            return target
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as e:
            errors.append(f"{shown}: {e!r}" if isinstance(e, http.client.HTTPException) else f"{shown}: {e}")
            log.warning("could not fetch %s from %s: %s", entry.name, shown, e)
        finally:
            if tmp.exists():
                tmp.unlink()
    raise InputMissingError(f"could not fetch model {entry.name}: " + "; ".join(errors) + _mirror_hint(mirror))


def looks_like_path(name: str) -> bool:
    """``--model`` names a file rather than a catalogue entry: a model suffix, a directory part, a
    leading dot, or an existing file with an extension (catalogue names have none), so
    ``--model clip.mp4`` is reported as not a model instead of an unknown catalogue name."""
    return (name.endswith((".tflite", ".pb")) or os.sep in name or name.startswith(".")
            or ("." in name and Path(name).expanduser().is_file()))


def resolve(name: str, cache_dir: Optional[Path] = None, mirror: str = "",
            progress: Optional[Progress] = None,
            catalogue: Optional[Dict[str, ModelEntry]] = None) -> Path:
    """``--model NAME|PATH`` to a verified local file (fetched on first use)."""
    if looks_like_path(name):
        p = Path(name).expanduser()
        if not p.is_file():
            raise InputMissingError(f"model file {name} {absent(p)}")
        return p
    catalogue = load_catalogue() if catalogue is None else catalogue
    if name not in catalogue:
        raise ConfigError(f"unknown model {name!r}: expected a path to a .tflite file or one of "
                          + ", ".join(catalogue))
    entry = catalogue[name]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = entry.cache_file(cache_dir)
    if target.is_file():
        clean_stale_parts(cache_dir)  # a killed `pull --force` of a cached model left its .part behind
        if entry.local_only:
            return target
        verify_file(target, entry)
        return target
    return fetch(entry, cache_dir, mirror, progress)


class CacheState(str, Enum):
    """A catalogue entry's file in the model cache (`edgepose models list` and `pull` show the value)."""

    NOT_CACHED = "not cached"
    BUILT = "built"  # a locally built model (not checked here: `edgepose models verify` does)
    CORRUPT = "CORRUPT"
    CACHED = "cached"


def cache_state(entry: ModelEntry, cache_dir: Path) -> CacheState:
    p = entry.cache_file(cache_dir)
    if not p.is_file():
        return CacheState.NOT_CACHED
    if entry.local_only:
        return CacheState.BUILT
    try:
        verify_file(p, entry)
    except ModelError:
        return CacheState.CORRUPT
    return CacheState.CACHED


def report_path(model_path: Path) -> Path:
    """The JSON report written beside a locally built model: ``<stem>.report.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.json")


def verify_local(path: Path, entry: Optional[ModelEntry] = None) -> None:
    """Check a locally built model against the sha256 its report recorded (``entry``: the
    catalogue entry it was built as, for the exact rebuild command)."""
    import json

    rp = report_path(path)
    rebuild = f"`{build_hint(entry)}`" if entry is not None else "`edgepose models quantize`"
    try:
        report = json.loads(rp.read_text())
        want = report["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{path} has no readable report {rp.name}; rebuild it with {rebuild}") from None
    got = sha256_of(path)
    if got != want:
        raise ModelError(f"checksum mismatch for {path}: sha256 {got}, its report says {want}; "
                         f"rebuild it with {rebuild}")


def catalogue_name_of(path: Path, catalogue: Optional[Dict[str, ModelEntry]] = None) -> Optional[str]:
    """The catalogue entry a model *file* is, so that a model given by path keeps its entry's output
    metadata (score scale, cut upsampling): the entry its build report names (``models quantize
    --out PATH``), if the report's sha256 is the file's, else the entry whose sha256 the file has (a
    copy of an upstream model).  None for a model of the user's own, or an unreadable file."""
    import json

    catalogue = load_catalogue() if catalogue is None else catalogue
    try:
        digest = sha256_of(Path(path))
    except OSError:
        return None
    try:
        report = json.loads(report_path(Path(path)).read_text())
        if report.get("sha256") == digest and report.get("model") in catalogue:
            return str(report["model"])
    except (OSError, ValueError, AttributeError, TypeError):  # no report, or not one of ours
        pass
    return next((n for n, e in catalogue.items() if e.sha256 and e.sha256 == digest), None)


def verify_cache(cache_dir: Path, catalogue: Optional[Dict[str, ModelEntry]] = None) -> List[tuple]:
    """(name, state) for every catalogue entry: "ok", "not cached" or the problem."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    out = []
    for name, entry in catalogue.items():
        p = entry.cache_file(Path(cache_dir))
        if not p.is_file():
            out.append((name, CacheState.NOT_CACHED.value))
            continue
        try:
            verify_local(p, entry) if entry.local_only else verify_file(p, entry)
            out.append((name, "ok"))
        except ModelError as e:
            out.append((name, f"BAD: {e}"))
    return out


def stderr_progress(stream: Optional[TextIO] = None) -> Progress:
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
