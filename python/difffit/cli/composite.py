"""``difffit composite``: place several subunits into one map, round after round."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from ..params import AcceptRules
from .common import (add_device_argument, add_map_arguments, add_outdir_arguments,
                     add_search_arguments, add_structure_options, check_device,
                     check_output_dir, command_line, default_outdir, point, positive_float,
                     positive_int, read_structures, search_overrides)


def _copies_arg(text: str) -> list[int | None] | int:
    """``2`` (all structures) or ``2,2,*`` (one per structure; ``*`` = open)."""
    parts = [p.strip() for p in text.split(",")]
    out: list[int | None] = []
    for p in parts:
        if p in ("*", "?", ""):
            out.append(None)
            continue
        try:
            v = int(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"copy numbers are integers or '*', got {p!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"copy numbers must be >= 1, got {v}")
        out.append(v)
    return out[0] if len(out) == 1 and out[0] is not None else out


# One option per AcceptRules field: (field, type, metavar, help); --min-score etc.
_RULE_OPTIONS = (
    ("min_score", "float", "S", "accept only scores (cam) >= S"),
    ("rel_score", "float", "F", "accept only scores >= F x the structure's best score"),
    ("min_inside", "float", "F", "least fraction of atoms in unexplained density"),
    ("clash_distance", "positive", "A", "CA-CA distance counted as a clash"),
    ("max_clash", "float", "F", "largest fraction of clashing CA atoms"),
    ("zero_fraction", "float", "F",
     "zero voxels where a placed copy's simulated map exceeds F x its maximum"),
    ("empty_rounds", "count", "N", "stop after N consecutive rounds that accept nothing"),
    ("max_rounds", "count", "N", "stop after N rounds"),
)


def add_symmetry_arguments(p: argparse.ArgumentParser) -> None:
    """--symmetry Cn|Dn|auto, --symmetry-axis, --symmetry-centre."""
    p.add_argument("--symmetry", default=None, metavar="Cn|Dn|auto",
                   help="the map's point symmetry: fit the asymmetric unit, generate and "
                        "check its symmetric copies (auto: find the order from the map)")
    p.add_argument("--symmetry-axis", type=point, default=None, metavar="X,Y,Z",
                   help="direction of the n-fold axis (default: found from the map)")
    p.add_argument("--symmetry-centre", "--symmetry-center", type=point, default=None,
                   metavar="X,Y,Z", dest="symmetry_centre",
                   help="a point on the axis, Angstrom (default: found from the map)")


def register(sub) -> None:
    c = sub.add_parser(
        "composite", help="place several subunits into one map, round after round",
        description="Fit all subunits, accept the best non-overlapping placements (score "
                    "floor, fraction of the structure's best score, atoms in unexplained "
                    "density, no CA clash), zero out the density they explain, refit the "
                    "rest; repeat until a round accepts nothing. Every round is written to "
                    "the output folder; the result is composite.cif (chains named "
                    "<chain>_<input>_<copy>) with a ChimeraX script.")
    add_map_arguments(c)  # MAP, -r, -t, --voxel-size
    c.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="subunits to place (PDB/mmCIF); all chains of a file move together")
    c.add_argument("--copies", type=_copies_arg, default=None, metavar="N|N1,N2,..",
                   help="copies to place at most: one number for all, or one per structure "
                        "('*' = open); default: open (until nothing more is accepted)")
    add_outdir_arguments(
        c, "composite",
        force_help="start anew in a non-empty output folder (its previous run is removed)",
        resume_help="continue the run recorded in the output folder after its last round")
    c.add_argument("--report", action="store_true", help="also write report.html")
    add_symmetry_arguments(c)
    add_structure_options(c)
    add_device_argument(c)
    add_search_arguments(c)
    types = {"float": float, "positive": positive_float, "count": positive_int}
    d = AcceptRules()
    for name, kind, metavar, text in _RULE_OPTIONS:
        c.add_argument("--" + name.replace("_", "-"), type=types[kind], default=getattr(d, name),
                       metavar=metavar, help=f"{text} (default: {getattr(d, name)})")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    c.set_defaults(_run=run)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..workflows.composite import composite

    map_path, outdir, dmap, structures, copies = read_inputs(args, "composite")
    overrides = {**search_overrides(args), "device": args.device}
    rules = AcceptRules(**{name: getattr(args, name) for name, *_ in _RULE_OPTIONS})
    if not args.quiet:
        print(f"difffit: composite of {len(structures)} structure(s) in {map_path} at "
              f"{args.resolution:g} A -> {outdir}/", file=sys.stderr)
    result = composite(dmap, structures, args.resolution, threshold=args.threshold,
                       copies=copies, outdir=outdir, resume=args.resume, force=args.force,
                       rules=rules, progress=not args.quiet, symmetry=args.symmetry,
                       symmetry_axis=args.symmetry_axis, symmetry_centre=args.symmetry_centre,
                       **overrides)
    return finish(result, args, argv, outdir)


def read_inputs(args: argparse.Namespace, workflow: str):
    """The inputs composite and assemble share, checked before any work: (map path, output
    folder, map, structures, copies)."""
    from ..maps import read_map

    check_device(args.device)
    map_path = Path(args.map)
    outdir = default_outdir(args, workflow)
    check_output_dir(outdir, files=("state.json", "composite.cif", "composite.cxc",
                                    "summary.csv", "summary.txt", "report.html",
                                    "command.txt"))
    dmap = read_map(map_path, voxel_size=args.voxel_size)
    structures = read_structures(args, args.structures)
    copies = args.copies
    if isinstance(copies, list) and len(copies) != len(structures):
        raise DifffitInputError(f"--copies: {len(copies)} numbers given for "
                                f"{len(structures)} structures")
    return map_path, outdir, dmap, structures, copies


def finish(result, args: argparse.Namespace, argv: Sequence[str], outdir: Path) -> int:
    """The command line, the report when asked, the summary and symmetry found."""
    from ..files import atomic_write
    from ..report import composite_report

    command = command_line(argv)
    atomic_write(outdir / "command.txt", command + "\n")
    if args.report:
        composite_report(result, outdir / "report.html", overwrite=True, command=command)
    if not args.quiet:
        print(result.summary_table())
    sym = getattr(result, "symmetry", None)
    if sym is not None:
        print(f"symmetry: {sym.describe()}")
    print(f"results written to {outdir}/ (open composite.cxc in ChimeraX)")
    return 0
