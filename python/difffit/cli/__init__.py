"""Command line: ``difffit fit | demo | info | composite | simulate | zero | identify``.

Also available as ``python -m difffit``. Every subcommand module has ``register(sub)``,
which adds its parser(s) and sets ``_run(args, argv) -> int``. Bad input (a missing file,
an unreadable map, an existing output folder) gives a one-line message on stderr and exit
status 2, never a traceback. No library module imports this package.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import DifffitInputError
from . import composite, demo, fit, identify, simulate

__all__ = ["main", "build_parser"]

# In the order of ``difffit --help``.
_COMMANDS = (fit, demo, composite, simulate, identify)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
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
    print(f"difffit: error: {msg}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 demo failed, 2 bad input)."""
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
        return int(args._run(args, argv))
    except (DifffitInputError, FileExistsError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
