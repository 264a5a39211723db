"""The README stays true: its configuration reference, the commands and flags it shows, .ci/run."""

import re

from edgepose.cli import COMMANDS
from edgepose.core import config

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
    import argparse

    from edgepose.daemon.service import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {a for action in p._actions for a in action.option_strings}
    run_row = next(line for line in README.splitlines() if line.startswith("| `edgepose run` |"))
    shown = set(re.findall(r"`(--[a-z][a-z-]+)", run_row))
    assert shown and shown - {"--log-level"} <= flags, shown - flags
    assert {f for f in flags if f.startswith("--")} - {"--help"} <= shown, "run flags missing from the README"


def test_ci_runs_the_readme_test_command():
    cmd = re.search(r"Run the tests:\n\n```sh\n(.+)\n```", README).group(1).strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert cmd in ci.splitlines()


def test_installer_help_matches_the_deploy_guide():
    """`install.sh --help` prints its whole header (options and exit codes); docs/deploy.md's option table
    names the same options."""
    import subprocess
    out = {}
    for script in ("install.sh", "uninstall.sh"):
        run = subprocess.run(["bash", str(REPO / "deploy" / script), "--help"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        out[script] = run.stdout
    assert "Exit codes:" in out["install.sh"] and "1 the service failed to start." in out["install.sh"]
    assert "--purge" in out["uninstall.sh"] and "apt)." in out["uninstall.sh"]
    guide = (REPO / "docs" / "deploy.md").read_text()
    table = [line for line in guide.splitlines() if line.startswith("| `--")]
    documented = set(re.findall(r"`(--[a-z][a-z-]+)", "\n".join(table)))
    in_help = set(re.findall(r"(--[a-z][a-z-]+)", out["install.sh"])) - {"--no-index"}  # pip's, in --offline's text
    assert documented and documented == in_help


def test_readme_shows_the_quick_lane_with_a_registered_marker():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    m = re.search(r'```sh\n(python3 -m pytest -q -m "not (\w+)" tests)\n```', README)
    assert m, "README lost the quick lane command"
    pytest_conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_conf["addopts"]
    assert m.group(2) in {marker.split(":")[0] for marker in pytest_conf["markers"]}
