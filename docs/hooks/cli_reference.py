"""MkDocs hook: pages generated at build time from the code, so they cannot drift from it.

- `reference/cli.md`: every `latvit` subcommand, its usage and options, rendered from the argparse parser
  that the command itself runs (`latvit.cli.build_parser`).
- `changelog.md`: the repository's CHANGELOG.md.

`render_cli_reference()` is also what the tests call to check that the page covers every subcommand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INTRO = """# Command-line reference

Generated from the parser that `latvit` runs (`latvit.cli.build_parser`), so every flag here exists.
`latvit COMMAND --help` prints the same. Errors a user can fix are one line, `latvit: error: ...`, with
exit status 2.
"""


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(full command, parser, one-line help) for every subcommand under `parser`, depth first, in order."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                command = f"{prefix} {name}"
                found.append((command, sub, helps.get(name) or ""))
                found.extend(_subcommands(sub, command))
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                name += f" `{action.metavar or action.dest.upper()}`"
        else:
            name = f"`{action.metavar or action.dest}`"
        help_text = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            help_text += " (required)"
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            help_text += f" (choices: {', '.join(map(str, action.choices))})"
        rows.append(f"| {name} | {_cell(help_text)} |")
    return rows


def render_cli_reference() -> str:
    """The CLI reference page as Markdown."""
    from latvit.cli import build_parser

    parser = build_parser()
    parts = [INTRO]
    for command, sub, one_line in _subcommands(parser, "latvit"):
        depth = command.count(" ")
        parts.append(f"{'#' * (depth + 1)} `{command}`\n")
        if sub.description or one_line:
            parts.append(_cell(sub.description or one_line) + "\n")
        usage = sub.format_usage().replace("usage: ", "", 1).strip()
        parts.append(f"```text\n{usage}\n```\n")
        rows = _option_rows(sub)
        if rows:
            parts.append("| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def on_files(files, config):
    """Add the generated pages to the site (mkdocs calls this before reading the pages)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=render_cli_reference()))
    changelog = (ROOT / "CHANGELOG.md").read_text()
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
