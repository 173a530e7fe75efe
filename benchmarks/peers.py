"""Side-by-side benchmark: difffit, PowerFit and UCSF ChimeraX ``fitmap`` on every in-frame
data set of ``../shared/data``, by the paper's protocol (docs/method.md section 7).

Per data set the deposited model is moved by one random rigid transform (the same for every
tool) and each tool fits it back into the map at the map's resolution, on the same CPU
cores:

* difffit: default settings (1000 starts, refinement); the time covers reading the map and
  the moved model and the whole fit (median of ``--difffit-repeats`` runs). Found = the
  top-ranked cluster is within 3 A and 6 degrees of the deposited pose; hits = the size of
  that cluster.
* PowerFit (FFT exhaustive rotational search, installed into its own virtual environment
  on first use): ``powerfit MAP RESOLUTION MODEL -a ANGLE -p THREADS``; its search is
  global, so the moved start does not matter. Found = its rank-1 solution is right; the
  table gives the rank of the first right solution. Time: the whole ``powerfit`` process.
  Where PowerFit would read a map header differently from difffit (it takes only ORIGIN
  from .mrc files and cannot override a wrong voxel size) it gets a rewritten copy.
* ChimeraX ``fitmap ... search N`` (N random starts in the map, clustered at 3 A / 6 deg),
  run when a ChimeraX Python module is importable and a ChimeraX executable is on PATH;
  skipped with a note otherwise. This path is not exercised where the benchmark was written.

Where a map has several equally right answers (the two alpha / two beta chains of
haemoglobin, the subunits of an actin filament), a placement on any copy counts, and the
RMSD is taken against that copy.

    python benchmarks/peers.py [--datasets daq phage_1.38 ...] [--skip-powerfit]
                               [--powerfit-angle 10] [--threads 2]

prints a Markdown table and writes ``benchmarks/results/peers.md`` and ``peers.svg``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from test_fit import CASES, DATA, pose_error, random_move  # noqa: E402

from difffit import fit  # noqa: E402
from difffit.rotations import superpose  # noqa: E402
from difffit.files import atomic_write as _atomic_write_bytes
from difffit.io import read_map, read_structure, write_map, write_structure  # noqa: E402
from difffit.preprocess import default_threshold  # noqa: E402
from difffit.report import bar_chart  # noqa: E402

RESULTS = HERE / "results"
SHIFT_TOL, ANGLE_TOL = 3.0, 6.0  # the paper's "found" rule (method.md section 7)
POWERFIT_SPEC = "powerfit-em==6.0.2"

# F-actin helical symmetry of EMD-5168 (-166.6 deg per subunit, 27.6 A rise, about the z
# axis through x = y = 0; the map correlates with itself at 0.99 under this screw): the
# deposited subunit's neighbours are equally right fits. EMD-5170 shows no such symmetry
# (at most 0.51 under any screw about z), so there only the deposited subunit counts.
ACTIN_SCREW = (-166.6, 27.6)


@dataclass(frozen=True)
class Case:
    name: str
    map: str
    model: str
    resolution: float
    voxel: float | None = None
    chain: str | None = None      # fit only this chain of the model
    twin: str | None = None       # a chain with the same sequence: its place counts too
    screw: tuple[float, float] | None = None  # (twist deg, rise A) about z: copies count
    note: str = ""


HB = "hemoglobin_emd3488_5ni1/"
ACTIN = "tempy_factin_emd5168/"
# Every in-frame model of ../shared/data (its README): the refit cases of tests/test_fit.py
# plus the haemoglobin chains (either copy of each) and the actin maps. Not included: the
# ModelAngelo haemoglobin model (not in frame) and the domain demo (not placed).
PEER_CASES = [Case(*c) for c in CASES] + [
    Case("hb_alpha", HB + "emd_3488.mrc", HB + "5ni1_updated.cif", 3.2, chain="A", twin="C"),
    Case("hb_beta", HB + "emd_3488.mrc", HB + "5ni1_updated.cif", 3.2, chain="B", twin="D"),
    Case("actin_cut_3MFP", ACTIN + "emd_5168_monomer.mrc", ACTIN + "3MFP.pdb", 6.6),
    Case("actin_cut_1J6Z", ACTIN + "emd_5168_monomer.mrc", ACTIN + "1J6Z.pdb", 6.6),
    Case("actin_5168_3MFP", ACTIN + "emd_5168.map", ACTIN + "3MFP.pdb", 6.6, screw=ACTIN_SCREW,
         note="filament: any subunit counts"),
    Case("actin_5170_1J6Z", ACTIN + "emd_5170.map", ACTIN + "1J6Z.pdb", 15.0,
         note="filament, no symmetry found: only the deposited subunit counts; 15 A as in TEMPy"),
]


@dataclass
class Row:
    dataset: str
    tool: str
    found: bool | None = None     # None: not run
    hits: int | None = None       # difffit / ChimeraX: size of the top cluster
    rank: int | None = None       # PowerFit: rank of the first right solution
    rmsd: float | None = None     # top-ranked placement vs the deposited model (or its copy)
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# Ground truth: the deposited pose and its equivalent copies
# ----------------------------------------------------------------------------------------


def _atom_keys(structure) -> list[tuple]:
    """(residue number, insertion code, residue name, atom name) of every atom, in order."""
    return [(r.seqid.num, r.seqid.icode, r.name, a.name)
            for ch in structure.gemmi_structure[0] for r in ch for a in r]


_superpose = superpose  # R, t minimising |R x + t - y| (Kabsch)


def correct_poses(case: Case, model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rigid transforms of the deposited model onto every equally right place (identity first)."""
    poses = [(np.eye(3), np.zeros(3))]
    if case.twin:
        twin = read_structure(DATA / case.model, chains=[case.twin])
        ka, kb = _atom_keys(model), {k: i for i, k in enumerate(_atom_keys(twin))}
        pairs = [(i, kb[k]) for i, k in enumerate(ka) if k in kb]
        ia, ib = (np.array(p) for p in zip(*pairs))
        poses.append(_superpose(model.coords[ia], twin.coords[ib]))
    if case.screw:
        twist, rise = case.screw
        for k in (*range(-6, 0), *range(1, 7)):
            a = np.radians(k * twist)
            Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
            poses.append((Rz, np.array([0.0, 0.0, k * rise])))
    return poses


