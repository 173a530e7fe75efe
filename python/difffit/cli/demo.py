"""``difffit demo`` (a fit that needs no input) and ``difffit info`` (version and build)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .common import add_device_argument, add_outdir_arguments, check_device, check_output_dir
from .fit import FIT_OUTPUTS


def register(sub) -> None:
    d = sub.add_parser(
        "demo", help="fit an ideal protein into a simulated map (no download)",
        description="Build a small ideal protein, simulate a noisy map with two copies at "
                    "random poses, fit, and check both copies are recovered. Exit status 0 "
                    "when they are, 1 otherwise.",
    )
    add_outdir_arguments(d, None, force_help="write into an existing non-empty output folder")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_device_argument(d)
    d.add_argument("--quick", action="store_true", help="a reduced search (seconds)")
    d.set_defaults(_run=run_demo)

    i = sub.add_parser("info", help="version, build and device information",
                       description="Print difffit's version, what its kernels were built with, "
                                   "the torch version and whether a CUDA GPU is usable.")
    i.set_defaults(_run=run_info)


def run_demo(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..demo import run_demo as demo
    from ..runs import check_outdir

    check_device(args.device)
    if args.outdir:
        check_outdir(Path(args.outdir), args.force)
        check_output_dir(Path(args.outdir), files=FIT_OUTPUTS, folders=("models",))
    out = demo(outdir=args.outdir, seed=args.seed, device=args.device, quick=args.quick,
               force=args.force)
    return 0 if out["recovered"] == out["n_copies"] else 1


def run_info(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import platform

    import torch

    from .. import __version__

    print(f"difffit {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    try:
        from .._ext import build_info

        info = build_info()
    except ImportError as exc:
        print(f"build_info: compiled kernels unavailable: {exc}")
        return 1
    print("build_info:")
    for k, v in info.items():
        print(f"  {k}: {v}")
    return 0
