"""A self-contained demo: an ideal protein, a simulated map holding copies of it, a fit.

Nothing is downloaded. :func:`ideal_protein` builds a small helical bundle with ideal
backbone geometry (Engh & Huber bond lengths and angles, by NeRF); :func:`demo_map`
simulates a noisy map with copies of it at random poses; :func:`run_demo` fits the
structure back into the map and checks every copy was found.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import gemmi
import numpy as np
import torch

from .errors import DifffitInputError
from .maps import DensityMap
from .structures import Structure, _structure_from_gemmi
from .rotations import quat_to_matrix, rotation_angle_deg
from .simulate import splat_atoms
from .starts import starts_per_structure

__all__ = ["ideal_protein", "demo_map", "run_demo", "BOND", "ANGLE"]

# Engh & Huber (1991) ideal backbone geometry: Angstrom and degrees.
BOND = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329, "C-O": 1.231, "CA-CB": 1.530}
ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "CA-C-O": 120.8,
         "N-CA-CB": 110.5}
OMEGA = 180.0
# Torsion C-N-CA-CB of an L-amino acid (measured on 5NI1: -122.7).
CB_TORSION = -122.6
HELIX_PHI_PSI = (-57.0, -47.0)

# Loop residue conformations sampled when searching for a compact bundle:
# (phi, psi, residue name). Left-handed (phi > 0) residues are glycines.
_LOOP_STATES = (
    (-120.0, 130.0, "SER"),   # beta
    (-70.0, 145.0, "PRO"),    # polyproline II
    (-65.0, -40.0, "ASN"),    # alpha-R
    (-90.0, 0.0, "ASP"),      # bridge
    (80.0, 10.0, "GLY"),      # alpha-L
    (90.0, -170.0, "GLY"),    # extended glycine
)
_HELIX_RESIDUES = ("LEU", "ALA", "GLU", "LYS", "ALA", "LEU", "ARG")


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float,
           torsion_deg) -> np.ndarray:
    """NeRF: position of atom d bonded to c, given the three previous atoms a, b, c.

    Args:
        a, b, c: [..., 3] positions.
        bond: |c - d| in Angstrom; angle_deg: angle b-c-d; torsion_deg: dihedral a-b-c-d
            (scalar or [...]).

    Returns:
        [..., 3] position of d.
    """
    theta = math.radians(angle_deg)
    tau = np.radians(np.asarray(torsion_deg, dtype=np.float64))[..., None]
    bc = c - b
    bc /= np.linalg.norm(bc, axis=-1, keepdims=True)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    m = np.cross(n, bc)
    d_loc_x = -bond * math.cos(theta)
    d_loc_y = bond * math.sin(theta) * np.cos(tau)
    d_loc_z = bond * math.sin(theta) * np.sin(tau)
    return c + d_loc_x * bc + d_loc_y * m + d_loc_z * n


def _extend(backbone: list[np.ndarray], phi_psi: np.ndarray) -> list[np.ndarray]:
    """Append residues to a backbone trace, vectorised over trials.

    Args:
        backbone: [N, CA, C, psi] of the last residue built so far: three [T, 3]
            positions and its psi ([T] degrees), which places the first new N.
        phi_psi: [T, L, 2] (phi, psi) in degrees of the L new residues.

    Returns:
        List of [T, 3] positions N, CA, C for each new residue, in order.
    """
    n_prev, ca_prev, c_prev, psi_prev = backbone
    out = []
    for k in range(phi_psi.shape[1]):
        n = _place(n_prev, ca_prev, c_prev, BOND["C-N"], ANGLE["CA-C-N"], psi_prev)
        ca = _place(ca_prev, c_prev, n, BOND["N-CA"], ANGLE["C-N-CA"], OMEGA)
        c = _place(c_prev, n, ca, BOND["CA-C"], ANGLE["N-CA-C"], phi_psi[:, k, 0])
        out += [n, ca, c]
        n_prev, ca_prev, c_prev, psi_prev = n, ca, c, phi_psi[:, k, 1]
    return out


def _first_residue() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, CA, C of the first residue, in a fixed frame."""
    n = np.zeros(3)
    ca = np.array([BOND["N-CA"], 0.0, 0.0])
    ang = math.radians(ANGLE["N-CA-C"])
    c = ca + BOND["CA-C"] * np.array([-math.cos(ang), math.sin(ang), 0.0])
    return n, ca, c