def judge(placement, R0, t0, model, poses) -> tuple[bool, float, float, float]:
    """(within 3 A / 6 deg of the deposited pose or a copy, then the all-atom RMSD, rotation
    angle and centroid shift to the nearest one).

    ``placement`` moves the moved model (x -> R0 x + t0 of the deposited one) by
    x -> placement.rotation x + placement.translation.
    """
    best = None
    for Rk, tk in poses:
        # The moved model expressed as a move of copy k: y = R0 Rk^T z + t0 - R0 Rk^T tk.
        Rm = R0 @ Rk.T
        angle, shift, rmsd = pose_error(placement, Rm, t0 - Rm @ tk, model.transformed(Rk, tk))
        found = angle < ANGLE_TOL and shift < SHIFT_TOL
        if best is None or (found, -rmsd) > best[:2]:
            best = (found, -rmsd, angle, shift)
    return best[0], -best[1], best[2], best[3]


def _set_outcome(row: "Row", outcome) -> None:
    """Found and RMSD of the top-ranked placement; how far off it is when not found."""
    row.found, row.rmsd, angle, shift = outcome
    if not row.found:
        row.notes.append(f"top placement {angle:.2f} deg / {shift:.1f} A off")


# ----------------------------------------------------------------------------------------
# difffit
# ----------------------------------------------------------------------------------------


