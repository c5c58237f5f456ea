"""Bad inputs a new user gives every command: each is one line `latvit: error: ...` and exit 2, found before
any model is built (a model built here fails the test), and leaves no file behind.

The outputs a command writes are checked first (latvit.utils.check_writable); /proc and /sys stand for
paths that look fine by their permission bits (root passes os.access there) but cannot be created."""

import re
from pathlib import Path

import pytest
import timm

from latvit.cli import main
from latvit.errors import LatvitError
from latvit.space.builder import LatvitNet
from latvit.utils import check_writable

LINUX = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a regular file FILE, a directory DIR and a text file posing as a checkpoint; the CLI
    runs in it, and building a model (latvit's or timm's) raises."""
    (tmp_path / "FILE").write_text("x\n")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    monkeypatch.chdir(tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was reported")

    monkeypatch.setattr(LatvitNet, "__init__", no_model)
    monkeypatch.setattr(timm, "create_model", no_model)
    return tmp_path


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


BAD_OUTPUTS = [
    (["bench", "--models", "mobilevit_xxs", "--json", "/proc/x/y.json"], r"cannot write /proc/x/y.json: /proc is"),
    (
        ["bench", "--models", "mobilevit_xxs", "--json", "", "--csv", "FILE/rows.csv"],
        r"FILE is not a writable directory \(it is a file\)",
    ),
    (["export", "mobilevit_xxs", "--format", "onnx", "-o", "/proc/x/m.onnx"], r"cannot write /proc/x/m.onnx"),
    (["export", "mobilevit_xxs", "--format", "onnx", "-o", ""], r"cannot write \.: it is a directory; give a file"),
    (["profile", "mobilevit_xxs", "--json", "/proc/x/p.json"], r"cannot write /proc/x/p.json"),
    (["profile", "mobilevit_xxs", "--plot", "FILE/p.png"], r"cannot write FILE/p.png"),
    (["density", "--json", "/proc/x/d.json"], r"cannot write /proc/x/d.json"),
    (["density", "--plot", "DIR"], r"cannot write DIR: it is a directory; give a file name"),
    (["lut", "build", "--space", "mobilevit", "--out", "/proc/x/lut.json"], r"cannot write /proc/x/lut.json"),
    (["lut", "build", "--space", "mobilevit", "--out", "DIR"], r"cannot write DIR: it is a directory"),
    (["lut", "validate", "--lut", "missing.json", "--json", "/proc/x/v.json"], r"cannot write /proc/x/v.json"),
    (["lut", "validate", "--lut", "missing.json", "--plot", "FILE/v.png"], r"cannot write FILE/v.png"),
    (
        ["quantize", "mobilevit_xxs", "--runtime", "ort", "--calib", "synthetic", "-o", "/proc/x/q.onnx"],
        r"cannot write /proc/x/q.onnx",
    ),
    (["convert", "mobilevit_xxs", "text.pth", "FILE"], r"cannot write into FILE: it is a file; give a directory"),
    (["convert", "mobilevit_xxs", "text.pth", "/proc/x"], r"cannot write /proc/x: /proc is not a writable"),
    (["train", "mobilevit_xxs", "--data", "synthetic", "--output", "/proc/x"], r"cannot write /proc/x"),
    (["train", "mobilevit_xxs", "--data", "synthetic", "--output", "FILE"], r"cannot write into FILE: it is a file"),
    (["validate", "mobilevit_xxs", "--data", "synthetic", "--json", "/proc/x/v.json"], r"cannot write /proc/x/v.json"),
    (
        [
            "search",
            "--method",
            "nsga2",
            "--lut",
            "missing.json",
            "--target-ms",
            "1",
            "--data",
            "synthetic",
            "--output",
            "/sys/x",
        ],
        r"cannot write /sys/x: /sys is not a writable directory",
    ),
    (
        [
            "search",
            "--method",
            "nsga2",
            "--lut",
            "missing.json",
            "--target-ms",
            "1",
            "--data",
            "synthetic",
            "--output",
            "FILE",
        ],
        r"cannot write into FILE: it is a file",
    ),
]

BAD_SETTINGS = [
    (
        ["quantize", "mobilevit_xxs", "--runtime", "nope", "--calib", "synthetic", "-o", "q.onnx"],
        r"int8 quantization is implemented for .*, not 'nope'",
    ),
    (
        [
            "quantize",
            "mobilevit_xxs",
            "--runtime",
            "openvino",
            "--calib",
            "synthetic",
            "-o",
            "q.xml",
            "--max-drop",
            "-1",
        ],
        r"max_drop >= 0 \(top-1 points\), got -1",
    ),
    (
        ["quantize", "mobilevit_xxs", "--runtime", "ort", "--calib", "synthetic", "-o", "q.onnx", "--recipe", "fast"],
        r"unknown quantization recipe 'fast'",
    ),
    (
        ["validate", "mobilevit_xxs", "--data", "synthetic", "--device", "nope"],
        r"unknown device 'nope'; use auto, cpu, cuda or cuda:N",
    ),
    (["profile", "mobilevit_xxs", "--warmup", "-1"], r"argument --warmup: expected an integer >= 0, got -1"),
    (["lut", "build", "--space", "mobilevit", "--calibrate", "-1"], r"argument --calibrate: expected an integer >= 0"),
]


@LINUX
@pytest.mark.parametrize(
    "argv, message", BAD_OUTPUTS + BAD_SETTINGS, ids=[" ".join(a)[:60] for a, _ in BAD_OUTPUTS + BAD_SETTINGS]
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(argv, message, workdir, capsys):
    before = sorted(p.name for p in workdir.iterdir())
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(("latvit: error: ", "latvit ")), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written, no output folder made


@LINUX
def test_check_writable_probes_the_folder_instead_of_trusting_permission_bits(tmp_path):
    with pytest.raises(LatvitError, match=r"cannot write /proc/x/y.json: /proc is not a writable directory"):
        check_writable("/proc/x/y.json")
    with pytest.raises(LatvitError, match=r"cannot write /proc/run: /proc is not a writable directory"):
        check_writable("/proc/run", directory=True)
    with pytest.raises(LatvitError, match=r"name is longer than 255 bytes"):
        check_writable(tmp_path / ("a" * 300) / "x.json")
    (tmp_path / "run").mkdir()
    check_writable(tmp_path / "run", directory=True)  # an existing run directory: written into
    check_writable(tmp_path / "new" / "run", directory=True)  # created when written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the probe leaves nothing behind
