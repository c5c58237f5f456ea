"""`latvit models` and the CLI's error contract: one line, exit code 2, no traceback."""

import json
import subprocess
import sys

import latvit
from latvit.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "latvit", *args], capture_output=True, text=True, timeout=300)


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in cards]
    assert names == latvit.list_models()
    l1 = cards[names.index("efficientformer_l1")]
    assert l1["img_size"] == 224 and abs(l1["params_m"] - 12.29) < 0.01 and l1["top1"] == 79.2
    assert l1["gflops"] == round(latvit.spec_cost(latvit.get_spec("efficientformer_l1")).flops / 1e9, 3)


def test_models_table(capsys):
    assert main(["models", "mobilevit"]) == 0
    out = capsys.readouterr().out
    assert "mobilevit_xxs" in out and "efficientformer_l1" not in out


def test_unknown_pattern_is_one_line_error():
    result = run_cli("models", "nosuchmodel")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("latvit: error: no model matches")