def run_difffit(case: Case, moved_file: Path, truth, repeats: int) -> Row:
    """Median time of ``repeats`` runs from the same start and seed (the last one is judged):
    a run takes seconds, so one busy moment of the shared machine would otherwise decide it."""
    row = Row(case.name, "difffit")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dmap = read_map(DATA / case.map, voxel_size=case.voxel)
        result = fit(dmap, [read_structure(moved_file)], case.resolution)
        times.append(time.perf_counter() - t)
    row.seconds = float(np.median(times))
    top = result.best(0)
    _set_outcome(row, judge(top, *truth))
    row.hits = top.hits
    return row


# ----------------------------------------------------------------------------------------
# PowerFit
# ----------------------------------------------------------------------------------------

_PF_PROBE = """
import json, sys
from powerfit_em.structure import Structure
from powerfit_em.volume import Volume
v = Volume.fromfile(sys.argv[1])
s = Structure.fromfile(sys.argv[2])
print(json.dumps({"voxel": float(v.voxelspacing), "origin": [float(o) for o in v.origin],
                  "centre": s.coor.mean(axis=1).tolist()}))
"""


@dataclass
class PowerFit:
    exe: Path
    python: Path
    version: str
    grid: float | None = None  # the rotational sampling it really used (deg)


def ensure_powerfit(venv: Path, spec: str) -> tuple[PowerFit | None, str]:
    """PowerFit from ``venv``, created with ``spec`` installed when missing: (tool, note)."""
    exe, py = venv / "bin" / "powerfit", venv / "bin" / "python"
    if not exe.exists():
        print(f"installing {spec} into {venv} ...", file=sys.stderr, flush=True)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(py), "-m", "pip", "install", "--quiet", spec]]
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                lines = (p.stderr or p.stdout).strip().splitlines()
                tail = [ln for ln in lines if ln.startswith("ERROR")][-2:] or lines[-3:]
                return None, (f"PowerFit could not be installed (`{' '.join(cmd[-3:])}` failed: "
                              f"{' / '.join(tail)})")
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    if p.returncode != 0:
        return None, f"PowerFit in {venv} does not run: {(p.stderr or p.stdout).strip()[-200:]}"
    version = (p.stdout or p.stderr).strip().split()[-1]
    return PowerFit(exe, py, version), ""


def _powerfit_inputs(pf: PowerFit, case: Case, dmap, moved_file: Path, tmp: Path):
    """The map file PowerFit gets and the model centre it rotates about.

    PowerFit takes the map's position from ORIGIN only for .mrc files (NSTART only for
    .map) and cannot override a wrong voxel size; where it would read the map elsewhere
    than difffit does, it gets a copy of the map with the header difffit reads (same
    voxels), and the table says so.
    """
    map_file = DATA / case.map
    probe = json.loads(subprocess.run([str(pf.python), "-c", _PF_PROBE, str(map_file), str(moved_file)],
                                      capture_output=True, text=True, check=True).stdout)
    note = ""
    if (abs(probe["voxel"] - dmap.voxel_size[0]) > 1e-3
            or np.abs(np.array(probe["origin"]) - dmap.origin).max() > 1e-2):
        note = (f"map header rewritten for PowerFit (it reads voxel {probe['voxel']:.3g} A, origin "
                f"({', '.join(f'{o:.4g}' for o in probe['origin'])}) here)")
        map_file = tmp / "map_for_powerfit.mrc"
        write_map(map_file, dmap)
    return map_file, np.array(probe["centre"]), note


