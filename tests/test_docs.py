"""The README stays true: its configuration reference, the commands and flags it shows, .ci/run."""

import re

from edgepose import config
from edgepose.cli import COMMANDS

from conftest import REPO

README = (REPO / "README.md").read_text()
REGEN = ("regenerate with (from the repo root): "
         "python3 -c 'import sys; sys.path.insert(0, \"tests\"); import test_docs; test_docs.regenerate()'")


def _block():
    m = re.search(r"(<!-- config-reference:start[^>]*-->\n)(.*?)(<!-- config-reference:end -->)", README, re.S)
    assert m, "README lost its config-reference markers"
    return m


def regenerate():
    m = _block()
    text = README[:m.end(1)] + config.reference_markdown() + "\n" + README[m.start(3):]
    (REPO / "README.md").write_text(text)


def test_config_reference_in_readme_is_current():
    assert _block().group(2).strip() == config.reference_markdown().strip(), REGEN


def test_readme_commands_exist():
    for name in COMMANDS:
        assert f"`edgepose {name}" in README
    from edgepose.service import add_arguments
    import argparse
    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {a for action in p._actions for a in action.option_strings}
    shown = set(re.findall(r"`(--[a-z][a-z-]+)", README.split("## Commands", 1)[1].split("### Sources")[0]))
    assert shown and shown - {"--log-level"} <= flags, shown - flags


def test_ci_runs_the_readme_test_command():
    cmd = re.search(r"Run the tests:\n\n```sh\n(.+)\n```", README).group(1).strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert cmd in ci.splitlines()
