"""The `latvit` command: one subcommand per job, each a thin layer over the Python API.

Errors a user can fix (`LatvitError`) print one line `latvit: error: ...` and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from latvit.errors import LatvitError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# -- latvit models --------------------------------------------------------------------------------------
def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo: params, GFLOPs, input size, paper")
    p.add_argument("pattern", nargs="?", help="only names containing this text (or matching this glob)")
    p.add_argument("--family", help="only this family")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run_models)


def run_models(args) -> None:
    from latvit.models import list_models, model_card

    names = list_models(args.pattern, args.family)
    if not names:
        raise LatvitError(f"no model matches pattern={args.pattern!r} family={args.family!r}; run `latvit models`")
    cards = [model_card(name) for name in names]
    if args.json:
        print(json.dumps(cards, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"latvit models ({len(cards)})")
    table.add_column("model", no_wrap=True)
    table.add_column("family", no_wrap=True)
    for col in ("params (M)", "GFLOPs", "input", "top-1", "MES (size)"):
        table.add_column(col, justify="right")
    table.add_column("paper", no_wrap=True)
    for c in cards:
        table.add_row(c["name"], c["family"], f"{c['params_m']:.2f}", f"{c['gflops']:.2f}", str(c["img_size"]),
                      "" if c["top1"] is None else f"{c['top1']:.1f}", f"{c['mes_params']:.1f}", c["paper"])
    Console(width=max(Console().width, 110)).print(table)


# -- the command ------------------------------------------------------------------------------------------
SUBCOMMANDS = [add_models]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latvit", description="latency-first vision transformers")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from latvit import __version__

        print(__version__)
        return 0
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        args.run(args)
    except LatvitError as e:
        print(f"latvit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latvit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
