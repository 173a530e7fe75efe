"""What the subcommands share: argument types, the map / search / structure options,
device checks, output-path checks and the recorded command line."""
from __future__ import annotations

import argparse
import os
import shlex
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from ..params import FitParams
from ..structures import SELECTIONS

def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _int_from(text: str, lowest: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < lowest:
        raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {text}")
    return v


def positive_int(text: str) -> int:
    return _int_from(text, 1)


def non_negative_int(text: str) -> int:
    return _int_from(text, 0)


def voxel_size(text: str) -> list[float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"one number or three (x,y,z), got {text!r}")
    return [positive_float(p) for p in parts]


def chains(text: str) -> list[str]:
    chains = [c.strip() for c in text.split(",") if c.strip()]
    if not chains:
        raise argparse.ArgumentTypeError(f"no chain names in {text!r}")
    return chains


def add_map_arguments(p: argparse.ArgumentParser) -> None:
    """The target map's options every fitting subcommand shares: MAP (positional),
    -r/--resolution, -t/--threshold, --voxel-size."""
    p.add_argument("map", metavar="MAP", help="density map (MRC/CCP4, optionally .gz)")
    p.add_argument("-r", "--resolution", type=positive_float, required=True,
                   help="map resolution in Angstrom")
    p.add_argument("-t", "--threshold", type=float, default=None,
                   help="contour level in map units (default: map mean + 1 standard deviation)")
    p.add_argument("--voxel-size", type=voxel_size, default=None, metavar="V",
                   help="override the map header's voxel size: V or Vx,Vy,Vz Angstrom")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The search options every fitting subcommand shares: --seed, --rotations,
    --positions, --iterations, --coarse-iters, --no-refine, --refine-top (see
    :func:`search_overrides`)."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--rotations", type=positive_int, default=None, metavar="N",
                   help="starts per position: the N best of the scanned rotations (default: 2)")
    p.add_argument("--positions", type=positive_int, default=None, metavar="N",
                   help="start positions per structure, spread over the density (default: 400)")
    p.add_argument("--scan-rotations", type=non_negative_int, default=None, metavar="N",
                   help="rotations scored at each position to choose the starts (default: "
                        "500; 0: no scan, N uniform rotations)")
    p.add_argument("--focus-top", type=non_negative_int, default=None, metavar="K",
                   help="restart around the K best distinct poses of the first descent "
                        "(default: 10; 0: no restarts)")
    p.add_argument("--iterations", type=positive_int, default=None, metavar="N",
                   help="gradient steps (default: 200)")
    p.add_argument("--coarse-iters", type=non_negative_int, default=None, metavar="N",
                   help="run the first N steps of the first descent with coarse points (a "
                        "k-means point per 20 fitted atoms) on smoother pyramid levels, the "
                        "rest with the atoms (default: all but the last 50 when --iterations "
                        "is 200 or more, else 0; 0: atoms only; must be < --iterations)")
    p.add_argument("--no-refine", action="store_true",
                   help="skip the local refinement of the cluster representatives")
    p.add_argument("--refine-top", type=positive_int, default=None, metavar="N",
                   help="clusters refined per structure, best first (default: 32)")
    p.add_argument("--dust-min-size", type=non_negative_int, default=None, metavar="N",
                   help="leave out pieces of density above the contour smaller than N voxels "
                        "(default: 100; 0 keeps every piece)")
    add_simulator_arguments(p)


