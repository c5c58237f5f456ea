"""The code's shape, checked like behaviour: layers import only downwards and siblings have no cycles
(import-linter, contracts in pyproject.toml), ruff's linter and formatter are clean, and latvit's own imports sit at the top of
files (a lazy `from latvit...` inside a function hides a dependency from import-linter's reader and from
the next engineer)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_layers_point_down_and_siblings_have_no_cycles():
    if shutil.which("lint-imports") is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = _run("lint-imports")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_ruff_is_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = _run("ruff", "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout[-3000:]
    result = _run("ruff", "format", "--check", ".")  # the formatter owns layout: `ruff format .` fixes this
    assert result.returncode == 0, result.stdout[-3000:]


def lazy_latvit_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`from latvit...` / `import latvit...` statements inside functions of `path`, as 'file:line'."""
    tree = ast.parse(path.read_text())
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "latvit" or n.startswith("latvit.") for n in names):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_latvit_imports_sit_at_the_top_of_files():
    offenders = [hit for f in sorted((ROOT / "latvit").rglob("*.py")) for hit in lazy_latvit_imports(f)]
    assert not offenders, f"move these latvit imports to the top of their files: {offenders}"


def test_the_checker_finds_a_lazy_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from latvit.errors import LatvitError\n    return LatvitError\n")
    assert lazy_latvit_imports(sample, root=tmp_path) == ["sample.py:4"]


def test_import_latvit_needs_no_optional_runtime():
    """`import latvit` works without onnxruntime, openvino, executorch, litert, coremltools, tensorrt."""
    blocked = [
        "onnxruntime",
        "openvino",
        "executorch",
        "ai_edge_litert",
        "litert_torch",
        "coremltools",
        "tensorrt",
        "optuna",
        "plotly",
        "asyncssh",
    ]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # an import of it now raises ImportError\n"
        "import latvit, latvit.cli\n"
        "print(latvit.create_model('mobilevit_xxs', img_size=64).spec.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "mobilevit_xxs" in result.stdout, result.stderr[-2000:]
