"""User-facing errors.

Everything a user can get wrong (a model name, a spec field, a checkpoint, an input size, a missing
optional runtime) raises a subclass of `LatvitError` whose message is one line naming the problem and
the fix. The CLI prints that line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class LatvitError(Exception):
    """Base class of the errors a user can cause and fix."""


class SpecError(LatvitError, ValueError):
    """A network spec is malformed or cannot be built at the requested input size."""


class CheckpointError(LatvitError):
    """A checkpoint cannot be read or does not match the model."""


class UnknownModelError(LatvitError, KeyError):
    """A model name that is not registered (the message suggests the closest names)."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class MissingExtraError(LatvitError, ImportError):
    """An optional runtime is not installed; the message names the extra to install."""


def missing_extra(package: str, extra: str) -> MissingExtraError:
    return MissingExtraError(f"{package} is not installed: pip install 'latvit[{extra}]'")


def first_line(error: BaseException, limit: int = 200) -> str:
    """A foreign exception as one line for a LatvitError message: its type, and its message's first line
    (some have none, e.g. EOFError('') from an empty file; some only a key, e.g. KeyError('101'))."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__