def add_simulator_arguments(p: argparse.ArgumentParser) -> None:
    """--simulator molmap|gemmi|learned and --checkpoint FILE (difffit.simulators)."""
    from ..params import SIMULATORS

    p.add_argument("--simulator", choices=SIMULATORS, default="molmap",
                   help="how simulated maps are made (metrics, zero-out): molmap (default, "
                        "ChimeraX's Gaussians), gemmi (electron form factors), learned (a "
                        "trained network, needs --checkpoint)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="the learned simulator's checkpoint (from difffit train-simulator)")


def search_overrides(args: argparse.Namespace) -> dict:
    """FitParams fields from the options of :func:`add_search_arguments` (those given)."""
    out = {"seed": args.seed, "refine": not args.no_refine, "simulator": args.simulator}
    if args.checkpoint is not None:
        out["checkpoint"] = args.checkpoint
    for key, value in (("n_rotations", args.rotations), ("n_positions", args.positions),
                       ("scan_rotations", args.scan_rotations), ("focus_top", args.focus_top),
                       ("n_iters", args.iterations), ("coarse_iters", args.coarse_iters),
                       ("refine_top", args.refine_top),
                       ("dust_min_size", args.dust_min_size)):
        if value is not None:
            out[key] = value
    return out




def point(text: str) -> tuple[float, float, float]:
    """X,Y,Z: three numbers (Angstrom)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        out = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"three numbers X,Y,Z expected, got {text!r}") from None
    if len(out) != 3:
        raise argparse.ArgumentTypeError(f"three numbers X,Y,Z expected, got {text!r}")
    return out


def add_region_arguments(p: argparse.ArgumentParser) -> None:
    """Local and regional fits (difffit.region): --local, --center/--radius, --mask,
    --zone/--zone-radius (see :func:`region_overrides`)."""
    g = p.add_argument_group("local and regional fits")
    g.add_argument("--local", action="store_true",
                   help="refine the structures from their current pose only (no search; "
                        "as ChimeraX fitmap without search)")
    g.add_argument("--center", type=point, default=None, metavar="X,Y,Z",
                   help="start the search only within --radius of this point (Angstrom)")
    g.add_argument("--radius", type=positive_float, default=None, metavar="R",
                   help="radius of the --center sphere in Angstrom")
    g.add_argument("--mask", default=None, metavar="MASK.mrc",
                   help="search the map times this mask (same grid as MAP; a segment, or a "
                        "soft mask with values in [0, 1])")
    g.add_argument("--zone", default=None, metavar="MODEL",
                   help="search only the map within --zone-radius of MODEL's atoms")
    g.add_argument("--zone-radius", type=positive_float, default=None, metavar="R",
                   help="radius of the --zone in Angstrom (default: 5)")


def region_overrides(args: argparse.Namespace) -> dict:
    """FitParams fields from the options of :func:`add_region_arguments` (those given)."""
    out = {}
    if args.local:
        out["local"] = True
    for key in ("center", "radius", "mask", "zone", "zone_radius"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if args.zone_radius is not None and args.zone is None:
        raise DifffitInputError("--zone-radius needs --zone MODEL")
    from ..workflows.mapfit import is_map_source

    if args.zone is not None and is_map_source(args.zone):
        raise DifffitInputError(f"{args.zone}: a map, but --zone takes an atomic model "
                                f"(PDB/mmCIF); to search a region of the map give a mask: "
                                f"--mask MASK.mrc")
    from ..region import check_paths

    check_paths(FitParams(**out))  # bad combinations and missing files: before any work
    return out


def add_structure_options(p: argparse.ArgumentParser, selection: bool = True) -> None:
    """Which atoms of the structures are kept (--chains; every atom by default, less
    --drop-waters, --drop-ligands, --drop-hydrogens) and, with ``selection``, which are
    fitted (--selection). ``--keep-waters``, ``--keep-ligands`` and ``--keep-hydrogens``
    are the defaults, accepted (they undo a --drop- given before them)."""
    if selection:
        p.add_argument("--selection", choices=SELECTIONS, default="backbone",
                       help="atoms used for fitting (default: backbone)")
    p.add_argument("--chains", type=chains, default=None, metavar="A,B",
                   help="keep only these chains of every structure")
    for what, text in (("waters", "water molecules"), ("ligands", "ligands and ions"),
                       ("hydrogens", "hydrogen atoms")):
        p.add_argument(f"--drop-{what}", dest=f"keep_{what}", action="store_false",
                       default=True, help=f"leave {text} out (of the fit's metrics and of "
                                          f"the written models; by default they are kept)")
        p.add_argument(f"--keep-{what}", dest=f"keep_{what}", action="store_true",
                       default=True, help=f"keep {text} (the default)")


def refuse_maps(paths: Sequence[str], command: str | None, where: str = "") -> None:
    """Refuse, before any reading, a map (MRC/CCP4 by its name) given where ``difffit
    command`` takes atomic models: a plain message naming the file instead of a PDB
    reader's complaint. ``where`` names the option (e.g. "--library")."""
    from ..workflows.mapfit import is_map_source

    cmd = f"difffit {command}" if command else "this command"
    for p in paths:
        if not is_map_source(p):
            continue
        if command == "fit":
            raise DifffitInputError(
                f"{p}: a map among the structures; `difffit fit` places a map only alone "
                f"(difffit fit TARGET.mrc {Path(p).name}), or atomic models (PDB/mmCIF) only")
        raise DifffitInputError(
            f"{p}: a map (MRC/CCP4), but `{cmd}` takes atomic models (PDB/mmCIF)"
            f"{' in ' + where if where else ' here'}; a map source is accepted only by "
            f"`difffit fit TARGET.mrc {Path(p).name}`")


def read_structures(args: argparse.Namespace, paths: Sequence[str]):
    """The structures at ``paths`` read with the options of :func:`add_structure_options`;
    a map among them is refused first, naming it (:func:`refuse_maps`)."""
    from ..structures import read_structure

    refuse_maps(paths, getattr(args, "command", None))
    return [read_structure(p, selection=getattr(args, "selection", "backbone"),
                           chains=args.chains, keep_waters=args.keep_waters,
                           keep_ligands=args.keep_ligands, keep_hydrogens=args.keep_hydrogens)
            for p in paths]


def add_device_argument(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--device", default=default,
                   help="cpu, cuda, or auto (a GPU when there is one) "
                        f"(default: {default})")


def check_device(device: str) -> None:
    """Refuse a device name that is not one, or CUDA where torch sees no GPU."""
    if device.split(":")[0] not in ("cpu", "cuda", "auto"):
        raise DifffitInputError(f"--device must be cpu, cuda or auto, got {device!r}")
    try:
        FitParams(device=device).torch_device()
    except DifffitInputError:
        raise DifffitInputError("--device cuda: torch sees no CUDA GPU; use --device cpu") from None


def map_stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem or "map"


def _default_base(workflow: str) -> str:
    return "difffit_out" if workflow == "fit" else f"difffit_{workflow}"


def add_outdir_arguments(p: argparse.ArgumentParser, workflow: str | None, force_help: str,
                         resume_help: str | None = None) -> None:
    """-o/--outdir, --force and (for resumable workflows) --resume.

    Args:
        workflow: names the default folder (``difffit_<workflow>/<map name>``, see
            :func:`default_outdir`); None: no default (nothing is written without -o).
    """
    p.add_argument("-o", "--outdir", default=None, metavar="DIR",
                   help="also write the outputs here" if workflow is None else
                   f"output folder (default: {_default_base(workflow)}/<map name>)")
    if resume_help is not None:
        p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--force", action="store_true", help=force_help)


def default_outdir(args: argparse.Namespace, workflow: str) -> Path:
    """``-o`` when given, else ``difffit_<workflow>/<map name>``."""
    if args.outdir:
        return Path(args.outdir)
    return Path(_default_base(workflow)) / map_stem(Path(args.map))


def command_line(argv: Sequence[str]) -> str:
    return "difffit " + " ".join(shlex.quote(a) for a in argv)


def check_output_file(path: Path, force: bool) -> None:
    """Refuse before any work: an existing output without --force, a folder in its place,
    or a folder that is missing or cannot be written."""
    if path.exists() and not path.is_file():
        raise DifffitInputError(f"{path}: the output file's place holds a folder (or another "
                                f"non-file); choose another name")
    if path.exists() and not force:
        raise FileExistsError(f"{path}: file already exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise DifffitInputError(f"{path}: output folder {path.parent} does not exist")
    _probe(path.parent, path)


def _probe(folder: Path, target: Path) -> None:
    """Write (and remove) a temporary folder in ``folder``: proof that ``target`` can be
    written, before any work."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".difffit_probe_"))
    except OSError as exc:
        raise DifffitInputError(f"{target}: cannot write in {folder}: "
                                f"{exc.strerror or exc}") from None


def check_output_dir(outdir: Path, files: Sequence[str] = (), folders: Sequence[str] = ()
                     ) -> None:
    """Refuse, before any work, an output folder that cannot be written: a file in its
    place or above it, a folder where difffit may not write, or a folder in the place of
    one of the output ``files`` (a file in the place of one of the ``folders``).
    Nothing is created."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise DifffitInputError(f"{outdir}: output path exists and is not a folder")
    probe = outdir.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DifffitInputError(f"{outdir}: cannot make the output folder there: {probe} is "
                                f"a file, not a folder")
    _probe(probe, outdir)
    for name in files:
        q = outdir / name
        if q.exists() and not q.is_file():
            raise DifffitInputError(f"{q}: an output file goes there but a folder is in its "
                                    f"place; move it, or choose another output folder")
    for name in folders:
        q = outdir / name
        if q.exists() and not q.is_dir():
            raise DifffitInputError(f"{q}: an output folder goes there but a file is in its "
                                    f"place; move it, or choose another output folder")


def add_output_map_arguments(p: argparse.ArgumentParser) -> None:
    """-r, -o OUT.mrc and --force of the commands that write one map (simulate, zero)."""
    p.add_argument("-r", "--resolution", type=positive_float, required=True,
                   help="resolution in Angstrom")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mrc", help="map to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT.mrc")


