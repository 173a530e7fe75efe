"""``difffit simulate`` (a structure's simulated map) and ``difffit zero`` (a map with
the density of placed structures zeroed)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from ..params import AcceptRules
from .common import (add_output_map_arguments, add_simulator_arguments, add_structure_options,
                     check_output_file, positive_float, read_structures, voxel_size)


def register(sub) -> None:
    s = sub.add_parser(
        "simulate", help="simulated map of a structure (ChimeraX molmap)",
        description="Simulate a structure's density at a resolution (one Gaussian per atom, "
                    "sigma = 0.225 x resolution), on another map's grid (--like) or on a box "
                    "around the atoms (--spacing, default resolution / 3).")
    s.add_argument("structure", metavar="STRUCTURE", help="PDB/mmCIF file")
    add_output_map_arguments(s)
    add_structure_options(s, selection=False)
    add_simulator_arguments(s)
    grid = s.add_mutually_exclusive_group()
    grid.add_argument("--like", default=None, metavar="MAP", help="use this map's grid")
    grid.add_argument("--spacing", type=positive_float, default=None, metavar="S",
                      help="grid spacing in Angstrom (default: resolution / 3)")
    s.set_defaults(_run=run_simulate)

    z = sub.add_parser(
        "zero", help="zero the density that placed structures explain",
        description="Set to zero every voxel of MAP where the simulated map of a placed "
                    "structure (in its file's coordinates) exceeds a fraction of its maximum.")
    z.add_argument("map", metavar="MAP", help="density map")
    z.add_argument("structures", metavar="STRUCTURE", nargs="+", help="placed structures")
    add_output_map_arguments(z)
    add_structure_options(z, selection=False)
    z.add_argument("--fraction", type=float, default=AcceptRules.zero_fraction, metavar="F",
                   help="zero-out level, fraction of the simulated maximum "
                        f"(default: {AcceptRules.zero_fraction})")
    add_simulator_arguments(z)
    z.add_argument("--voxel-size", type=voxel_size, default=None, metavar="V",
                   help="override the map header's voxel size")
    z.set_defaults(_run=run_zero)


def run_simulate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..maps import read_map, write_map
    from ..simulators import get_simulator

    out = Path(args.output)
    check_output_file(out, args.force)
    simulator = get_simulator(args.simulator, args.checkpoint)
    structure = read_structures(args, [args.structure])[0]
    like = read_map(args.like) if args.like else None
    sim = simulator.simulate(structure, args.resolution, like=like, spacing=args.spacing)
    write_map(out, sim, overwrite=args.force)
    print(f"simulated map of {structure.name} ({structure.n_atoms} atoms, "
          f"{'x'.join(map(str, sim.shape_xyz))} voxels, simulator {simulator.name}) "
          f"written to {out}")
    return 0


def run_zero(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..maps import read_map, write_map
    from ..simulate import explained_mask
    from ..simulators import get_simulator

    out = Path(args.output)
    check_output_file(out, args.force)
    if not 0.0 < args.fraction < 1.0:
        raise DifffitInputError(f"--fraction must be between 0 and 1, got {args.fraction}")
    simulator = get_simulator(args.simulator, args.checkpoint)
    dmap = read_map(args.map, voxel_size=args.voxel_size)
    placed = read_structures(args, args.structures)
    mask = explained_mask(dmap, placed, args.resolution, args.fraction, simulator=simulator)
    data = dmap.data.copy()
    data[mask] = 0.0
    write_map(out, dmap.copy_with(data), overwrite=args.force)
    print(f"zeroed {int(mask.sum())} of {mask.size} voxels ({100.0 * mask.mean():.1f} %); "
          f"written to {out}")
    return 0
