"""Command line: ``difffit fit``, ``difffit demo``, ``difffit info`` and the workflow
subcommands that modules listed in ``_WORKFLOW_MODULES`` register.

Also available as ``python -m difffit``. Bad input (a missing file, an unreadable map,
an existing output folder) gives a one-line message on stderr and exit status 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import Sequence

from .errors import DifffitInputError

__all__ = ["main", "build_parser"]

# Modules of difffit that add subcommands (each defines add_cli(subparsers)).
_WORKFLOW_MODULES: tuple[str, ...] = ("identify", "composite")

_METRICS = ("correlation", "cam", "overlap", "atom_correlation", "atom_cam", "atom_overlap",
            "inside_fraction", "mean_density", "pyramid_score")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def _voxel_size(text: str) -> list[float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"one number or three (x,y,z), got {text!r}")
    return [_positive_float(p) for p in parts]


def _chains(text: str) -> list[str]:
    chains = [c.strip() for c in text.split(",") if c.strip()]
    if not chains:
        raise argparse.ArgumentTypeError(f"no chain names in {text!r}")
    return chains


def add_map_arguments(p: argparse.ArgumentParser) -> None:
    """The target map's options every fitting subcommand shares: MAP (positional),
    -r/--resolution, -t/--threshold, --voxel-size."""
    p.add_argument("map", metavar="MAP", help="density map (MRC/CCP4, optionally .gz)")
    p.add_argument("-r", "--resolution", type=_positive_float, required=True,
                   help="map resolution in Angstrom")
    p.add_argument("-t", "--threshold", type=float, default=None,
                   help="contour level in map units (default: map mean + 1 standard deviation)")
    p.add_argument("--voxel-size", type=_voxel_size, default=None, metavar="V",
                   help="override the map header's voxel size: V or Vx,Vy,Vz Angstrom")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The search options every fitting subcommand shares: --seed, --rotations,
    --positions, --iterations, --no-refine, --refine-top (see :func:`search_overrides`)."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--rotations", type=_positive_int, default=None, metavar="N",
                   help="rotations per start position (default: 100)")
    p.add_argument("--positions", type=_positive_int, default=None, metavar="N",
                   help="start positions per structure (default: 10)")
    p.add_argument("--iterations", type=_positive_int, default=None, metavar="N",
                   help="gradient steps (default: 200)")
    p.add_argument("--no-refine", action="store_true",
                   help="skip the local refinement of the cluster representatives")
    p.add_argument("--refine-top", type=_positive_int, default=None, metavar="N",
                   help="clusters refined per structure, best first (default: 32)")


def search_overrides(args: argparse.Namespace) -> dict:
    """FitParams fields from the options of :func:`add_search_arguments` (those given)."""
    out = {"seed": args.seed, "refine": not args.no_refine}
    for key, value in (("n_rotations", args.rotations), ("n_positions", args.positions),
                       ("n_iters", args.iterations), ("refine_top", args.refine_top)):
        if value is not None:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="difffit",
        description="Fit atomic structures into cryo-EM density maps by differentiable "
                    "rigid-body search (DiffFit).",
    )
    parser.add_argument("--version", action="version", version=f"difffit {__version__}")
    sub = parser.add_subparsers(dest="command")

    f = sub.add_parser(
        "fit", help="fit structures into a map",
        description="Fit one or more structures into a map; write ranked placements, fitted "
                    "models, a ChimeraX script, trajectories and a log to the output folder.",
    )
    add_map_arguments(f)
    f.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="structures to fit (PDB/mmCIF, optionally .gz)")
    f.add_argument("--selection", choices=("backbone", "ca", "heavy", "all"), default="backbone",
                   help="atoms used for fitting (default: backbone)")
    f.add_argument("--chains", type=_chains, default=None, metavar="A,B",
                   help="keep only these chains of every structure")
    f.add_argument("--split-chains", action="store_true",
                   help="fit every chain as a structure of its own")
    f.add_argument("--keep-waters", action="store_true", help="keep water molecules")
    f.add_argument("--keep-ligands", action="store_true", help="keep ligands and ions")
    f.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    f.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="output folder (default: difffit_out/<map name>)")
    f.add_argument("--force", action="store_true",
                   help="write into an existing non-empty output folder")
    f.add_argument("--top", type=int, default=3, metavar="N",
                   help="fitted models written per structure (default: 3)")
    f.add_argument("--model-format", choices=("cif", "pdb"), default="cif",
                   help="format of the fitted models (default: cif)")
    add_search_arguments(f)
    f.add_argument("--rank-by", choices=_METRICS, default=None,
                   help="metric that ranks the placements (default: cam)")
    f.add_argument("--report", action="store_true",
                   help="also write report.html: ranked tables and plots, one self-contained file")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    d = sub.add_parser(
        "demo", help="fit an ideal protein into a simulated map (no download)",
        description="Build a small ideal protein, simulate a noisy map with two copies at "
                    "random poses, fit, and check both copies are recovered. Exit status 0 "
                    "when they are, 1 otherwise.",
    )
    d.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="also write the fit outputs and the map here")
    d.add_argument("--force", action="store_true",
                   help="write into an existing non-empty output folder")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    d.add_argument("--quick", action="store_true", help="a reduced search (seconds)")

    sub.add_parser("info", help="version, build and device information",
                   description="Print difffit's version, what its kernels were built with, "
                               "the torch version and whether a CUDA GPU is usable.")
    # Workflow modules register their own subcommands: each has add_cli(sub), which adds a
    # parser and sets its default ``_run(args, argv) -> int``.
    for name in _WORKFLOW_MODULES:
        importlib.import_module(f"difffit.{name}").add_cli(sub)
    return parser


def _err(msg: str) -> None:
    print(f"difffit: error: {msg}", file=sys.stderr)


def _check_device(device: str) -> None:
    import torch

    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise DifffitInputError(f"--device must be cpu or cuda, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DifffitInputError("--device cuda: torch sees no CUDA GPU; use --device cpu")


def _cmd_fit(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .io import read_map, read_structure, split_chains
    from .output import _check_outdir, summary_table, write_fit_outputs

    _check_device(args.device)
    if args.top < 0:
        raise DifffitInputError(f"--top must be >= 0, got {args.top}")
    map_path = Path(args.map)
    outdir = Path(args.outdir) if args.outdir else Path("difffit_out") / _map_stem(map_path)
    # Refuse an occupied output folder before spending minutes fitting.
    _check_outdir(outdir, args.force)

    dmap = read_map(map_path, voxel_size=args.voxel_size)
    structures = []
    for path in args.structures:
        s = read_structure(path, selection=args.selection, chains=args.chains,
                           keep_waters=args.keep_waters, keep_ligands=args.keep_ligands)
        structures.extend(split_chains(s) if args.split_chains else [s])
    if not structures:
        raise DifffitInputError("no structure left to fit (every chain was skipped)")

    from .fit import fit

    overrides = {**search_overrides(args), "device": args.device}
    if args.rank_by is not None:
        overrides["rank_by"] = args.rank_by
    if not args.quiet:
        print(f"difffit: fitting {len(structures)} structure(s) into {map_path} "
              f"({'x'.join(map(str, dmap.shape_xyz))} voxels) at {args.resolution:g} A",
              file=sys.stderr)
    result = fit(dmap, structures, args.resolution, threshold=args.threshold,
                 progress=not args.quiet, **overrides)
    command = "difffit " + " ".join(shlex.quote(a) for a in argv)
    paths = write_fit_outputs(result, outdir, top=args.top, model_format=args.model_format,
                              force=args.force, command=command, report=args.report)
    if not args.quiet:
        print(summary_table(result, top=args.top or 3))
        t = result.timings
        print(f"\n{len(result.placements)} placements in {t.get('total', float('nan')):.1f} s "
              f"(threshold {result.threshold:.4g})")
    print(f"results written to {paths['outdir']}/ (open {paths['cxc'].name} in ChimeraX)")
    if "report" in paths:
        print(f"report: {paths['report']}")
    return 0


def _map_stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem or "map"


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _check_device(args.device)
    if args.outdir:
        from .output import _check_outdir

        _check_outdir(Path(args.outdir), args.force)
    out = run_demo(outdir=args.outdir, seed=args.seed, device=args.device, quick=args.quick,
                   force=args.force)
    return 0 if out["recovered"] == out["n_copies"] else 1


def _cmd_info() -> int:
    import platform

    import torch

    from . import __version__

    print(f"difffit {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    try:
        from ._ext import build_info

        info = build_info()
    except ImportError as exc:
        print(f"build_info: compiled kernels unavailable: {exc}")
        return 1
    print("build_info:")
    for k, v in info.items():
        print(f"  {k}: {v}")
    return 0


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
        if args.command == "fit":
            return _cmd_fit(args, argv)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "info":
            return _cmd_info()
        return int(args._run(args, argv))
    except (DifffitInputError, FileExistsError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
