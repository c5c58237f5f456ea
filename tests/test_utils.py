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


def test_a_dangling_alternate_signal_stack_is_replaced():
    """What OpenVINO's CPU plugin can leave behind: the thread's alternate signal stack pointing at unmapped
    memory (a caught signal would then kill the process). `repair_signal_stack` installs a valid one; a valid
    stack is left alone."""
    import ctypes
    import mmap
    import sys

    from latvit.utils import _StackT, repair_signal_stack

    if not sys.platform.startswith("linux"):
        pytest.skip("sigaltstack checks are Linux-only")
    libc = ctypes.CDLL(None, use_errno=True)
    before = _StackT()
    libc.sigaltstack(None, ctypes.byref(before))
    size = 4 * mmap.PAGESIZE
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    try:
        assert libc.sigaltstack(ctypes.byref(_StackT(addr, 0, size)), None) == 0
        assert repair_signal_stack() is False  # mapped: valid, kept
        libc.munmap(addr, size)
        assert repair_signal_stack() is True
        now = _StackT()
        libc.sigaltstack(None, ctypes.byref(now))
        assert now.ss_sp != addr and now.ss_size >= 64 * 1024 and repair_signal_stack() is False
    finally:
        libc.sigaltstack(ctypes.byref(before), None)
