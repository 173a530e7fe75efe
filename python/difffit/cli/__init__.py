"""Command line: ``difffit fit | score | demo | info | composite | assemble | simulate | zero | identify |
train-simulator``.

Also available as ``python -m difffit``. Every subcommand module has ``register(sub)``,
which adds its parser(s) and sets ``_run(args, argv) -> int``. Bad input (a missing file,
an unreadable map, an existing output folder) gives a one-line message on stderr and exit
status 2, an OS error (disk full, permission denied) one line and status 1, never a
traceback; warnings are one line each, ``difffit: warning: ...``. No library module
imports this package.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from ..errors import DifffitInputError, DifffitWarning, cli_spelling
from . import assemble, composite, demo, fit, gmm, identify, score, simulate, train

__all__ = ["main", "build_parser"]

# In the order of ``difffit --help``.
_COMMANDS = (fit, score, demo, composite, assemble, simulate, identify, train, gmm)


class _Parser(argparse.ArgumentParser):
    """argparse's errors as every other bad input: one line, status 2, pointing to --help
    (not the whole usage first). Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"difffit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="difffit",
        description="Fit atomic structures into cryo-EM density maps by differentiable "
                    "rigid-body search (DiffFit).",
    )
    parser.add_argument("--version", action="version", version=f"difffit {__version__}")
    sub = parser.add_subparsers(dest="command")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def _err(msg: str) -> None:
    for line in str(msg).splitlines() or [""]:
        print(f"difffit: error: {line}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, ``difffit: warning: ...`` (other libraries' deprecation
    and runtime notices keep Python's format)."""
    if issubclass(category, UserWarning):
        print(f"difffit: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 ok, 1 an OS error or the demo
    failed, 2 bad input, 130 interrupted. No traceback is shown (``DIFFFIT_TRACEBACK=1``
    shows the one of an unexpected error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error (status 2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        # Messages name command-line options (--voxel-size, not voxel_size=).
        with cli_spelling(), warnings.catch_warnings():
            warnings.simplefilter("default", DifffitWarning)
            warnings.showwarning = _show_warning
            return int(args._run(args, argv))
    except (DifffitInputError, FileExistsError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except (OSError, MemoryError) as exc:  # disk full, permission denied, out of memory
        _err(f"{type(exc).__name__}: {exc}" if isinstance(exc, MemoryError) else str(exc))
        return 1
    except Exception as exc:  # a bug: one line, the traceback on request
        if os.environ.get("DIFFFIT_TRACEBACK"):
            raise
        _err(f"unexpected {type(exc).__name__}: {exc} (a bug in difffit: please report it "
             f"with the command; DIFFFIT_TRACEBACK=1 shows the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