def _read_solutions(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rotation, position) of each solution, best first, from a comma-delimited solutions.out."""
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    out = []
    for line in lines[1:]:
        v = dict(zip(head, line.split(",")))
        a = np.array([float(v[f"a{i}{j}"]) for i in (1, 2, 3) for j in (1, 2, 3)]).reshape(3, 3)
        u, _, vt = np.linalg.svd(a)  # the file has 3 decimals: take the nearest rotation
        out.append((u @ vt, np.array([float(v["x"]), float(v["y"]), float(v["z"])])))
    return out


def run_powerfit(pf: PowerFit, case: Case, dmap, moved_file: Path, truth, angle: float,
                 threads: int, tmp: Path) -> Row:
    row = Row(case.name, "PowerFit")
    map_file, centre, note = _powerfit_inputs(pf, case, dmap, moved_file, tmp)
    if note:
        row.notes.append(note)
    out = tmp / "powerfit"
    cmd = [str(pf.exe), str(map_file), str(case.resolution), str(moved_file), "-a", str(angle),
           "-p", str(threads), "-d", str(out), "-n", "1", "--delimiter", ","]
    # One BLAS / FFTW thread per PowerFit worker: -p sets its parallelism.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row.seconds = time.perf_counter() - t
    log = p.stdout + p.stderr
    if p.returncode != 0 or not (out / "solutions.out").exists():
        row.notes.append(f"PowerFit failed: {log.strip().splitlines()[-1] if log.strip() else p.returncode}")
        return row
    m = re.search(r"Real rotational sampling density:\s*([\d.]+)", log)
    if m:
        pf.grid = float(m.group(1))
    # PowerFit's fit i moves atom x to R_i (x - centre) + pos_i.
    sols = _read_solutions(out / "solutions.out")
    judged = [judge(SimpleNamespace(rotation=R, translation=pos - R @ centre), *truth) for R, pos in sols]
    _set_outcome(row, judged[0])
    row.rank = next((i + 1 for i, j in enumerate(judged) if j[0]), None)
    if row.rank is None:
        near = min(judged, key=lambda j: j[1])
        row.notes.append(f"none of its {len(sols)} solutions within 3 A / 6 deg" + (
            "" if near is judged[0] else
            f" (nearest: {near[2]:.2f} deg / {near[3]:.1f} A, RMSD {near[1]:.2f} A)"))
    elif row.rank > 1:
        row.notes.append(f"right solution (rank {row.rank}) RMSD {judged[row.rank - 1][1]:.2f} A")
    return row


# ----------------------------------------------------------------------------------------
# ChimeraX fitmap (not installed where this was written: kept short, untested here)
# ----------------------------------------------------------------------------------------

_CX_SCRIPT = """
import json, time
from chimerax.core.commands import run
args = json.load(open({args!r}))
t = time.perf_counter()
vol = run(session, "open " + args["map"])[0]
mol = run(session, "open " + args["model"])[0]
run(session, "volume #%s level %g" % (vol.id_string, args["threshold"]))
fits = run(session, "fitmap #%s inMap #%s resolution %g search %d placement sr "
           "clusterAngle 6 clusterShift 3 logFits false"
           % (mol.id_string, vol.id_string, args["resolution"], args["search"]))
sec = time.perf_counter() - t
top = fits[0]
top.place_models(session)
json.dump({{"seconds": sec, "hits": top.hits(), "matrix": mol.position.matrix.tolist()}},
          open(args["out"], "w"))
