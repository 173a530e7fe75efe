"""Exceptions and warnings raised by difffit, and the spelling of options in messages.

A message that recommends an option names it the way the caller gives it: on the command
line ``--voxel-size 1.38``, in Python ``voxel_size=1.38``. Messages build option names
with :func:`opt`; the command line runs inside :func:`cli_spelling`, so the same code
speaks both languages.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Any, Iterator

__all__ = ["DifffitInputError", "DifffitWarning", "opt", "cli_spelling", "warn"]


class DifffitInputError(ValueError):
    """Bad user input: a file that cannot be read, an empty selection, a bad shape.

    The message always names the offending file or argument and the problem.
    """


class DifffitWarning(UserWarning):
    """A result that may not mean what it seems: the input is legal but implausible (a
    model larger than the map, a voxel size that looks wrong, a best score no better than
    random placements). Filter it like any warning::

        warnings.simplefilter("ignore", difffit.DifffitWarning)   # or "error"
    """


_CLI = contextvars.ContextVar("difffit_cli_spelling", default=False)

# Python keyword -> command-line option, where the option is not ``--`` + the keyword
# with dashes.
_CLI_NAMES = {
    "n_rotations": "--rotations",
    "n_positions": "--positions",
    "n_iters": "--iterations",
    "outdir": "-o/--outdir",
    "overwrite": "--force",
    "score": "--score",
    "library": "--library",
}
# (keyword, value) -> option, for booleans whose option is the negation.
_CLI_FLAGS = {("refine", False): "--no-refine"}
_NO_VALUE = object()


def opt(name: str, value: Any = _NO_VALUE) -> str:
    """An option as the caller spells it.

    ``opt("voxel_size", 1.38)`` is ``--voxel-size 1.38`` on the command line and
    ``voxel_size=1.38`` in Python; ``opt("force", True)`` is ``--force`` / ``force=True``;
    ``opt("dust_min_size")`` is ``--dust-min-size`` / ``dust_min_size``.
    """
    if not _CLI.get():
        if value is _NO_VALUE:
            return name
        # A placeholder such as "V" or "N" (all capitals) stands for a value: unquoted.
        quote = isinstance(value, str) and not (value.isalpha() and value.isupper())
        return f"{name}={value!r}" if quote else f"{name}={value}"
    if (name, value) in _CLI_FLAGS:
        return _CLI_FLAGS[(name, value)]
    flag = _CLI_NAMES.get(name, "--" + name.replace("_", "-"))
    if value is _NO_VALUE or value is True:
        return flag
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"{flag} {value}"


def spelling_is_cli() -> bool:
    """Whether messages are being written for the command line."""
    return _CLI.get()


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within this block, :func:`opt` spells options as command-line flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue a :class:`DifffitWarning` (shown once per message by Python's default filter)."""
    warnings.warn(DifffitWarning(message), stacklevel=stacklevel + 1)
