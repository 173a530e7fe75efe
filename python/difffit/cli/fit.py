"""``difffit fit``: fit structures into a map and write the results."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import DifffitInputError
from ..params import METRICS
from .common import (add_device_argument, add_map_arguments, add_outdir_arguments,
                     add_region_arguments, add_search_arguments, add_structure_options,
                     check_device, check_output_dir, command_line, default_outdir,
                     positive_int, region_overrides, search_overrides)

# The files a fit writes into its folder (difffit.output.fit); a folder in the place of
# one is refused before the fit.
FIT_OUTPUTS = ("results.csv", "results.json", "difffit_fits.cxc", "difffit_fits.positions",
               "trajectories.npz",
               "report.html", "log.txt", "map.mrc")


def register(sub) -> None:
    f = sub.add_parser(
        "fit", help="fit structures into a map",
        description="Fit one or more structures into a map; write ranked placements, fitted "
                    "models, a ChimeraX script, trajectories and a log to the output folder.",
    )
    add_map_arguments(f)
    f.add_argument("structures", metavar="STRUCTURE", nargs="+",
                   help="structures to fit (PDB/mmCIF, optionally .gz), or one map "
                        "(MRC/CCP4) fitted through its Gaussian mixture (writes "
                        "fitted_map_N.mrc on the target's grid)")
    add_structure_options(f)
    f.add_argument("--split-chains", action="store_true",
                   help="fit every chain as a structure of its own")
    add_device_argument(f)
    add_outdir_arguments(f, "fit", force_help="write into a non-empty output folder, replacing "
                                              "an earlier fit's outputs there")
    f.add_argument("--top", type=int, default=3, metavar="N",
                   help="fitted models written per structure (default: 3)")
    f.add_argument("--model-format", choices=("cif", "pdb"), default="cif",
                   help="format of the fitted models (default: cif)")
    add_search_arguments(f)
    add_region_arguments(f)
    f.add_argument("--rank-by", choices=METRICS, default=None,
                   help="metric that ranks the placements (default: cam)")
    f.add_argument("--copies", type=_copies, default=None, metavar="N|auto",
                   help="rank the N best distinct, non-overlapping placements of each "
                        "structure first (a map holding several copies lists each once); "
                        "auto: every one that scores at least 0.6 x the best (and >= 0.3)")
    f.add_argument("--min-plddt", type=float, default=None, metavar="X",
                   help="fit only residues whose B-factor (pLDDT, in AlphaFold models) is "
                        ">= X; the written models keep every atom")
    f.add_argument("--report", action="store_true",
                   help="also write report.html: ranked tables and plots, one self-contained file")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    f.set_defaults(_run=run)


def _copies(text: str) -> int | str:
    """``--copies``: a number of copies, or "auto"."""
    return text if text == "auto" else positive_int(text)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..workflows.fit import fit
    from ..maps import read_map
    from ..output import write_fit_outputs
    from ..workflows.mapfit import is_map_source
    from ..runs import check_outdir
    from ..structures import split_chains
    from .common import read_structures

    check_device(args.device)
    if args.top < 0:
        raise DifffitInputError(f"--top must be >= 0, got {args.top}")
    map_source = len(args.structures) == 1 and is_map_source(args.structures[0])
    if map_source:  # options about chains mean nothing for a map: refused, not ignored
        for flag, given in (("--split-chains", args.split_chains),
                            ("--chains", args.chains is not None)):
            if given:
                raise DifffitInputError(
                    f"{args.structures[0]}: {flag} applies to atomic models; a map source "
                    f"is placed whole (cut the chain's density out of the map first)")
    outdir = default_outdir(args, "fit")
    # Refuse an occupied or unwritable output folder before spending minutes fitting.
    check_outdir(outdir, args.force)
    check_output_dir(outdir, files=FIT_OUTPUTS, folders=("models",))

    dmap = read_map(args.map, voxel_size=args.voxel_size)
    source_map = None  # a map to place (difffit.workflows.mapfit): through its mixture
    if map_source:
        source_map = read_map(args.structures[0])
        structures = source_map
    else:
        structures = []
        for s in read_structures(args, args.structures):
            structures.extend(split_chains(s) if args.split_chains else [s])
    if source_map is None and not structures:
        raise DifffitInputError("no structure left to fit (every chain was skipped)")

    overrides = {**search_overrides(args), "device": args.device}
    if args.rank_by is not None:
        overrides["rank_by"] = args.rank_by
    overrides.update(copies=args.copies, min_plddt=args.min_plddt, **region_overrides(args))
    if not args.quiet:
        print(f"difffit: fitting {1 if source_map else len(structures)} "
              f"{'map' if source_map else 'structure(s)'} into {args.map} "
              f"({'x'.join(map(str, dmap.shape_xyz))} voxels) at {args.resolution:g} A",
              file=sys.stderr)
    result = fit(dmap, structures, args.resolution, threshold=args.threshold,
                 progress=not args.quiet, **overrides)
    paths = write_fit_outputs(result, outdir, top=args.top, model_format=args.model_format,
                              force=args.force, command=command_line(argv), report=args.report)
    for key, out in paths.items():  # a map source: the placed maps on the target's grid
        if key.startswith("fitted_map:"):
            print(f"difffit: wrote {out}", file=sys.stderr)
    for note in result.notes:
        print(f"difffit: {note}", file=sys.stderr)
    for name, why in result.ambiguous.items():
        print(f"difffit: warning: ambiguous answer for {name}: {why}", file=sys.stderr)
    if not args.quiet:
        print(result.summary_table(top=args.top or 3))
        t = result.timings
        print(f"\n{len(result.placements)} placements in {t.get('total', float('nan')):.1f} s "
              f"(threshold {result.threshold:.4g})")
    print(f"results written to {paths['outdir']}/ (open {paths['cxc'].name} in ChimeraX)")
    if "report" in paths:
        print(f"report: {paths['report']}")
    return 0
