"""Joint assembly: place every subunit of a complex together (docs/method.md section 10).

1. **Own fits** (round 1): every structure is fitted alone (:func:`difffit.fit`); the best
   ``n_candidates`` x copies placements of each are the candidate starts.
2. **Configurations**: one pose per unit (a unit is one copy of one structure). The first
   is built greedily, candidates of all structures best score first, skipping those whose
   CA trace clashes with one taken (composite's rule, in one round); ``n_combos - 1`` more
   are built the same way with the candidates' order shuffled by noise, and ``n_random``
   put every unit at a random pose in the density. A unit with no candidate left starts
   at a random pose.
3. **Joint optimisation** (round 2): all configurations at once, Adam on every unit's pose
   ascending the joint score of :mod:`difffit.assembly` (map score of every unit minus
   the penalty on density claimed twice), on the search pyramid, then refined jointly
   against the unsmoothed map. The configuration with the best joint score (on the
   pyramid, at the refined poses) is the answer; the 8 best are also measured as ChimeraX
   would (their atom-weighted cam less the claims is in the candidates' reasons).

With a symmetry (``symmetry="C4"``, ``"D2"``, ``"auto"``; :mod:`difffit.symmetry`) the
structures are the asymmetric unit: their symmetric images are scored and penalised with
them, and the answer lists every image as a copy.

The result is a :class:`~difffit.results.CompositeResult` (two rounds: the own fits'
candidates; the configurations with the chosen one accepted), written, resumed and
reported as composite's (``round_01`` holds the candidates: a resumed run skips the own
fits). The per-unit evidence is in the accepted rows: the unit's start (``start_rank``, its
rank in its own fit, 0 for a random start), its own best score alone
(``own_best_score``), the joint score of the configuration and the claim penalty.
"""
from __future__ import annotations

import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..assembly import Assembly, optimise_joint, poses_to_qt, qt_to_pose
from ..copies import Occupancy
from ..errors import DifffitInputError, DifffitWarning
from ..metrics import chimerax_metrics
from ..output.composite import read_round, write_composite_outputs, write_round, round_dir
from ..params import AcceptRules, AssembleParams, FitParams, resolve
from ..preprocess import build_pyramid, envelope_positions
from ..results import CompositePlacement, CompositeResult, RoundRecord
from ..rotations import random_rotations
from ..runs import RunFolder, map_fingerprint, structure_fingerprint
from ..simulate import zero_out
from ..simulators import simulator_for
from ..structures import trace_mask
from ..symmetry import resolve_symmetry
from ..tables import pose_columns
from .composite import _normalise_copies
from ..search import raw_volume
from .fit import as_map, as_structures, check_resolution, check_threshold, fit

__all__ = ["assemble"]

STATE_FILE = "state.json"
_MEASURED = 8  # configurations, best by the joint score, measured as ChimeraX would
_STATE_FORMAT = "difffit-assemble-state/1"


