"""Small helpers shared across latvit: atomic file writes, PNG output, progress bars."""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
import tempfile
from pathlib import Path

from latvit.errors import LatvitError, first_line


def check_writable(path: str | Path, *, directory: bool = False) -> None:
    """Raise a one-line LatvitError now if `path` cannot be written later: long jobs check their outputs
    before they start. A file (default: a directory there is an error) or, with `directory=True`, a
    directory to create or write into (a file there is an error). The nearest existing folder must be a
    directory where a file can really be created: it is probed with a temporary file, because permission
    bits do not tell (root passes os.access on /proc and on read-only mounts)."""

    path = Path(path)
    if any(len(part.encode()) > 255 for part in path.parts):  # before any stat(), which would raise
        raise LatvitError(f"cannot write {str(path)[:80]}...: a file or folder name is longer than 255 bytes")
    existing = None  # the nearest folder that exists, once found
    try:
        if path.is_dir() and not directory:
            raise LatvitError(f"cannot write {path}: it is a directory; give a file name")
        if path.exists() and not path.is_dir() and directory:
            raise LatvitError(f"cannot write into {path}: it is a file; give a directory")
        existing = path if path.is_dir() else next(p for p in path.absolute().parents if p.exists())
        if not existing.is_dir():
            raise LatvitError(f"cannot write {path}: {existing} is not a writable directory (it is a file)")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:  # e.g. a folder on the way that cannot be searched
        where = existing or e.filename or "a folder on the way"
        raise LatvitError(f"cannot write {path}: {where} is not a writable directory ({e.strerror})") from None


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` so that a killed process leaves either the old file or the new one.
    A path that cannot be written raises a one-line LatvitError (an OSError is not the user's bug).
    `mode` (e.g. 0o600 for a private file) is set before the file appears; default: what open() gives."""

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise LatvitError(f"cannot write {path}: {first_line(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp creates 0600; give the file the mode open() would
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # e.g. a directory at `path`, a full disk
            raise LatvitError(f"cannot write {path}: {first_line(e)}") from None
        raise


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode(), mode)


def save_png(fig, path, **savefig_kwargs) -> Path:
    """Render a matplotlib figure to PNG, close it, and write it atomically to `path`."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def rich_progress(*extra_columns, **options):
    """latvit's rich progress bar: label, bar, n/total, elapsed, ETA, then `extra_columns`; `options` go to
    `rich.progress.Progress` (console=, transient=)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *extra_columns,
        **options,
    )


class progress_bar:
    """A rich progress bar with ETA, or nothing when disabled (bench, LUT builds, predictor validation).

    `with progress_bar(on, total, title) as advance: advance("label")` marks the previous step done and
    shows the next one's label."""

    def __init__(self, enabled: bool, total: int, title: str):
        self.enabled, self.total, self.title = enabled, total, title
        self.bar, self.task, self.started = None, None, False

    def __enter__(self):
        if self.enabled and self.total:
            self.bar = rich_progress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.title, total=self.total)
        return self.advance

    def advance(self, label: str | None) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.advance(self.task)
        self.started = True
        if label is not None:
            self.bar.update(self.task, description=f"{self.title}: {label[:60]}")
        else:
            self.bar.update(self.task, description=self.title)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


# -- the alternate signal stack ----------------------------------------------------------------------------
class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_DISABLE, _MS_ASYNC, _PAGE = 2, 1, mmap.PAGESIZE
_SPARE_STACK: list = []  # latvit's replacement alternate stack, allocated once and never freed (see below)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def repair_signal_stack() -> bool:
    """Give this thread a valid alternate signal stack again if a native library left it pointing at memory
    it has since unmapped; returns whether it did.

    Why: OpenVINO's CPU plugin installs its own alternate signal stack on the thread that compiles a model
    and puts the previous one back when the compiled model is freed. When compiled models are freed in
    another order than they were made, the thread keeps a stack that no longer exists, and the next signal
    a Python handler catches on it (Ctrl-C; the SIGCHLD handler a torch DataLoader with workers installs)
    kills the process with SIGSEGV instead (the kernel cannot build the signal frame; measured: the test
    suite died so while waiting on a subprocess). latvit calls this after OpenVINO compiles and frees models;
    it is a no-op where the stack is valid, disabled, or the platform is not Linux."""
    if not sys.platform.startswith("linux"):
        return False
    libc = _libc()
    current = _StackT()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & _SS_DISABLE or not current.ss_sp:
        return False
    start = current.ss_sp - current.ss_sp % _PAGE
    if libc.msync(ctypes.c_void_p(start), ctypes.c_size_t(current.ss_sp + current.ss_size - start), _MS_ASYNC) == 0:
        return False  # mapped: valid
    if not _SPARE_STACK:
        _SPARE_STACK.append(ctypes.create_string_buffer(256 * 1024))  # room for AMX-sized signal frames
    spare = _SPARE_STACK[0]
    replacement = _StackT(ctypes.cast(spare, ctypes.c_void_p).value, 0, ctypes.sizeof(spare))
    return libc.sigaltstack(ctypes.byref(replacement), None) == 0
