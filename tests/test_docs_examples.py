"""The examples in README.md and docs/ cannot drift from the code.

For every page (docs/notes/, the research log, excepted):
- every `latvit ...` command in a ```bash block parses with the real parser (a renamed flag or subcommand
  fails), and every run directory or table it reads (`runs/...`, `--lut`, `--init`) is made by an earlier
  command or Python block on the same page, or ships in the repository;
- every ```python block compiles, and its imports import;
- the blocks marked runnable (an HTML comment `<!-- runnable -->` on the line before the fence, invisible
  on the site and on GitHub) run, in page order, in a fresh directory, with Sybil: Python as written,
  `latvit` commands in process with the smoke flags of `SMOKE` appended (argparse keeps the last value, so
  they shrink epochs, calls and images without touching what the page shows).
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from latvit.cli import build_parser
from latvit.cli import main as cli
from latvit.data import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if "notes" not in p.parts)
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
# appended to runnable `latvit` commands: few calls, images and steps (the last value of a flag wins)
SMOKE = {
    "bench": [
        "--iters",
        "2",
        "--warmup",
        "1",
        "--min-seconds",
        "0",
        "--max-seconds",
        "1",
        "--plot",
        "",
        "--runtimes",
        "ort",
        "--sessions",
        "1",
    ],
    "train": [
        "--epochs",
        "1",
        "--img-size",
        "32",
        "--batch-size",
        "16",
        "--set",
        "train_subset=64",
        "--set",
        "val_subset=32",
        "--set",
        "num_workers=0",
        "--set",
        "progress=false",
        "--set",
        "warmup_epochs=0",
    ],
    "validate": ["--subset", "32"],
    "quantize": ["--calib-images", "4", "--val-images", "8", "--img-size", "64", "--no-compare"],
    "profile": ["--iters", "2"],
}
SEPARATORS = {"&&", "||", ";", "&", "|"}
# options whose value is a file or directory that an earlier command must have made
READS = {"lut": "--lut", "init": "--init"}


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path) -> list[tuple[str, str, bool]]:
    """(language, code, runnable) of every fenced block of a page, in order."""
    text = path.read_text()
    return [(m.group(1), m.group(2), text[: m.start()].rstrip().endswith(MARK)) for m in FENCE.finditer(text)]


def latvit_commands(code: str) -> list[list[str]]:
    """The argv of every `latvit ...` (or `python -m latvit ...`, `torchrun ... -m latvit ...`) in a shell block."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        segment: list[str] = []
        for token in tokens + [";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            if segment and segment[0] == "latvit":
                found.append(segment[1:])
            elif "-m" in segment and segment[segment.index("-m") + 1 :][:1] == ["latvit"]:
                found.append(segment[segment.index("-m") + 2 :])
            segment = []
    return found


def parse(argv: list[str]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`latvit {shlex.join(argv)}` does not parse: {err.getvalue().strip().splitlines()[-1]}")


def is_placeholder(path: str) -> bool:
    """Names the reader fills in (MY_IMAGEFOLDER, RUN/best, $R), absolute paths and URLs."""
    return path.startswith(("/", "$", "http")) or any(c.isupper() for c in path) or "..." in path


def made_by(args) -> list[str]:
    """Paths a parsed command writes."""
    made = [getattr(args, name) for name in ("out", "output") if isinstance(getattr(args, name, None), str)]
    data = getattr(args, "data", None)
    if args.command == "train" and getattr(args, "config", None) and not data and (ROOT / args.config).is_file():
        import yaml

        data = yaml.safe_load((ROOT / args.config).read_text()).get("data")
    if args.command == "train" and not args.output and args.model and data:
        from latvit.train.engine import default_output

        made.append(default_output(Path(args.model).stem, data))
    return made


def reads(args) -> list[str]:
    """Paths a parsed command reads that a page must make first: run directories under runs/, tables, --init."""
    wanted = [getattr(args, dest) for dest in READS if isinstance(getattr(args, dest, None), str)]
    for name in ("model", "models"):
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else value.split(",") if isinstance(value, str) else []
        wanted += [v for v in values if v.startswith("runs/")]
    return [w for w in wanted if not is_placeholder(w)]


def python_writes(code: str) -> list[str]:
    """Paths a Python block writes with latvit.save(..., "PATH") or .to_json("PATH"), or torch.save(..., "PATH")."""
    return re.findall(r"""(?:save\(.*,\s*|to_json\()["']([^"']+)["']\)""", code)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_parse_and_read_only_what_the_page_made(page):
    made: list[str] = []
    for language, code, _ in blocks(page):
        if language == "python":
            made += python_writes(code)
        if language not in ("bash", "sh", "shell"):
            continue
        for argv in latvit_commands(code):
            args = parse(argv)
            for path in reads(args):
                ok = (ROOT / path).exists() or any(path == m or path.startswith(m.rstrip("/") + "/") for m in made)
                assert ok, f"{page_id(page)}: `latvit {shlex.join(argv)}` reads {path}, which no earlier command makes"
            made += made_by(args)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_compile_and_their_imports_resolve(page):
    for language, code, _ in blocks(page):
        if language != "python":
            continue
        tree = ast.parse(code, filename=page_id(page))  # a SyntaxError names the page
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(imports, type_ignores=[]), page_id(page), "exec"), {})


RUNNABLE = [p for p in PAGES if any(runnable for _, _, runnable in blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_runnable_examples_run(page, tmp_path, monkeypatch, capsys):
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

    for package in ("onnxruntime", "openvino", "nncf"):
        pytest.importorskip(package)
    if "fashion-mnist" in page.read_text() and not FASHION_MNIST_DIR.is_dir():
        pytest.skip("needs Fashion-MNIST: apt-get install dataset-fashion-mnist")

    def run_shell(example) -> None:
        for line in example.parsed.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if not tokens or tokens[0] in ("pip", "apt-get", "sudo"):
                continue  # install steps
            assert tokens[0] == "latvit", f"runnable shell blocks hold latvit commands only: {line}"
            argv = tokens[1:] + SMOKE.get(tokens[1], [])
            code = cli(argv)
            assert code == 0, f"`latvit {shlex.join(tokens[1:])}` exited {code}:\n{capsys.readouterr().err[-2000:]}"

    def marked(parser):
        def parse_marked(document):
            for region in parser(document):
                if document.text[: region.start].rstrip().endswith(MARK):
                    yield region

        return parse_marked

    for shared in ("configs", "benchmarks"):  # pages refer to the repository's configs/ and benchmarks/
        (tmp_path / shared).symlink_to(ROOT / shared)
    monkeypatch.chdir(tmp_path)
    sybil = Sybil(parsers=[marked(PythonCodeBlockParser()), marked(CodeBlockParser("bash", run_shell))], path=str(ROOT))
    document = sybil.parse(page)
    examples = list(document)
    assert examples, f"{page_id(page)}: a runnable mark matched no python or bash block"
    for example in examples:
        example.evaluate()


def test_ci_runs_the_readme_test_command():
    """README's second command is what CI runs, word for word (a fresh venv can run it on its own)."""
    readme = (ROOT / "README.md").read_text()
    first_block = FENCE.search(readme).group(2)
    lines = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2 and "pytest" in lines[1], lines
    assert lines[1] in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_user_pages_keep_the_research_log_out(page):
    """Work sessions and issue numbers belong to docs/notes/, the research log, not to the user pages."""
    found = re.findall(r"\bsessions? \d+|\bissues? #?\d+|\bthe issue'?s?\b", page.read_text(), re.I)
    assert not found, f"{page_id(page)} mentions {found}: move that record to docs/notes/"