"""


def chimerax_status() -> tuple[str | None, str]:
    """(ChimeraX executable, note): the executable is None when ChimeraX cannot be run."""
    if importlib.util.find_spec("chimerax") is None:
        return None, "ChimeraX not installed: skipped"
    exe = shutil.which("ChimeraX") or shutil.which("chimerax")
    if exe is None:
        return None, "ChimeraX Python module found but no ChimeraX executable on PATH: skipped"
    return exe, ""


def run_chimerax(exe: str, case: Case, dmap, moved_file: Path, truth, search: int, tmp: Path) -> Row:
    row = Row(case.name, "ChimeraX")
    map_file = tmp / "map_for_chimerax.mrc"  # difffit's reading of the header (voxel overrides)
    write_map(map_file, dmap)
    args = {"map": str(map_file), "model": str(moved_file), "resolution": case.resolution,
            "threshold": default_threshold(dmap.data), "search": search, "out": str(tmp / "cx.json")}
    (tmp / "cx_args.json").write_text(json.dumps(args))
    script = tmp / "cx_fit.py"
    script.write_text(_CX_SCRIPT.format(args=str(tmp / "cx_args.json")))
    p = subprocess.run([exe, "--nogui", "--offscreen", "--exit", "--script", str(script)],
                       capture_output=True, text=True)
    if p.returncode != 0 or not Path(args["out"]).exists():
        row.notes.append(f"fitmap failed: {(p.stdout + p.stderr).strip()[-200:]}")
        return row
    res = json.loads(Path(args["out"]).read_text())
    M = np.array(res["matrix"])
    row.seconds, row.hits = res["seconds"], int(res["hits"])
    _set_outcome(row, judge(SimpleNamespace(rotation=M[:, :3], translation=M[:, 3]), *truth))
    row.notes.append(f"fitmap search {search}")
    return row


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def _yes_no(v: bool | None) -> str:
    return "—" if v is None else ("**yes**" if v else "no")


def markdown_table(rows: list[Row]) -> str:
    base = {r.dataset: r.seconds for r in rows if r.tool == "difffit" and r.seconds}
    out = ["| data set | tool | found | hits / rank | RMSD (A) | wall time (s) | time vs difffit | notes |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.hits is not None:
            hr = f"{r.hits} hit{'s' if r.hits != 1 else ''}"
        elif r.tool == "PowerFit" and r.found is not None:
            hr = f"rank {r.rank}" if r.rank else "not found"
        else:
            hr = "—"
        ratio = (f"{r.seconds / base[r.dataset]:.1f}x"
                 if r.seconds is not None and base.get(r.dataset) else "—")
        out.append(f"| {r.dataset} | {r.tool} | {_yes_no(r.found)} | {hr} | "
                   f"{'—' if r.rmsd is None else f'{r.rmsd:.2f}'} | "
                   f"{'—' if r.seconds is None else f'{r.seconds:.1f}'} | {ratio} | {'; '.join(r.notes)} |")
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    lines = []
    for tool in dict.fromkeys(r.tool for r in rows):
        ran = [r for r in rows if r.tool == tool and r.found is not None]
        if ran:
            lines.append(f"- {tool}: right pose ranked first on {sum(r.found for r in ran)} of {len(ran)} "
                         f"data sets, {sum(r.seconds for r in ran):.0f} s in all.")
    return "\n".join(lines)


def plot(rows: list[Row]) -> str:
    """A standalone SVG: wall time per data set and tool, right first-ranked poses highlighted."""
    timed = [r for r in rows if r.seconds is not None]
    fig = bar_chart([f"{r.dataset} · {r.tool}" for r in timed], [r.seconds for r in timed],
                    title="Wall time (orange: right pose ranked first)",
                    xlabel="wall time (s), same CPU cores",
                    highlight={i for i, r in enumerate(timed) if r.found})
    return fig[fig.index("<svg"):fig.rindex("</svg>") + len("</svg>")] + "\n"


def _revision() -> str:
    """The checkout's commit, marked when the library's sources differ from it."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD")
    if not rev:
        return "unknown revision"
    return rev + (" + local changes" if git("status", "--porcelain", "--", "python", "csrc") else "")


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.machine()


# ----------------------------------------------------------------------------------------


