"""``difffit fit``: fit structures into a map and write the results."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import DifffitInputError
from ..params import METRICS
from .common import (add_device_argument, add_map_arguments, add_search_arguments,
                     add_structure_options, check_device, command_line, default_outdir,
                     search_overrides)


def register(sub) -> None:
    f = sub.add_parser(
        "fit", help="fit structures into a map",
        description="Fit one or more structures into a map; write ranked placements, fitted "
                    "models, a ChimeraX script, trajectories and a log to the output folder.",
    )
    add_map_arguments(f)
    f.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="structures to fit (PDB/mmCIF, optionally .gz)")
    add_structure_options(f)
    f.add_argument("--split-chains", action="store_true",
                   help="fit every chain as a structure of its own")
    add_device_argument(f)
    f.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="output folder (default: difffit_out/<map name>)")
    f.add_argument("--force", action="store_true",
                   help="write into an existing non-empty output folder")
    f.add_argument("--top", type=int, default=3, metavar="N",
                   help="fitted models written per structure (default: 3)")
    f.add_argument("--model-format", choices=("cif", "pdb"), default="cif",
                   help="format of the fitted models (default: cif)")
    add_search_arguments(f)
    f.add_argument("--rank-by", choices=METRICS, default=None,
                   help="metric that ranks the placements (default: cam)")
    f.add_argument("--report", action="store_true",
                   help="also write report.html: ranked tables and plots, one self-contained file")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    f.set_defaults(_run=run)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..workflows.fit import fit
    from ..maps import read_map
    from ..output import write_fit_outputs
    from ..runs import check_outdir
    from ..structures import split_chains
    from .common import read_structures

    check_device(args.device)
    if args.top < 0:
        raise DifffitInputError(f"--top must be >= 0, got {args.top}")
    outdir = default_outdir(args, "fit")
    # Refuse an occupied output folder before spending minutes fitting.
    check_outdir(outdir, args.force)

    dmap = read_map(args.map, voxel_size=args.voxel_size)
    structures = []
    for s in read_structures(args, args.structures):
        structures.extend(split_chains(s) if args.split_chains else [s])
    if not structures:
        raise DifffitInputError("no structure left to fit (every chain was skipped)")

    overrides = {**search_overrides(args), "device": args.device}
    if args.rank_by is not None:
        overrides["rank_by"] = args.rank_by
    if not args.quiet:
        print(f"difffit: fitting {len(structures)} structure(s) into {args.map} "
              f"({'x'.join(map(str, dmap.shape_xyz))} voxels) at {args.resolution:g} A",
              file=sys.stderr)
    result = fit(dmap, structures, args.resolution, threshold=args.threshold,
                 progress=not args.quiet, **overrides)
    paths = write_fit_outputs(result, outdir, top=args.top, model_format=args.model_format,
                              force=args.force, command=command_line(argv), report=args.report)
    if not args.quiet:
        print(result.summary_table(top=args.top or 3))
        t = result.timings
        print(f"\n{len(result.placements)} placements in {t.get('total', float('nan')):.1f} s "
              f"(threshold {result.threshold:.4g})")
    print(f"results written to {paths['outdir']}/ (open {paths['cxc'].name} in ChimeraX)")
    if "report" in paths:
        print(f"report: {paths['report']}")
    return 0