def _ca_clash(new_ca: np.ndarray, all_ca: np.ndarray, first_new: int, min_dist: float
              ) -> np.ndarray:
    """[T] True where a new CA comes closer than ``min_dist`` to a CA more than one
    residue away from it.

    Args:
        new_ca: [T, n_new, 3] CA positions of the residues just built.
        all_ca: [T, n_all, 3] all CA positions, the new ones last (index of the first new
            one: ``first_new``).
    """
    d2 = (np.einsum("tnk,tnk->tn", new_ca, new_ca)[:, :, None]
          + np.einsum("tmk,tmk->tm", all_ca, all_ca)[:, None, :]
          - 2.0 * np.einsum("tnk,tmk->tnm", new_ca, all_ca))        # [T, n_new, n_all]
    i = first_new + np.arange(new_ca.shape[1])
    far = np.abs(i[:, None] - np.arange(all_ca.shape[1])[None, :]) > 1
    return (d2[:, far] < min_dist ** 2).any(axis=1)


def _radius_of_gyration(x: np.ndarray) -> np.ndarray:
    """[..., N, 3] -> [...] radius of gyration (unweighted)."""
    c = x.mean(axis=-2, keepdims=True)
    return np.sqrt(((x - c) ** 2).sum(-1).mean(-1))


