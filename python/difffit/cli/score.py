"""``difffit score``: the fit metrics of models as they are placed (ChimeraX ``fitmap``
without moving them)."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from .common import (add_map_arguments, add_simulator_arguments, add_structure_options,
                     read_structures)


def register(sub) -> None:
    p = sub.add_parser(
        "score", help="metrics of placed models, as ChimeraX fitmap without moving them",
        description="Score each structure where it is in the map: ChimeraX fitmap's "
                    "correlation, correlation about the mean (cam) and overlap between the "
                    "structure's simulated map (molmap at the resolution, the points inside "
                    "its 95 %% contour) and the map, the mean map value at the atoms and the "
                    "fraction of atoms at or above the contour. One row per structure.")
    add_map_arguments(p)
    p.add_argument("structures", metavar="STRUCTURE", nargs="+", help="placed structures (PDB/mmCIF)")
    add_structure_options(p, selection=False)
    add_simulator_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per structure (a list)")
    p.set_defaults(_run=run)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..maps import read_map
    from ..tables import text_table
    from ..workflows.score import score

    dmap = read_map(args.map, voxel_size=args.voxel_size)
    rows = score(dmap, read_structures(args, args.structures), args.resolution, args.threshold,
                 simulator=args.simulator, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    lines = [(r["structure"], f"{r['correlation']:.4f}", f"{r['cam']:.4f}", f"{r['overlap']:.5g}",
              f"{r['mean_density']:.5g}", f"{r['inside_fraction']:.3f}", str(r["envelope_points"]),
              str(r["n_atoms"])) for r in rows]
    print("\n".join(text_table(("structure", "correlation", "cam", "overlap", "mean density",
                                "inside", "points", "atoms"), lines)))
    print(f"(resolution {args.resolution:g} A, contour {rows[0]['threshold']:.6g})")
    return 0