def _units(want: list[int | None], n_images: int) -> list[int]:
    """[K] structure of each unit: its copies (one when open); with a symmetry of
    ``n_images`` operators, its copies in the asymmetric unit (copies / n_images)."""
    out = []
    for i, w in enumerate(want):
        if w is not None and w % n_images:
            raise DifffitInputError(
                f"copies: {w} copies of structure {i + 1} cannot be made of whole symmetric "
                f"sets of {n_images}; give a multiple of {n_images} (or leave it open: one "
                f"per asymmetric unit)")
        out += [i] * (1 if w is None else w // n_images)
    return out


def _candidates_from_rows(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(int(r["input"]) - 1, []).append(r)
    return out


def _pose(row: dict) -> tuple[np.ndarray, np.ndarray]:
    R = np.array([[row[f"r{i}{j}"] for j in (1, 2, 3)] for i in (1, 2, 3)], dtype=np.float64)
    return R, np.array([row["tx"], row["ty"], row["tz"]], dtype=np.float64)


def _build_configs(cands: dict[int, list[dict]], unit_struct: list[int], traces, sym,
                   rules: AcceptRules, n_combos: int, rng: np.random.Generator):
    """[C] configurations: per unit the index of its candidate (None: random start)."""
    order = [(g, j) for g, rows in cands.items() for j in range(len(rows))]
    scores = np.array([cands[g][j]["score"] for g, j in order], dtype=np.float64)
    spread = float(np.nanstd(scores)) if len(scores) > 1 else 0.1
    configs, seen = [], set()
    for c in range(n_combos * 3):
        if len(configs) >= n_combos:
            break
        key = scores if c == 0 else scores + spread * rng.gumbel(size=len(scores))
        occ = Occupancy()
        free = {g: [k for k, u in enumerate(unit_struct) if u == g] for g in set(unit_struct)}
        choice: list[int | None] = [None] * len(unit_struct)
        for idx in np.argsort(-np.nan_to_num(key, nan=-np.inf), kind="stable"):
            g, j = order[idx]
            if not free.get(g):
                continue
            R, T = _pose(cands[g][j])
            imgs = [(R, T)] if sym is None else [(G @ R, G @ (T - sym.centre) + sym.centre)
                                                 for G in sym.operators()]
            xyz = [traces[g] @ r.T + t for r, t in imgs]
            if any(occ.worst(x, rules.clash_distance)[0] > rules.max_clash for x in xyz):
                continue
            for k, x in enumerate(xyz):
                occ.add(f"{g}:{j}:{k}", x)
            choice[free[g].pop(0)] = j
        t = tuple(choice)
        if t not in seen:
            seen.add(t)
            configs.append(choice)
    return configs


def _run_key(dmap, structs, resolution, thr, want, sym, params, ap, rules) -> dict:
    p = asdict(params)
    p.pop("device")
    return {"map": {k: v for k, v in map_fingerprint(dmap).items() if k in ("grid_xyz", "sha1")},
            "structures": [[s.name, s.n_atoms, structure_fingerprint(s)] for s in structs],
            "resolution": resolution, "threshold": thr, "copies": want,
            "symmetry": None if sym is None else sym.as_dict(), "fit_params": p,
            "assemble": asdict(ap), "clash": [rules.clash_distance, rules.max_clash]}


def assemble(target, structures, resolution: float, threshold: float | None = None,
             copies=None, symmetry=None, symmetry_axis=None, symmetry_centre=None,
             outdir=None, resume: bool = False, force: bool = False,
             params: FitParams | None = None, settings: AssembleParams | None = None,
             rules: AcceptRules | None = None, progress: bool = False,
             log: Callable[[str], None] | None = None, **overrides) -> CompositeResult:
    """Place every subunit of a complex together, optimising their poses jointly.

    Args:
        target: DensityMap or path of an MRC/CCP4 map.
        structures: Structure objects or paths, one per subunit (all chains of one move
            together); with a symmetry, the asymmetric unit.
        resolution: map resolution in Angstrom.
        threshold: contour level (None: mean + 1 standard deviation).
        copies: copies of each structure (as composite's; an open number counts as 1).
            With a symmetry: copies in the whole map, a multiple of the group's size.
        symmetry: None, "Cn", "Dn", "auto" or a :class:`difffit.symmetry.Symmetry`.
        symmetry_axis, symmetry_centre: [3] each; None: found from the map.
        outdir: write the rounds and the final outputs here (composite's layout).
        resume: continue the run in ``outdir`` (skips the own fits when they are recorded).
        force: start anew in a non-empty ``outdir``.
        params: FitParams of the own fits (also the pyramid of the joint score).
        settings: AssembleParams. rules: AcceptRules (its clash_distance and max_clash
            build the greedy configurations and flag clashing answers).
        progress: progress lines on stderr; log: where they go.
        overrides: single fields of FitParams, AssembleParams or AcceptRules.

    Returns:
        CompositeResult: ``placements`` the chosen configuration (every unit and image),
        ``rounds[0]`` the own fits' candidates, ``rounds[1]`` every configuration.
    """
    t_start = time.perf_counter()
    if resume and outdir is None:
        raise DifffitInputError("assemble: resume=True needs the outdir of the run to resume")
    params, ap, rules = resolve(overrides, (FitParams, params), (AssembleParams, settings),
                                (AcceptRules, rules))
    resolution = check_resolution(resolution)
    dmap = as_map(target)
    structs = as_structures(structures)
    want = _normalise_copies(copies, structs)
    thr = check_threshold(threshold, dmap)
    if log is None:
        log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    sym = resolve_symmetry(dmap, thr, symmetry, symmetry_axis, symmetry_centre)
    if sym is not None:
        log(f"assemble: symmetry {sym.describe()}")
    n_img = 1 if sym is None else sym.n_operators
    unit_struct = _units(want, n_img)
    device = params.torch_device()

    now = {"format": _STATE_FORMAT, "difffit_version": __version__,
           "key": _run_key(dmap, structs, resolution, thr, want, sym, params, ap, rules),
           "map_path": None if dmap.path is None else str(Path(dmap.path).resolve()),
           "rounds": [], "finished": False, "stop_reason": None}
    out = Path(outdir) if outdir is not None else None
    rounds: list[RoundRecord] = []
    if out is not None:
        folder = RunFolder(out, STATE_FILE, owned=("round_[0-9]*", ".round_*"), what="assemble")
        state = folder.open(now["key"], resume, force)
        if state is not None:
            rounds = [read_round(out, int(r["round"])) for r in state["rounds"]][:1]
            now["rounds"] = state["rounds"][:1]
            for p in [*out.glob(".round_*"), round_dir(out, 2)]:
                if p.exists():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            log(f"assemble: resuming {out} after its own fits" if rounds else
                f"assemble: resuming {out} from the start")
        folder.write_state(now)

    # Round 1: every structure fitted alone; its best placements are the candidates.
    if not rounds:
        t0 = time.perf_counter()
        res = fit(dmap, structs, resolution, threshold=thr, params=params, progress=progress)
        rows = []
        for i, s in enumerate(structs):
            n_units = unit_struct.count(i) * n_img
            for p in res.for_structure(i)[: ap.n_candidates * n_units]:
                rows.append({"round": 1, "structure": s.name, "input": i + 1, "rank": p.rank,
                             "hits": p.hits, "score": float(p.score),
                             "correlation": p.metric("correlation"),
                             "inside_fraction": p.metric("inside_fraction"),
                             "clash_fraction": None, "decision": "candidate", "reason": "",
                             **pose_columns(p.rotation, p.translation, p.centre)})
        rec = RoundRecord(index=1, fitted=list(range(len(structs))), accepted=[], candidates=rows,
                          timings={"fit": time.perf_counter() - t0}, remaining=1.0)
        if out is not None:
            write_round(out, rec, structs, None, params.rank_by)
            now["rounds"].append({"round": 1, "dir": round_dir(out, 1).name, "accepted": 0,
                                  "timings": rec.timings})
            folder.write_state(now)
        rounds.append(rec)
        log(f"assemble: own fits of {len(structs)} structure(s) in {rec.timings['fit']:.1f} s")

    # Round 2: configurations, optimised jointly; the best joint score is the answer.
    t0 = time.perf_counter()
    cands = _candidates_from_rows(rounds[0].candidates)
    own_best = {g: max(r["score"] for r in rows) for g, rows in cands.items()}
    traces = [s.coords[trace_mask(s)] for s in structs]
    rng = np.random.default_rng(params.seed)
    configs = _build_configs(cands, unit_struct, traces, sym, rules, ap.n_combos, rng)
    configs += [[None] * len(unit_struct) for _ in range(ap.n_random)]
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, thr, n_levels=params.n_levels,
                        sigma=params.smooth_sigma, negative=params.negative,
                        dust_min_size=params.dust_min_size)
    volume = pyr.levels.sum(-1, keepdim=True).to(device).contiguous()
    origin, voxel = pyr.origin.tolist(), pyr.voxel_size.tolist()
    C, K = len(configs), len(unit_struct)
    n_rand = sum(c is None for cfg in configs for c in cfg)
    g = torch.Generator().manual_seed(params.seed)
    rand_q = random_rotations(max(n_rand, 1), generator=g).to(torch.float64)
    rand_t = envelope_positions(pyr, max(n_rand, 1), seed=params.seed).to(torch.float64)
    q0 = torch.zeros(C, K, 4, dtype=torch.float64)
    t0_ = torch.zeros(C, K, 3, dtype=torch.float64)
    r = 0
    centroids = [s.centroid for s in structs]
    for c, cfg in enumerate(configs):
        for k, j in enumerate(cfg):
            if j is None:
                q0[c, k], t0_[c, k] = rand_q[r], rand_t[r]
                r += 1
            else:
                R, T = _pose(cands[unit_struct[k]][j])
                q0[c, k], t0_[c, k] = poses_to_qt(R, T, centroids[unit_struct[k]])
    G = None if sym is None else sym.operators()
    asm = Assembly(structs, unit_struct, ap.clash_weight, G, None if sym is None else sym.centre,
                   device=device)
    box = np.array(pyr.shape[::-1]) * pyr.voxel_size
    lr_trans = params.lr_trans if params.lr_trans else 0.01 * float(box.mean())
    q, t = optimise_joint(asm, volume, origin, voxel, q0, t0_, ap.joint_iters, params.lr_quat, lr_trans)
    raw = raw_volume(dmap, device).to(asm.dtype)
    asm_raw = Assembly(structs, unit_struct, ap.clash_weight / params.n_levels, G,
                       None if sym is None else sym.centre, device=device)
    step = 0.1 * float(np.mean(dmap.voxel_size))
    q, t = optimise_joint(asm_raw, raw, dmap.origin.tolist(), dmap.voxel_size.tolist(), q, t,
                          ap.refine_iters, 0.01 * step, step)
    with torch.no_grad():
        terms = asm.terms(volume, origin, voxel, q, t)
    joint = terms["joint"].double().cpu().numpy()
    # The answer is the configuration with the best joint score, the objective optimised.
    # The best ones by it are also measured as ChimeraX would, with their atom-weighted cam
    # less the claim penalty beside (evidence: on haemoglobin at 20 A that cam score
    # prefers an alpha/beta swap by 0.006, the joint score the right assembly).
    ist = asm.image_struct()
    n_fit = np.array([structs[m].n_fit_atoms for m in ist], dtype=np.float64)
    claim_all = terms["claim"].double().cpu().numpy()                       # [C, G*K]
    top = [int(c) for c in np.argsort(-np.nan_to_num(joint, nan=-np.inf), kind="stable")[:_MEASURED]]
    measured: dict[int, tuple[list, dict]] = {}
    joint_cam = np.full(C, np.nan)
    for c in top:
        qi, ti = asm.images(q[c:c + 1], t[c:c + 1])
        poses = [qt_to_pose(qi[0, k], ti[0, k], centroids[m]) for k, m in enumerate(ist)]
        cx = chimerax_metrics(dmap, structs, np.stack([p[0] for p in poses]),
                              np.stack([p[1] for p in poses]), np.array(ist), resolution, thr)
        measured[c] = (poses, cx)
        joint_cam[c] = float((n_fit * (np.nan_to_num(cx[params.rank_by], nan=-1.0)
                                       - claim_all[c])).sum() / n_fit.sum())
    best = top[0]
    t_opt = time.perf_counter() - t0

    # The chosen configuration: every unit and image, with the metrics measured above.
    poses, cx = measured[best]
    occupancy = Occupancy()
    counts = [0] * len(structs)
    placements = []
    claim = terms["claim"][best].double().cpu().numpy()
    unit_s = terms["unit_score"][best].double().cpu().numpy()
    for k, m in enumerate(ist):
        R, T = poses[k]
        xyz = traces[m] @ R.T + T
        clash, who = occupancy.worst(xyz, rules.clash_distance)
        counts[m] += 1
        s = structs[m]
        j = configs[best][k % K]
        mets = {key: float(v[k]) for key, v in cx.items()}
        mets.update({"pyramid_score": float(unit_s[k]), "claim": float(claim[k]),
                     "clash_fraction": float(clash), "joint_score": float(joint[best]),
                     "joint_cam": float(joint_cam[best]),
                     "start_rank": 0.0 if j is None else float(cands[m][j]["rank"]),
                     "own_best_score": float(own_best.get(m, float("nan")))})
        p = CompositePlacement(rotation=R, translation=T, centre=R @ centroids[m] + T,
                               score=mets.get(params.rank_by, float("nan")), hits=1,
                               metrics=mets, structure_index=m, structure_name=s.name,
                               copy=counts[m], round=2,
                               chains=[f"{c}_{m + 1}_{counts[m]}" for c in s.chains])
        if clash > rules.max_clash:
            warnings.warn(f"assemble: {s.name} copy {p.copy} clashes with {who} "
                          f"({clash:.0%} of its CA atoms within {rules.clash_distance:g} A); "
                          f"more configurations (n_combos, --combos) or a larger clash_weight "
                          f"(--clash-weight) may help",
                          DifffitWarning, stacklevel=2)
        occupancy.add(f"{s.name} copy {p.copy}", xyz)
        placements.append(p)
    rows = []
    for c, cfg in enumerate(configs):
        for k, m in enumerate(ist[:K] if sym is None else ist):
            j = cfg[k % K]
            Rk, Tk = qt_to_pose(*[x[0, k] for x in asm.images(q[c:c + 1], t[c:c + 1])],
                                centroids[m])
            rows.append({"round": 2, "structure": structs[m].name, "input": m + 1,
                         "rank": c + 1, "hits": 1,
                         "score": float(terms["unit_score"][c, k]),
                         "correlation": None, "inside_fraction": None,
                         "clash_fraction": float(terms["claim"][c, k]),
                         "decision": "accepted" if c == best else "rejected",
                         "reason": (f"configuration {c + 1}: joint score {joint[c]:.4f}"
                                    + ("" if np.isnan(joint_cam[c]) else
                                       f", atom-weighted {params.rank_by} less claims "
                                       f"{joint_cam[c]:.4f}")
                                    + ("" if c == best else " (not the best)")),
                         "start": "random" if j is None else f"own fit rank {cands[m][j]['rank']}",
                         **pose_columns(Rk, Tk, Rk @ centroids[m] + Tk)})
    working = zero_out(dmap, [p.moved(structs[p.structure_index]) for p in placements],
                       resolution, rules.zero_fraction, str(device), simulator_for(params))
    d = dmap.data
    total = float(d[d > thr].sum(dtype=np.float64)) or 1.0
    rec = RoundRecord(index=2, fitted=list(range(len(structs))), accepted=placements,
                      candidates=rows, timings={"joint": t_opt},
                      remaining=float(working.data[working.data > thr].sum(dtype=np.float64)) / total)
    stop = (f"joint optimum of {C} configuration(s) ({len(configs) - ap.n_random} from the own "
            f"fits, {ap.n_random} random): joint score {joint[best]:.4f}"
            + ("" if sym is None else f"; symmetry {sym.name}, self-correlation {sym.score:.3f}"))
    if out is not None:
        write_round(out, rec, structs, working, params.rank_by)
        now["rounds"].append({"round": 2, "dir": round_dir(out, 2).name,
                              "accepted": len(placements), "timings": rec.timings})
        folder.write_state(now)
    rounds.append(rec)
    log(f"assemble: {C} configuration(s) of {K} unit(s) optimised jointly in {t_opt:.1f} s; "
        f"best joint score {joint[best]:.4f} ({params.rank_by}: {joint_cam[best]:.4f})")
    want_out = [counts[i] if want[i] is None else want[i] for i in range(len(structs))]
    result = CompositeResult(placements=placements, structures=structs, map=dmap,
                             working_map=working, resolution=resolution, threshold=thr,
                             params=params, rules=rules, copies=want_out, rounds=rounds,
                             stop_reason=stop, outdir=out, symmetry=sym)
    if out is not None:
        now["finished"], now["stop_reason"] = True, stop
        now["symmetry"] = None if sym is None else sym.as_dict()
        now["total_seconds_last_session"] = time.perf_counter() - t_start
        folder.write_state(now)
        result.paths = write_composite_outputs(result, out)
    return result