def main():
    names = [c.name for c in PEER_CASES]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", choices=names, default=names, metavar="NAME",
                    help=f"data sets to run (default: all of {', '.join(names)})")
    ap.add_argument("--skip-powerfit", action="store_true")
    ap.add_argument("--powerfit-angle", type=float, default=10.0,
                    help="PowerFit rotational sampling in degrees (its default, 10)")
    ap.add_argument("--powerfit-venv", type=Path, default=HERE / ".venvs" / "powerfit")
    ap.add_argument("--powerfit-spec", default=POWERFIT_SPEC, help="what pip installs into the venv")
    ap.add_argument("--chimerax-search", type=int, default=1000, help="fitmap random starts")
    ap.add_argument("--threads", type=int, default=2, help="CPU cores every tool runs on")
    ap.add_argument("--difffit-repeats", type=int, default=3,
                    help="difffit runs per data set; the median time is reported")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    # Every tool on the same cores: pin this process (children inherit) and size the
    # thread pools to them.
    cores = sorted(os.sched_getaffinity(0))[:args.threads]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))

    revision = _revision()  # of the difffit imported now, before the runs
    pf, pf_note = (None, "PowerFit skipped (--skip-powerfit)") if args.skip_powerfit else \
        ensure_powerfit(args.powerfit_venv, args.powerfit_spec)
    cx_exe, cx_note = chimerax_status()

    rows: list[Row] = []
    loads: list[float] = []  # 1-minute load average as each tool starts (timing noise)
    for case in (c for c in PEER_CASES if c.name in args.datasets):
        print(f"[{case.name}]", file=sys.stderr, flush=True)
        model = read_structure(DATA / case.model, chains=[case.chain] if case.chain else None)
        dmap = read_map(DATA / case.map, voxel_size=case.voxel)
        R0, t0 = random_move(zlib.crc32(case.name.encode()) % 1000)
        truth = (R0, t0, model, correct_poses(case, model))
        with tempfile.TemporaryDirectory(prefix="difffit_peers_") as tmp:
            tmp = Path(tmp)
            moved_file = tmp / "moved.pdb"
            write_structure(moved_file, model, R0, t0)
            loads.append(os.getloadavg()[0])
            rows.append(run_difffit(case, moved_file, truth, args.difffit_repeats))
            if case.note:
                rows[-1].notes.append(case.note)
            if pf:
                loads.append(os.getloadavg()[0])
                rows.append(run_powerfit(pf, case, dmap, moved_file, truth, args.powerfit_angle, len(cores), tmp))
            if cx_exe:
                loads.append(os.getloadavg()[0])
                rows.append(run_chimerax(cx_exe, case, dmap, moved_file, truth, args.chimerax_search, tmp))
        for r in rows[-3:]:
            if r.dataset == case.name:
                print(f"  {r.tool}: found={r.found} hits={r.hits} rank={r.rank} rmsd={r.rmsd} "
                      f"{r.seconds and round(r.seconds, 1)} s {'; '.join(r.notes)}",
                      file=sys.stderr, flush=True)

    cmd = "python benchmarks/peers.py" + "".join(f" {a}" for a in sys.argv[1:])
    tools = [f"difffit {revision} (default settings, torch {torch.__version__.split('+')[0]}, "
             f"median time of {args.difffit_repeats} runs)"]
    tools.append(f"PowerFit {pf.version} (`-a {args.powerfit_angle:g} -p {len(cores)}`: "
                 f"{pf.grid or float('nan'):.2f} deg rotation grid)" if pf else pf_note)
    tools.append(f"ChimeraX fitmap (search {args.chimerax_search})" if cx_exe else cx_note)
    table = markdown_table(rows)
    text = "\n".join([
        "# difffit vs PowerFit vs ChimeraX fitmap",
        "",
        f"`{cmd}`, {time.strftime('%Y-%m-%d')}, {_cpu_name()}, the same {len(cores)} CPU cores for "
        f"every tool, no GPU; 1-minute load average {min(loads):.1f} to {max(loads):.1f} as the "
        f"tools started (the machine is shared). Tools: {'; '.join(tools)}.",
        "",
        "Per data set the deposited model is moved by one random rigid transform (the same for every "
        "tool) and fitted back. Found: the top-ranked placement is within 3 A and 6 degrees of the "
        "deposited pose (or of an equally right copy); hits: size of the top cluster (difffit, "
        "ChimeraX); rank: PowerFit's rank of its first right solution. RMSD: all atoms of the "
        "top-ranked placement against the deposited model. Each tool fits once per data set "
        f"(difffit: {args.difffit_repeats} runs from the same start, median time, last run shown); "
        "the machine is shared, so timings are noisy.",
        "",
        table,
        "",
        summary(rows),
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(args.out / "peers.md", text)
    _atomic_write_bytes(args.out / "peers.svg", plot(rows))
    print(text)


if __name__ == "__main__":
    main()
