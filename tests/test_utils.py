"""latvit.utils: atomic writes leave no partial files; the shared progress bar counts steps."""
from pathlib import Path

import pytest

from latvit.errors import LatvitError
from latvit.utils import atomic_write_text, check_writable, progress_bar


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(AttributeError):
        atomic_write_text(path, None)  # type: ignore[arg-type]  # fails while encoding, before the rename
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_outputs_are_one_line_errors(tmp_path: Path, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LatvitError, match="cannot write .*adir: IsADirectoryError"):
        atomic_write_text(tmp_path / "adir", "text")
    with pytest.raises(LatvitError, match="cannot write .*x.json: .* NotADirectoryError|cannot write .*x.json"):
        atomic_write_text(tmp_path / "afile" / "x.json", "text")
    with pytest.raises(LatvitError, match="it is a directory"):
        check_writable(tmp_path / "adir")
    with pytest.raises(LatvitError, match="is not a writable directory"):
        check_writable(tmp_path / "afile" / "x.json")
    check_writable(tmp_path / "new" / "deeper" / "x.json")  # created when written
    from latvit.cli import main

    # checked before the first measurement (it used to fail with a traceback after the first row)
    assert main(["bench", "--models", "mobilevit_xxs", "--json", str(tmp_path / "adir")]) == 2
    assert "it is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_progress_bar_marks_previous_step_done_and_shows_the_label():
    with progress_bar(True, 3, "bench") as advance:
        bar = advance.__self__
        advance("model a")
        advance("model b")
        task = bar.bar.tasks[0]
        assert task.completed == 1 and task.total == 3
        assert task.description == "bench: model b"
    assert bar.bar.finished is False  # stopped, not completed: the third step never started


def test_progress_bar_disabled_is_silent(capsys):
    with progress_bar(False, 3, "bench") as advance:
        advance("x")
        assert advance.__self__.bar is None
    assert capsys.readouterr().err == ""
