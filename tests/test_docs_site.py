"""The documentation site builds with `mkdocs build --strict` (broken links, missing pages and API names that
no longer exist all fail it), and its CLI reference, generated from the parser, covers every subcommand and
every flag."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latvit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def load_hook():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_covers_every_subcommand_and_flag():
    page = load_hook().render_cli_reference()

    def walk(parser: argparse.ArgumentParser, prefix: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{prefix} {name}", sub
                    yield from walk(sub, f"{prefix} {name}")

    commands = list(walk(build_parser(), "latvit"))
    assert len(commands) >= 10
    for command, sub in commands:
        assert f"`{command}`" in page, command
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in page, f"{command} {flag}"


def test_site_builds_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for page in (
        "index.html",
        "getting-started/index.html",
        "reference/cli/index.html",
        "reference/api/index.html",
        "notes/index.html",
        "changelog/index.html",
    ):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "latvit.models.create_model" in api and "latvit.pipeline.export.export_model" in api


def test_license_citation_and_changelog():
    import yaml

    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(cff) and cff["license"] == "Apache-2.0"
    from latvit import __version__

    assert str(cff["version"]) == __version__
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
