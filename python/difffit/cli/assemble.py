"""``difffit assemble``: place every subunit of a complex together, optimised jointly."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..params import AssembleParams
from .common import (add_device_argument, add_map_arguments, add_outdir_arguments,
                     add_search_arguments, add_structure_options, positive_float,
                     search_overrides)
from .composite import _copies_arg, add_symmetry_arguments, finish, read_inputs

_OPTIONS = (  # AssembleParams field, type, metavar, help
    ("n_candidates", int, "N", "placements of each structure's own fit kept as starts, per copy"),
    ("n_combos", int, "N", "configurations built from the own fits' candidates"),
    ("n_random", int, "N", "configurations with every unit at a random pose"),
    ("joint_iters", int, "N", "steps of the joint optimisation on the search pyramid"),
    ("refine_iters", int, "N", "steps of the joint refinement against the unsmoothed map"),
    ("clash_weight", float, "W", "weight of the penalty on density claimed twice"),
)


def register(sub) -> None:
    c = sub.add_parser(
        "assemble", help="place every subunit of a complex together (joint optimisation)",
        description="Fit each subunit alone, build configurations of all subunits from the "
                    "best placements (and random ones), optimise every configuration's poses "
                    "together (each subunit's map score minus a penalty on density claimed "
                    "twice) and keep the best. Outputs as composite: composite.cif (chains "
                    "<chain>_<input>_<copy>), composite.cxc, summary.csv/json, round folders.")
    add_map_arguments(c)
    c.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="subunits (PDB/mmCIF); all chains of a file move together")
    c.add_argument("--copies", type=_copies_arg, default=None, metavar="N|N1,N2,..",
                   help="copies of each subunit: one number for all, or one per structure "
                        "(default 1 each; with --symmetry: copies in the whole map)")
    add_symmetry_arguments(c)
    add_outdir_arguments(
        c, "assemble", force_help="start anew in a non-empty output folder",
        resume_help="continue the run in the output folder (skips the recorded own fits)")
    c.add_argument("--report", action="store_true", help="also write report.html")
    add_structure_options(c)
    add_device_argument(c)
    add_search_arguments(c)
    d = AssembleParams()
    for name, kind, metavar, text in _OPTIONS:
        flag = "--" + name.replace("n_", "", 1).replace("_", "-") if name.startswith("n_") \
            else "--" + name.replace("_", "-")
        c.add_argument(flag, dest=name, type=positive_float if kind is float else int,
                       default=getattr(d, name), metavar=metavar,
                       help=f"{text} (default: {getattr(d, name)})")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    c.set_defaults(_run=run)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..workflows.assemble import assemble

    map_path, outdir, dmap, structures, copies = read_inputs(args, "assemble")
    overrides = {**search_overrides(args), "device": args.device,
                 **{name: getattr(args, name) for name, *_ in _OPTIONS}}
    if not args.quiet:
        print(f"difffit: assembling {len(structures)} structure(s) in {map_path} at "
              f"{args.resolution:g} A -> {outdir}/", file=sys.stderr)
    result = assemble(dmap, structures, args.resolution, threshold=args.threshold,
                      copies=copies, symmetry=args.symmetry, symmetry_axis=args.symmetry_axis,
                      symmetry_centre=args.symmetry_centre, outdir=outdir, resume=args.resume,
                      force=args.force, progress=not args.quiet, **overrides)
    return finish(result, args, argv, outdir)
