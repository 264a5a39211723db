"""The package's import boundaries, checked: `edgepose run` never pulls in the build subpackage or
TensorFlow (statically, over every import the daemon could reach, and by running it), nothing outside
edgepose/build and edgepose/tools imports edgepose.build, and the module import graph has no cycle.

The graph is read from the source (tests/imports_util.py: every ``import`` and ``from ... import``,
module-level or inside a function, and the modules the CLI imports by name), so a lazy import the
tests never execute counts.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

from edgepose.cli import ALIASES, COMMANDS

from conftest import REPO, VIDEOS, cli_env
from imports_util import import_graph, imported_names, module_files, parse, reachable

BUILD = "edgepose.build"
FORBIDDEN_IN_RUN = (BUILD, "tensorflow")


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_and_by_name_imports():
    """The reader itself: lazy imports and the CLI's by-name commands are edges (else the checks below
    would pass on a graph that misses them)."""
    graph = import_graph()
    assert "edgepose.tools.sub" in graph["edgepose.cli"]  # COMMANDS: imported with importlib by name
    assert "edgepose.build.quantize" in graph["edgepose.tools.modelcmd"]  # inside a function
    assert "tensorflow" in graph["edgepose.build.quantize"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_only_build_and_tools_import_the_build_subpackage_or_tensorflow():
    offenders = {m: sorted(t for t in targets if t.startswith(FORBIDDEN_IN_RUN))
                 for m, targets in import_graph().items()
                 if not m.startswith((BUILD, "edgepose.tools"))}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_nothing_the_daemon_can_import_reaches_build_or_tensorflow():
    """Every module `edgepose run` could import, following lazy imports on paths no test takes."""
    graph = import_graph()
    run_module = "edgepose.daemon.service"
    assert graph["edgepose.cli"] >= {run_module}
    reach = reachable(graph, run_module) | {"edgepose.cli", "edgepose.core.errors", "edgepose.core.logs"}
    assert sorted(m for m in reach if m.startswith(FORBIDDEN_IN_RUN + ("edgepose.tools",))) == []


# Run as `python -c`: records every import statement the process executes (even one that fails, as a
# `try: import tensorflow` would on a board without it), then runs the CLI's main as `edgepose` does.
RECORDER = """
import json, sys
seen = set()
class Recorder:
    def find_spec(self, name, path=None, target=None):
        seen.add(name)
        return None
sys.meta_path.insert(0, Recorder())
from edgepose import cli
try:
    rc = cli.main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump({"attempted": sorted(seen), "loaded": sorted(sys.modules)}, f)
sys.exit(rc)
"""


def test_edgepose_run_on_a_clip_imports_neither_build_nor_tensorflow(model_cache, tmp_path):
    record = tmp_path / "imports.json"
    r = subprocess.run([sys.executable, "-c", RECORDER, str(record), "run", "--source", str(VIDEOS / "demo.mp4"),
                        "--model", "hourglass", "--threads", "1", "--max-frames", "5"],
                       env=cli_env(model_cache), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == 5  # it did run: one payload per frame
    seen = json.loads(record.read_text())
    assert "edgepose.daemon.service" in seen["loaded"] and "cv2" in seen["loaded"]  # the recorder works
    for kind in ("attempted", "loaded"):
        assert [m for m in seen[kind] if m.startswith(FORBIDDEN_IN_RUN)] == [], kind


# --- the quick lane (-m "not slow") touches every module ------------------------------------------------

TESTS = REPO / "tests"
CLI_RUNNERS = ("run_cli", "run_cli_inproc")


def _marks_slow(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Attribute) and n.attr == "slow") or (isinstance(n, ast.Name) and n.id == "slow")
               for n in ast.walk(node))


def quick_lane_files() -> List[Path]:
    """Test files with at least one test the quick lane runs: not marked slow by the file's
    ``pytestmark`` nor by its own decorators (a parametrize with a slow case counts as slow)."""
    files = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = parse(path)
        file_slow = any(isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                           for t in st.targets) and _marks_slow(st.value)
                        for st in tree.body)
        tests = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]
        if not file_slow and any(not any(_marks_slow(d) for d in f.decorator_list) for f in tests):
            files.append(path)
    return files


def touched_by(path: Path, graph: Dict[str, Set[str]]) -> Set[str]:
    """The edgepose modules loaded by importing test file ``path`` (and the tests/ helpers it imports)
    and by the CLI commands it runs (`run_cli(["models", ...])`): each with what it imports at import."""
    start: Set[str] = set()
    helpers, seen_helpers = [path], set()
    while helpers:
        p = helpers.pop()
        if p in seen_helpers:
            continue
        seen_helpers.add(p)
        tree = parse(p)
        for name in imported_names(p.stem, p, at_import=True):
            if (TESTS / f"{name}.py").is_file():
                helpers.append(TESTS / f"{name}.py")
            elif name.startswith("edgepose"):
                start.add(name)
        for word in cli_commands_run(tree):
            start |= {"edgepose.cli", COMMANDS[word][0]}
    touched: Set[str] = set()
    for name in start:
        while name and name not in graph:
            name = name.rpartition(".")[0]
        if name:
            touched |= reachable(graph, name)
    parents = {m.rsplit(".", i)[0] for m in touched for i in range(1, m.count(".") + 1)}  # importing a.b.c
    return {m for m in touched | parents if m in graph}


def cli_commands_run(tree: ast.AST) -> Set[str]:
    """The subcommands a test file runs: ``run_cli(["models", ...])`` / ``run_cli_inproc([...])`` and
    ``[sys.executable, "-m", "edgepose.cli", "view", ...]`` for a process it starts itself."""
    words = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CLI_RUNNERS
                and node.args and isinstance(node.args[0], ast.List)):
            elts = node.args[0].elts[:1]
        elif isinstance(node, ast.List):
            consts = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            elts = node.elts[consts.index("edgepose.cli") + 1:][:1] if "edgepose.cli" in consts else []
        else:
            continue
        for e in elts:
            if isinstance(e, ast.Constant) and ALIASES.get(e.value, e.value) in COMMANDS:
                words.add(ALIASES.get(e.value, e.value))
    return words


def test_the_quick_lane_touches_every_module():
    graph = import_graph(at_import=True)
    quick = quick_lane_files()
    assert TESTS / "test_boundaries.py" in quick and TESTS / "test_rehearsal.py" not in quick
    assert "edgepose.tools.viewer" in touched_by(TESTS / "test_viewer.py", graph)  # a `view` process it starts
    assert "edgepose.build.quantize" not in touched_by(TESTS / "test_smoothing.py", graph)
    touched: Set[str] = set()
    for path in quick:
        touched |= touched_by(path, graph)
    assert sorted(set(module_files()) - touched) == []
