"""README's "Code map" matches the tree: every module and subpackage of edgepose/ is named in it,
everything it names exists, and every module keeps a one-line docstring saying what it is for.
Reads files only."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGE = REPO / "edgepose"
NAMED = re.compile(r"`(edgepose/[\w/]*?(?:\.py|/))`")


def code_map(readme: str) -> str:
    m = re.search(r"^## Code map\n(.*?)(?=^## )", readme, re.M | re.S)
    assert m, "README.md has no '## Code map' section"
    return m.group(1)


def named_in_map(section: str) -> set:
    """Module paths (`edgepose/x/y.py`) and subpackages (`edgepose/x/`) the map names."""
    return set(NAMED.findall(section))


def in_tree() -> set:
    """Every module of edgepose/ (`__init__.py` is its package's `edgepose/x/` line) and every subpackage."""
    out = set()
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(REPO).as_posix()
        if p.name == "__init__.py":
            if p.parent != PACKAGE:
                out.add(rel[:-len("__init__.py")])
        else:
            out.add(rel)
    return out


def test_map_parsing_finds_modules_and_packages():
    section = code_map("## Code map\n- `edgepose/core/`: x\n  - `edgepose/core/pose.py`: y\n`edgepose run`\n## Next\n")
    assert named_in_map(section) == {"edgepose/core/", "edgepose/core/pose.py"}


def test_code_map_names_every_module_of_the_tree():
    named, tree = named_in_map(code_map((REPO / "README.md").read_text())), in_tree()
    assert len(tree) > 30, f"only {len(tree)} modules found under {PACKAGE}"
    missing = sorted(tree - named)
    assert not missing, ("README.md's Code map does not name: " + ", ".join(missing) +
                         " (add a line '- `PATH`: what lives there' under its subpackage)")


def test_everything_the_code_map_names_exists():
    named = named_in_map(code_map((REPO / "README.md").read_text()))
    gone = sorted(n for n in named if not (REPO / n).exists())
    assert not gone, "README.md's Code map names modules that do not exist: " + ", ".join(gone)


def test_every_module_has_a_one_line_docstring():
    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text()))
        lines = (doc or "").strip().splitlines()
        if not lines or not lines[0].strip():
            bad.append(f"{p.relative_to(REPO)}: no module docstring")
        elif len(lines) > 1 and lines[1].strip():
            bad.append(f"{p.relative_to(REPO)}: the docstring's summary runs over more than one line")
    assert not bad, "modules need a one-line docstring saying what they are for:\n" + "\n".join(bad)
