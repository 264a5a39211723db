"""benchmarks/ and research/ stay findable: every script is in its folder's README index, every
research script is cited by a document, and every `benchmarks/...` / `research/...` path cited
anywhere in the docs or the code exists; a benchmark uses no private name of the package, and each
script's imports of other scripts find them where it looks.  Reads files only (no model runs)."""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest

from conftest import REPO

FOLDERS = ("benchmarks", "research")
# a cited script path: benchmarks/<name>.py or research/<name>.sh, not preceded by another path part
CITED = re.compile(r"(?<![\w/.-])((?:benchmarks|research)/[\w/-]+\.(?:py|sh))\b")
INDEX_ROW = re.compile(r"^\| `([^`]+)` \|", re.M)


def scripts(folder: str) -> set:
    return {p.name for p in (REPO / folder).iterdir() if p.suffix in (".py", ".sh")}


def index(folder: str) -> list:
    return INDEX_ROW.findall((REPO / folder / "README.md").read_text())


def docs() -> list:
    """The documents: README.md, docs/*.md, models/README.md."""
    return [REPO / "README.md", REPO / "models" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def citing_files() -> list:
    """Everything that may cite a script path: the documents, both indexes, and the code's docstrings."""
    code = [p for d in ("edgepose", "tests", *FOLDERS) for p in sorted((REPO / d).rglob("*.py"))]
    return [*docs(), *(REPO / f / "README.md" for f in FOLDERS), *code]


def citations(text: str) -> list:
    return CITED.findall(text)


def test_citation_pattern_finds_paths_and_ignores_others():
    text = ("run `python3 benchmarks/pipeline.py --rounds 3` or PYTHONPATH=. research/flip_bias.py;\n"
            "not ../other/benchmarks/x.py, tests/test_x.py nor benchmarks/README.md")
    assert citations(text) == ["benchmarks/pipeline.py", "research/flip_bias.py"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_script_is_in_its_folders_index(folder):
    on_disk, listed = scripts(folder), index(folder)
    assert on_disk, f"no scripts found in {folder}/"
    assert len(listed) == len(set(listed)), f"{folder}/README.md lists a script twice: {sorted(listed)}"
    missing = sorted(on_disk - set(listed))
    assert not missing, f"{folder}/README.md's index does not list: {', '.join(missing)} (add a row '| `NAME` | ...')"
    stale = sorted(set(listed) - on_disk)
    assert not stale, f"{folder}/README.md's index lists scripts that do not exist: {', '.join(stale)}"


def test_every_cited_script_path_exists():
    found, broken = 0, []
    for f in citing_files():
        for n, line in enumerate(f.read_text().splitlines(), 1):
            for path in citations(line):
                found += 1
                if not (REPO / path).is_file():
                    broken.append(f"{f.relative_to(REPO)}:{n}: {path}")
    assert found > 20, f"only {found} script citations found: has the pattern stopped matching?"
    assert not broken, "cited script paths that do not exist:\n" + "\n".join(broken)


def test_every_research_script_is_cited_by_a_document():
    """A research script answers a question a document states; one that no document cites any
    more is deleted rather than kept."""
    cited = {path for f in docs() for path in citations(f.read_text())}
    uncited = sorted(n for n in scripts("research") if f"research/{n}" not in cited)
    assert not uncited, (f"research scripts no document (README.md, models/README.md, docs/*.md) cites: "
                         f"{', '.join(uncited)}; cite the claim each supports, or delete it")


def private_uses(source: str) -> list:
    """`from edgepose... import _x` and every `obj._x` attribute access (dunders aside)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "edgepose":
            out += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


def test_private_use_check_finds_both_forms():
    assert private_uses("from edgepose.inference.decode import DECODERS, _peaks\nq._tf()\nx.__class__\n") == [
        "line 1: import _peaks", "line 2: q._tf"]


def test_benchmarks_use_no_private_name():
    """A benchmark uses the package's public names; a script that needs a private one (`_x`)
    belongs in research/."""
    offenders = {p.name: private_uses(p.read_text()) for p in sorted((REPO / "benchmarks").glob("*.py"))}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"benchmarks using private names (use a public function or move to research/): {offenders}"


def test_scripts_import_their_siblings_from_where_they_look():
    """After a move, a script's imports of other scripts (clips, int8_error, tests/broker, ...) still
    find a file where it looks: a benchmark in benchmarks/ and tests/ (never research/), a research
    script also in research/.  Any other import is an installed package."""
    where = {d: {p.stem for p in (REPO / d).glob("*.py")} for d in ("benchmarks", "research", "tests")}
    looks = {"benchmarks": ("benchmarks", "tests"), "research": ("research", "benchmarks", "tests")}
    bad = []
    for folder in FOLDERS:
        for p in sorted((REPO / folder).glob("*.py")):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top == "benchmarks":  # `from benchmarks.pipeline import ...` with the repo on sys.path
                        top, dirs = name.split(".")[1], ("benchmarks",)
                    elif any(top in where[d] for d in where):
                        dirs = looks[folder]
                    elif importlib.util.find_spec(top) is not None:
                        continue
                    else:
                        dirs = looks[folder]
                    if not any(top in where[d] for d in dirs):
                        bad.append(f"{folder}/{p.name}:{node.lineno}: {name} (not in {', '.join(dirs)})")
    assert not bad, "scripts importing modules that are not where they look:\n" + "\n".join(bad)
