"""``difffit gmm``: a Gaussian mixture of a structure or a map, written as JSON or as a PDB
of pseudo-atoms (:mod:`difffit.gmm`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..files import is_map_path
from .common import (check_output_file, non_negative_int, positive_float,
                     positive_int, voxel_size)



def register(sub) -> None:
    p = sub.add_parser(
        "gmm", help="Gaussian mixture of a structure or a map (JSON or PDB pseudo-atoms)",
        description="Represent a structure (PDB/mmCIF) or a map (MRC/CCP4) as a sum of "
                    "Gaussians: N from the nearest-neighbour rule at the resolution (or "
                    "-n); a structure by k-means of its heavy atoms weighted by electrons, a "
                    "map by k-means of its voxels above the contour then Adam on centres, "
                    "widths and amplitudes (the fit's correlation is printed). --coarsen "
                    "adds coarser mixtures split from it by k-means.")
    p.add_argument("input", metavar="INPUT", help="structure (PDB/mmCIF) or map (MRC/CCP4)")
    p.add_argument("-r", "--resolution", type=positive_float, required=True,
                   help="resolution in Angstrom (sets N and the widths)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="mixture file: .json (every number) or .pdb (pseudo-atoms); with "
                        "--coarsen, FILE's stem gets _K for each coarser mixture")
    p.add_argument("-n", "--gaussians", type=positive_int, default=None, metavar="N",
                   help="number of Gaussians (default: mean nearest-neighbour distance = "
                        "resolution)")
    p.add_argument("-t", "--threshold", type=float, default=None,
                   help="map contour (default: mean + 1 standard deviation)")
    p.add_argument("--iterations", type=non_negative_int, default=200, metavar="N",
                   help="Adam steps fitting a map's mixture (default: 200; 0: k-means only)")
    p.add_argument("--coarsen", type=positive_int, nargs="+", default=(), metavar="K",
                   help="also write mixtures of K Gaussians (FILE_K), each split from the "
                        "next finer one; a K at or above the mixture's size is warned about "
                        "and its file holds the mixture's own Gaussians")
    p.add_argument("--voxel-size", type=voxel_size, default=None, metavar="V",
                   help="override the map header's voxel size")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default: 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(_run=run)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import warnings

    from ..errors import DifffitInputError, DifffitWarning
    from ..gmm import coarsen, from_structure, write_mixtures
    from ..gmm_fit import from_map
    from ..maps import read_map
    from ..structures import read_structure

    out = Path(args.output)
    if not out.name.lower().endswith((".json", ".pdb")):
        raise DifffitInputError(f"{out}: the mixture file must end in .json or .pdb")
    # Coarsest last, each split from the next finer one, whatever the order given.
    levels = sorted(set(args.coarsen), reverse=True)
    targets = [out] + [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in levels]
    for t in targets:  # refuse before any work: existing, or not writable
        check_output_file(t, args.force)
    if is_map_path(args.input):
        dmap = read_map(args.input, voxel_size=args.voxel_size)
        mix = from_map(dmap, args.resolution, args.threshold, args.gaussians,
                       iters=args.iterations, seed=args.seed)
        what = (f"map {args.input}: {len(mix)} Gaussians, correlation with the map "
                f"{mix.info['correlation']:.3f} (k-means seed {mix.info['correlation_start']:.3f})")
    else:
        s = read_structure(args.input)
        mix = from_structure(s, args.resolution, args.gaussians, seed=args.seed)
        what = (f"structure {args.input}: {len(mix)} Gaussians for {mix.info['atoms']} heavy "
                f"atoms, mean nearest-neighbour distance {mix.info['mean_nn_distance']:.2f} A")
    print(what)
    mixtures, cur = [mix], mix
    for k, t in zip(levels, targets[1:]):
        cur = coarsen(cur, k, seed=args.seed)
        if len(cur) < k:  # the file keeps the promised name; what it holds is said
            warnings.warn(f"--coarsen {k}: the mixture has only {len(cur)} Gaussians, so "
                          f"{t.name} holds those {len(cur)} (no coarser than {out.name})",
                          DifffitWarning, stacklevel=2)
        mixtures.append(cur)
    # All files or none: a level a PDB file cannot hold leaves no file behind.
    write_mixtures(list(zip(mixtures, targets)), force=args.force)
    for m, t in zip(mixtures, targets):
        print(f"wrote {t} ({len(m)} Gaussians)")
    return 0