def _full_residues(bb: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Add O and CB to backbone traces.

    Args:
        bb: [..., R, 3, 3] N, CA, C of R residues.
        psi: [..., R] psi of each residue (degrees); O is trans to the next N, i.e. at
            torsion N-CA-C-O = psi + 180.

    Returns:
        [..., R, 5, 3] N, CA, C, O, CB.
    """
    n, ca, c = bb[..., 0, :], bb[..., 1, :], bb[..., 2, :]
    o = _place(n, ca, c, BOND["C-O"], ANGLE["CA-C-O"], psi + 180.0)
    cb = _place(c, n, ca, BOND["CA-CB"], ANGLE["N-CA-CB"], np.full(psi.shape, CB_TORSION))
    return np.stack([n, ca, c, o, cb], axis=-2)


# Minimum distances between atoms of residues two or more apart. An ideal helix has its
# closest such pairs at 3.09 A (O(i)...N(i+4)); CB stands in for the missing side chains,
# so CB pairs keep more room.
_MIN_DIST = 3.0
_MIN_DIST_CB = 3.8


def _atom_clash(full: np.ndarray, first_new: int) -> np.ndarray:
    """[B] True where an atom of a new residue clashes with one two or more residues away.

    Args:
        full: [B, R, 5, 3] residues N, CA, C, O, CB (the new ones from ``first_new`` on).
    """
    B, R = full.shape[:2]
    new = full[:, first_new:].reshape(B, -1, 3)                 # [B, 5 n_new, 3]
    allx = full.reshape(B, -1, 3)                               # [B, 5 R, 3]
    d = np.linalg.norm(new[:, :, None, :] - allx[:, None, :, :], axis=-1)
    res_new = np.repeat(np.arange(first_new, R), 5)
    res_all = np.repeat(np.arange(R), 5)
    is_cb_new = np.tile(np.arange(5) == 4, R - first_new)
    is_cb_all = np.tile(np.arange(5) == 4, R)
    apart = np.abs(res_new[:, None] - res_all[None, :]) >= 2
    limit = np.where(is_cb_new[:, None] & is_cb_all[None, :], _MIN_DIST_CB, _MIN_DIST)
    return ((d < limit) & apart).any(axis=(1, 2))


def ideal_protein(n_helices: int = 3, helix_length: int = 18, seed: int = 0,
                  loop_length: int = 5, n_trials: int = 3000) -> Structure:
    """A compact, asymmetric helical bundle with ideal backbone geometry.

    Helices (phi, psi = -57, -47) are joined by loops whose phi/psi are chosen, loop by
    loop, among ``n_trials`` random combinations of common loop conformations (beta,
    polyproline II, alpha-R, bridge, alpha-L glycine): the most compact combination
    (smallest CA radius of gyration) without clashes wins, so the helices pack side by
    side. No clash means: CA of residues two or more apart at least 4.2 A apart, any
    other atoms 3.0 A (an ideal helix's closest such pair, O(i)...N(i+4), is 3.09 A)
    and CB pairs 3.8 A, leaving room for the side chains not built. Helix lengths differ
    (``helix_length`` + 0, -3, +4, +1, ... residues) so that the bundle has no
    pseudo-symmetry and its orientation in a map is unambiguous. All bond lengths and
    angles are the Engh & Huber values (see ``BOND``, ``ANGLE``; omega = 180); each
    residue has N, CA, C, O and, except glycine, CB.

    Args:
        n_helices: number of helices (>= 1).
        helix_length: residues of the first helix (>= 4).
        seed: seed of the loop search; the same arguments give the same structure.
        loop_length: residues per loop.
        n_trials: loop conformations tried per loop.

    Returns:
        Structure named "ideal_bundle" (chain "A", residues numbered from 1), fitted on
        its backbone atoms; ``path`` is None.
    """
    if int(n_helices) < 1 or int(helix_length) < 4 or int(loop_length) < 2:
        raise DifffitInputError(
            f"ideal_protein needs n_helices >= 1, helix_length >= 4 and loop_length >= 2, "
            f"got {n_helices}, {helix_length}, {loop_length}"
        )
    rng = np.random.default_rng(seed)
    offsets = (0, -3, 4, 1, -2, 3)
    lengths = [max(4, helix_length + offsets[i % len(offsets)]) for i in range(n_helices)]

    # Residue-by-residue (phi, psi) and names of the chain built so far.
    n0, ca0, c0 = _first_residue()
    trace = [n0[None], ca0[None], c0[None]]          # list of [1, 3] N, CA, C, N, CA, C, ...
    names = [_HELIX_RESIDUES[0]]
    phipsi = [HELIX_PHI_PSI]
    first = np.tile(np.array(HELIX_PHI_PSI), (1, lengths[0] - 1, 1))  # [1, L-1, 2]
    trace += _extend([trace[-3], trace[-2], trace[-1], np.array([HELIX_PHI_PSI[1]])], first)
    names += [_HELIX_RESIDUES[k % len(_HELIX_RESIDUES)] for k in range(1, lengths[0])]
    phipsi += [HELIX_PHI_PSI] * (lengths[0] - 1)

    states = np.array([s[:2] for s in _LOOP_STATES])  # [S, 2]
    for h in range(1, n_helices):
        T = int(n_trials)
        pick = rng.integers(0, len(_LOOP_STATES), size=(T, loop_length))  # [T, loop]
        helix = np.tile(np.array(HELIX_PHI_PSI), (T, lengths[h], 1))
        seg = np.concatenate([states[pick], helix], axis=1)  # [T, loop + L, 2]
        # The last helix residue built so far keeps its helical psi.
        start = [np.repeat(trace[-3], T, 0), np.repeat(trace[-2], T, 0),
                 np.repeat(trace[-1], T, 0), np.full(T, phipsi[-1][1])]
        new = _extend(start, seg)                          # list of [T, 3]
        old_ca = np.repeat(np.stack(trace[1::3], 1), T, 0)  # [T, n_old, 3]
        new_ca = np.stack(new[1::3], 1)                    # [T, n_new, 3]
        all_ca = np.concatenate([old_ca, new_ca], 1)
        bad = _ca_clash(new_ca, all_ca, old_ca.shape[1], 4.2)
        rg = _radius_of_gyration(all_ca)
        rg[bad] = np.inf
        # The most compact candidates first; the first with no atom clash wins.
        old_full = _full_residues(np.concatenate(trace, 0).reshape(-1, 3, 3),
                                  np.array([p[1] for p in phipsi]))       # [n_old, 5, 3]
        order = np.argsort(rg, kind="stable")
        order = order[np.isfinite(rg[order])]
        best = None
        for a in range(0, order.size, 64):
            cand = order[a:a + 64]
            new_bb = np.stack(new, 1)[cand].reshape(cand.size, -1, 3, 3)  # [B, n_new, 3, 3]
            new_full = _full_residues(new_bb, seg[cand, :, 1])
            full = np.concatenate([np.repeat(old_full[None], cand.size, 0), new_full], 1)
            ok = ~_atom_clash(full, old_full.shape[0])
            if ok.any():
                best = int(cand[np.argmax(ok)])
                break
        if best is None:
            raise DifffitInputError(
                f"ideal_protein: no clash-free loop found for helix {h + 1}; "
                f"try another seed or more trials"
            )
        trace += [x[best][None] for x in new]
        names += [_LOOP_STATES[s][2] for s in pick[best]]
        names += [_HELIX_RESIDUES[k % len(_HELIX_RESIDUES)] for k in range(lengths[h])]
        phipsi += [tuple(states[s]) for s in pick[best]] + [HELIX_PHI_PSI] * lengths[h]

    bb = np.concatenate(trace, 0).reshape(-1, 3, 3)  # [R, (N, CA, C), 3]
    n_res = bb.shape[0]
    full = _full_residues(bb, np.array([p[1] for p in phipsi]))  # [R, 5, 3]
    # Centre the molecule on its centroid, in a frame with no special orientation.
    centre = bb.reshape(-1, 3).mean(0)

    st = gemmi.Structure()
    st.name = "ideal_bundle"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    serial = 1
    for i in range(n_res):
        res = gemmi.Residue()
        res.name = names[i]
        res.seqid = gemmi.SeqId(i + 1, " ")
        res.entity_type = gemmi.EntityType.Polymer
        atoms = [("N", "N", full[i, 0]), ("CA", "C", full[i, 1]), ("C", "C", full[i, 2]),
                 ("O", "O", full[i, 3])]
        if names[i] != "GLY":
            atoms.append(("CB", "C", full[i, 4]))
        for name, el, pos in atoms:
            a = gemmi.Atom()
            a.name = name
            a.element = gemmi.Element(el)
            a.pos = gemmi.Position(*(pos - centre))
            a.occ = 1.0
            a.b_iso = 30.0
            a.serial = serial
            serial += 1
            res.add_atom(a)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return _structure_from_gemmi(st, "ideal_bundle", None, "backbone")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return quat_to_matrix(torch.from_numpy(q)).numpy()


def demo_map(structure: Structure, n_copies: int = 2, resolution: float = 5.0,
             voxel: float = 1.5, noise: float = 0.1, seed: int = 0
             ) -> tuple[DensityMap, list[tuple[np.ndarray, np.ndarray]]]:
    """A simulated map holding ``n_copies`` copies of ``structure`` at random poses.

    The copies get uniform random rotations and random positions in a cubic box,
    no two copies closer than 4 A (atom to atom) and every centroid at least its radius
    plus 1.5 x resolution from the box faces. The density is the molmap of all atoms (Gaussians of
    sigma 0.225 x resolution, amplitude = atomic number) on the box grid, plus white
    Gaussian noise of standard deviation ``noise`` x the maximum density.

    Args:
        structure: the molecule (all its kept atoms are simulated).
        n_copies: number of copies (>= 1).
        resolution: Angstrom; voxel: grid spacing in Angstrom.
        noise: noise standard deviation as a fraction of the maximum (0 for none).
        seed: the same arguments give the same map and poses.

    Returns:
        (map, poses): the DensityMap (origin 0, ``path`` None) and, per copy, the true
        (R [3, 3], t [3]) acting on the structure's original coordinates (x -> R x + t).
    """
    if int(n_copies) < 1:
        raise DifffitInputError(f"n_copies must be >= 1, got {n_copies}")
    if not resolution > 0 or not voxel > 0 or noise < 0:
        raise DifffitInputError(
            f"resolution and voxel must be positive and noise >= 0, got {resolution}, "
            f"{voxel}, {noise}"
        )
    rng = np.random.default_rng(seed)
    xyz = structure.coords
    c = structure.centroid
    radius = float(np.linalg.norm(xyz - c, axis=1).max())
    # Centres stay ``pad`` from the faces: the whole molecule and its density (cut at
    # 5 sigma ~ 1.1 x resolution) lie inside the box.
    pad = radius + 1.5 * resolution
    # Room for the centres: a cube whose side grows with the cube root of the copies.
    inner = 1.2 * radius * (n_copies ** (1.0 / 3.0)) if n_copies > 1 else 0.0
    n = int(math.ceil((inner + 2.0 * pad) / voxel)) + 1
    edge = (n - 1) * voxel

    poses: list[tuple[np.ndarray, np.ndarray]] = []
    placed: list[np.ndarray] = []
    for k in range(int(n_copies)):
        for _attempt in range(10_000):
            R = _random_rotation(rng)
            centre = rng.uniform(pad, max(pad, edge - pad), size=3)
            t = centre - R @ c
            moved = xyz @ R.T + t
            ok = True
            for other in placed:
                if np.linalg.norm(centre - other.mean(0)) < 2 * radius + 4.0:
                    d = np.linalg.norm(moved[:, None, :] - other[None, :, :], axis=-1)
                    ok = d.min() >= 4.0
                if not ok:
                    break
            if ok:
                break
        else:  # pragma: no cover - the box is sized so this does not happen
            raise DifffitInputError(f"demo_map: could not place copy {k + 1} without overlap")
        poses.append((R, t))
        placed.append(moved)

    coords = np.concatenate(placed, 0)
    z = np.tile(structure.atomic_numbers, int(n_copies))
    shape = (n, n, n)
    data = splat_atoms(coords, z, resolution, np.zeros(3), np.full(3, voxel), shape)
    data = data.astype(np.float64)
    data /= data.max()  # noise-free maximum 1
    if noise > 0:
        data += rng.normal(scale=noise, size=data.shape)
    dmap = DensityMap(data=data.astype(np.float32), origin=np.zeros(3),
                      voxel_size=np.full(3, float(voxel)), path=None)
    return dmap, poses


def _pose_errors(R: np.ndarray, t: np.ndarray, R0: np.ndarray, t0: np.ndarray,
                 structure: Structure) -> tuple[float, float, float]:
    """(rotation angle deg, centroid shift A, all-atom RMSD A) of pose (R, t) vs (R0, t0)."""
    angle = float(rotation_angle_deg(torch.from_numpy(R0), torch.from_numpy(np.asarray(R))))
    c = structure.centroid
    shift = float(np.linalg.norm((R @ c + t) - (R0 @ c + t0)))
    x = structure.coords
    rmsd = float(np.sqrt((((x @ R.T + t) - (x @ R0.T + t0)) ** 2).sum(1).mean()))
    return angle, shift, rmsd


def run_demo(outdir=None, seed: int = 0, device: str = "cpu", quick: bool = False,
             verbose: bool = True, force: bool = False) -> dict:
    """Build the ideal protein and a two-copy map, fit, and check both copies are found.

    Each true copy is matched to the best-ranked of the top ``n_copies`` placements lying
    within 3 A (centroid) and 6 degrees of it.

    Args:
        outdir: when given, write the fit outputs (and the simulated map) there.
        seed: seed of the protein, the map and the search.
        device: "cpu" or "cuda".
        quick: a reduced search (30 rotations x 8 positions x 120 steps) for smoke tests.
        verbose: print the per-copy report.
        force: allow writing into a non-empty ``outdir``.

    Returns:
        dict with "recovered" (int), "n_copies", "copies" (per copy: rotation_error_deg,
        shift, rmsd, hits, rank, recovered, cam), "time" (seconds of the fit call),
        "total_time" (seconds, protein and map building included), "poses" (the true ones),
        "timings", "result" (the FitResult) and "outputs" (paths, when written).
    """
    from .workflows.fit import fit  # imported here so that the demo's builders work without it

    say = print if verbose else (lambda *a, **k: None)
    if outdir is not None:
        from .runs import check_outdir

        check_outdir(Path(outdir), force)  # refuse before fitting, not after
    t_all = time.perf_counter()
    structure = ideal_protein(seed=seed)
    n_copies, resolution, noise = 2, 5.0, 0.1
    dmap, poses = demo_map(structure, n_copies=n_copies, resolution=resolution, noise=noise,
                           seed=seed)
    # Contour: 3 noise standard deviations (the noise-free map has maximum 1), high
    # enough that the few noise voxels above it form specks that dust removal deletes,
    # low enough to keep every atom of the copies inside (about 0.25 x the noisy maximum).
    threshold = 3.0 * noise
    overrides = {"seed": seed, "device": device}
    if quick:
        overrides.update(n_rotations=30, n_positions=8, n_iters=120)
    say(f"demo: ideal helical bundle ({structure.n_atoms} atoms, {structure.n_fit_atoms} "
        f"backbone), {n_copies} copies in a {dmap.shape_xyz[0]}^3 map of "
        f"{dmap.voxel_size[0]:g} A voxels at {resolution:g} A, noise {noise:g} x max")
    t0 = time.perf_counter()
    result = fit(dmap, [structure], resolution, threshold=threshold, **overrides)
    elapsed = time.perf_counter() - t0

    top = result.for_structure(0)[:n_copies]
    copies = []
    for k, (R0, t0_) in enumerate(poses):
        errs = [(p, *_pose_errors(p.rotation, p.translation, R0, t0_, structure)) for p in top]
        hits = [e for e in errs if e[1] <= 6.0 and e[2] <= 3.0]
        if hits:
            p, ang, sh, rmsd = hits[0]          # best-ranked within tolerance
            ok = True
        elif errs:
            p, ang, sh, rmsd = min(errs, key=lambda e: e[2])  # nearest, for the report
            ok = False
        else:
            p, ang, sh, rmsd, ok = None, float("nan"), float("nan"), float("nan"), False
        copies.append({"copy": k + 1, "recovered": ok, "rotation_error_deg": ang, "shift": sh,
                       "rmsd": rmsd, "hits": p.hits if p else 0, "rank": p.rank if p else 0,
                       "cam": p.metrics.get("cam", float("nan")) if p else float("nan")})
        say(f"  copy {k + 1}: {'found' if ok else 'MISSED'} at rank {copies[-1]['rank']}: "
            f"rotation error {ang:.2f} deg, shift {sh:.2f} A, RMSD {rmsd:.2f} A, "
            f"hits {copies[-1]['hits']}, cam {copies[-1]['cam']:.3f}")
    n_ok = sum(c["recovered"] for c in copies)
    n_starts = starts_per_structure(result.params)
    say(f"demo: fit of {n_starts} starts x {result.params.n_iters} steps took {elapsed:.1f} s "
        f"on {device} (" + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()
                                     if k != "total") + ")")
    total = time.perf_counter() - t_all
    say(f"demo: total {total:.1f} s (building the protein and the map, fitting, checking)")
    say(f"demo: recovered {n_ok}/{n_copies} copies")
    out = {"recovered": n_ok, "n_copies": n_copies, "copies": copies, "time": elapsed,
           "total_time": total,
           "timings": dict(result.timings), "result": result, "poses": poses}
    if outdir is not None:
        from .output import write_fit_outputs

        # The simulated map has no file: write_fit_outputs writes it as map.mrc.
        paths = write_fit_outputs(result, outdir, force=force,
                                  command=f"difffit demo (seed={seed}, quick={quick}, "
                                          f"device={device})")
        out["outputs"] = paths
        say(f"demo: outputs written to {Path(outdir)}")
    return out
