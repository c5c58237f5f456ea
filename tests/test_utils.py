"""latvit.utils: atomic writes leave no partial files; the shared progress bar counts steps."""
from pathlib import Path

import pytest

from latvit.utils import atomic_write_text, progress_bar


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
