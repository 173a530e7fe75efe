"""Joint assembly (difffit.assemble, ``difffit assemble``) on real data: the joint score's
fast path against plain PyTorch, the penalty on density claimed twice, haemoglobin's four
chains in EMD-3488 blurred by the test to 12 A and 15 A (each chain moved away from its
deposited pose first), neighbouring F-actin subunits in the filament map, the command line
with resume and report."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from difffit import DifffitInputError, assemble
from difffit.assembly import Assembly, joint_score_reference, poses_to_qt
from difffit.cli import main
from difffit.io import read_map, read_structure, split_chains
from difffit.maps import DensityMap, write_map
from difffit.preprocess import build_pyramid, default_threshold
from difffit.rotations import random_rotations, superpose
from difffit.structures import write_structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402
from test_fit import random_move  # noqa: E402

HB = "hemoglobin_emd3488_5ni1"
ACTIN = "tempy_factin_emd5168"
SMALL = dict(n_combos=8, n_random=4,
             joint_iters=80, refine_iters=40)


def blurred(dmap: DensityMap, resolution: float) -> DensityMap:
    """The map low-pass filtered to ``resolution``: a Gaussian of sigma = resolution /
    (pi sqrt 2) (molmap's convention, docs/method.md section 6), in voxels per axis."""
    sigma = resolution / (math.pi * math.sqrt(2)) / np.asarray(dmap.voxel_size)[::-1]
    data = ndimage.gaussian_filter(dmap.data.astype(np.float32), sigma)
    return DensityMap(data, origin=dmap.origin.copy(), voxel_size=dmap.voxel_size.copy())


def ca_by_number(structure) -> dict[int, np.ndarray]:
    out = {}
    for chain in structure.gemmi_structure[0]:
        for res in chain:
            ca = res.find_atom("CA", "*")
            if ca is not None:
                out[res.seqid.num] = np.array([ca.pos.x, ca.pos.y, ca.pos.z])
    return out


def pose_error(a: dict, b: dict) -> tuple[float, float]:
    """(rotation angle in degrees, centroid shift in A) of the rigid superposition of CA
    positions ``a`` onto ``b`` (the residues both have)."""
    common = sorted(set(a) & set(b))
    X = np.array([a[k] for k in common])
    Y = np.array([b[k] for k in common])
    cx, cy = X.mean(0), Y.mean(0)
    R, _ = superpose(X, Y)
    angle = math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    return angle, float(np.linalg.norm(cx - cy))


def placed_right(result, truths: dict[str, list[dict]], shift=3.0, angle=6.0) -> tuple[int, list]:
    """How many placements lie within ``shift`` / ``angle`` of a distinct true pose of
    their structure (``truths``: structure name -> CA dicts of its true copies)."""
    taken, n, errors = set(), 0, []
    for p in result.placements:
        ca = ca_by_number(p.moved(result.structures[p.structure_index]))
        errs = [pose_error(ca, t) for t in truths[p.structure_name]]
        k = int(np.argmin([e[1] + e[0] / 2 for e in errs]))
        errors.append((p.structure_name, p.copy, k, round(errs[k][0], 1), round(errs[k][1], 2)))
        if errs[k][0] <= angle and errs[k][1] <= shift and (p.structure_name, k) not in taken:
            n += 1
            taken.add((p.structure_name, k))
    return n, errors


def hb_case(root: Path, resolution: float) -> dict:
    """EMD-3488 blurred to ``resolution``; haemoglobin's alpha (A) and beta (B) chains moved
    by random rigid transforms; the deposited chains as truth (alpha: A, C; beta: B, D)."""
    dmap = blurred(read_map(data_file(root, f"{HB}/emd_3488.mrc")), resolution)
    chains = {s.name.split("_")[-1]: s for s in
              split_chains(read_structure(data_file(root, f"{HB}/5ni1_updated.cif")))}
    moved = []
    for name, c, seed in (("alpha", "A", 11), ("beta", "B", 12)):
        R, t = random_move(seed)
        s = chains[c].transformed(R, t)
        s.name = name
        moved.append(s)
    truths = {"alpha": [ca_by_number(chains["A"]), ca_by_number(chains["C"])],
              "beta": [ca_by_number(chains["B"]), ca_by_number(chains["D"])]}
    return {"map": dmap, "structures": moved, "copies": 2, "resolution": resolution,
            "truths": truths, "total": 4}


def actin_inputs(root: Path, n_sub: int):
    """The F-actin filament map EMD-5168, 3MFP (one subunit, in frame), the poses of the
    deposited subunit and its n_sub - 1 neighbours along the helix (the helical step taken
    from the map: the best fit of the subunit one rise up), and 3MFP moved away."""
    dmap = read_map(data_file(root, f"{ACTIN}/emd_5168.map"))
    model = read_structure(data_file(root, f"{ACTIN}/3MFP.pdb"))
    H = helical_step(dmap, model)
    poses = [(np.eye(3), np.zeros(3))]
    for _ in range(1, n_sub):
        R, t = poses[-1]
        poses.append((H[0] @ R, H[0] @ t + H[1]))
    R0, t0 = random_move(21)
    moved = model.transformed(R0, t0)
    moved.name = "actin"
    return dmap, model, poses, moved


def actin_case(root: Path, n_sub: int = 3, resolution: float = 10.0) -> dict:
    """:func:`actin_inputs`, the map cut to the n_sub subunits and blurred to
    ``resolution``; truth: the deposited subunit and its neighbours."""
    dmap, model, poses, moved = actin_inputs(root, n_sub)
    truths = {"actin": [ca_by_number(model.transformed(R, t)) for R, t in poses]}
    # Only the density of the n_sub subunits: the rest of the filament zeroed.
    from difffit.simulate import explained_mask
    keep = explained_mask(dmap, [model.transformed(R, t) for R, t in poses], resolution, 0.02)
    cut = DensityMap(np.where(keep, dmap.data, 0).astype(np.float32), dmap.origin.copy(),
                     dmap.voxel_size.copy())
    return {"map": blurred(cut, resolution), "structures": [moved], "copies": n_sub,
            "resolution": resolution, "truths": truths, "total": n_sub}


def helical_step(dmap: DensityMap, model) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) taking the deposited subunit to its neighbour one rise up the filament (+z):
    from the subunit's own best distinct fits in the unblurred map."""
    from difffit import fit
    res = fit(dmap, [model], 6.6, copies=5, check=False, n_rotations=60, n_positions=10)
    c0 = model.centroid
    best = None
    for p in res.for_structure(0)[:5]:
        dz = p.centre[2] - c0[2]
        if 20 < dz < 35 and (best is None or p.score > best.score):
            best = p
    assert best is not None, "no neighbour one rise up"
    return best.rotation, best.translation


# ----------------------------------------------------------------------------------------
# The joint score
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hb_chains(shared_data):
    chains = {s.name.split("_")[-1]: s for s in
              split_chains(read_structure(data_file(shared_data, f"{HB}/5ni1_updated.cif")))}
    dmap = read_map(data_file(shared_data, f"{HB}/emd_3488.mrc"))
    return chains, dmap


@pytest.mark.parametrize("symmetric", [False, True])
def test_joint_score_fast_path_matches_plain_pytorch(hb_chains, symmetric):
    chains, dmap = hb_chains
    structs = [chains["A"], chains["B"]]
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, default_threshold(dmap.data))
    vol = pyr.levels.sum(-1, keepdim=True).double().contiguous()
    sym = {}
    if symmetric:  # the units' C2 images (haemoglobin's axis) scored and penalised too
        from difffit.symmetry import symmetry_operators
        sym = dict(sym_ops=symmetry_operators("C", 2, [0, 0, 1]),
                   sym_centre=dmap.origin + 52.0)
    asm = Assembly(structs, [0, 0, 1], clash_weight=4.0, dtype=torch.float64, **sym)
    g = torch.Generator().manual_seed(0)
    C = 5
    q = random_rotations(C * 3, generator=g).reshape(C, 3, 4)
    # Units near the map centre, so that they overlap each other and the density.
    t = torch.from_numpy(dmap.origin + 50.0) + 8 * torch.randn(C, 3, 3, generator=g, dtype=torch.float64)
    args = (vol, pyr.origin.tolist(), pyr.voxel_size.tolist())
    qa, ta = q.clone().requires_grad_(), t.clone().requires_grad_()
    fast = asm.terms(*args, qa, ta)["joint"]
    fast.sum().backward()
    qb, tb = q.clone().requires_grad_(), t.clone().requires_grad_()
    ref = joint_score_reference(asm, *args, qb, tb)
    ref.sum().backward()
    assert torch.allclose(fast, ref, atol=1e-6), (fast, ref)
    assert torch.allclose(ta.grad, tb.grad, atol=1e-5, rtol=1e-4)
    assert torch.allclose(qa.grad, qb.grad, atol=1e-4, rtol=1e-3)


def test_claim_penalty_counts_density_claimed_twice(hb_chains):
    chains, _ = hb_chains
    a = chains["A"]
    asm = Assembly([a], [0, 0], clash_weight=1.0, dtype=torch.float64)
    q, t = poses_to_qt(np.eye(3), np.zeros(3), a.centroid)
    far = t + torch.tensor([80.0, 0, 0], dtype=torch.float64)
    qq = torch.stack([q, q])[None].repeat(2, 1, 1)
    tt = torch.stack([torch.stack([t, t]), torch.stack([t, far])])
    claim = asm._claims(qq, tt)
    assert (claim[0] > 0.6).all(), claim       # one chain on top of the other: claimed twice
    assert (claim[1] < 1e-6).all(), claim      # apart: nothing claimed twice
    # The deposited A and B chains touch without claiming each other's density.
    b = chains["B"]
    asm2 = Assembly([a, b], [0, 1], clash_weight=1.0, dtype=torch.float64)
    qa, ta = poses_to_qt(np.eye(3), np.zeros(3), a.centroid)
    qb, tb = poses_to_qt(np.eye(3), np.zeros(3), b.centroid)
    c2 = asm2._claims(torch.stack([qa, qb])[None], torch.stack([ta, tb])[None])
    assert (c2 < 0.05).all(), c2


def test_bad_input(hb_chains):
    chains, dmap = hb_chains
    with pytest.raises(DifffitInputError, match="n_combos"):
        assemble(dmap, [chains["A"]], 3.2, n_combos=0)
    with pytest.raises(DifffitInputError, match="symmetry"):
        assemble(dmap, [chains["A"]], 3.2, symmetry="X5")


# ----------------------------------------------------------------------------------------
# Haemoglobin at 12 A and 15 A; F-actin
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [12.0, 15.0])
def test_haemoglobin_four_chains_at_low_resolution(shared_data, resolution):
    case = hb_case(shared_data, resolution)
    res = assemble(case["map"], case["structures"], resolution, copies=2, **SMALL)
    n, errors = placed_right(res, case["truths"])
    assert n == 4, errors
    assert all(p.metric("clash_fraction") <= 0.1 for p in res.placements)
    # The per-unit evidence: where each unit started and how it scored alone.
    assert all("own_best_score" in p.metrics and "start_rank" in p.metrics for p in res.placements)


@pytest.mark.slow
def test_factin_neighbouring_subunits(shared_data):
    case = actin_case(shared_data, n_sub=3)
    res = assemble(case["map"], case["structures"], case["resolution"], copies=3, **SMALL)
    n, errors = placed_right(res, case["truths"])
    assert n == 3, errors


# ----------------------------------------------------------------------------------------
# Command line, resume, report
# ----------------------------------------------------------------------------------------


def test_cli_assemble_resume_and_report(shared_data, tmp_path, capsys):
    case = hb_case(shared_data, 15.0)
    mp = tmp_path / "hb15.mrc"
    write_map(mp, case["map"])
    paths = []
    for s in case["structures"]:
        paths.append(tmp_path / f"{s.name}.cif")
        write_structure(paths[-1], s)
    out = tmp_path / "out"
    # A small search: this tests the command's files, not the answer.
    argv = ["assemble", str(mp), *map(str, paths), "-r", "15", "-o", str(out),
            "--rotations", "20", "--positions", "4", "--iterations", "40", "--combos", "3",
            "--random", "1", "--joint-iters", "20", "--refine-iters", "10", "--report", "-q"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["placements"]) == 2
    assert {"own_best_score", "start_rank", "joint_score", "claim"} <= set(summary["placements"][0])
    for f in ("composite.cif", "composite.cxc", "report.html", "round_01/candidates.csv",
              "round_02/candidates.csv", "state.json"):
        assert (out / f).is_file(), f
    from difffit import read_results
    assert len(read_results(out).placements) == 2
    # Existing outputs are not overwritten without --force; --resume skips the own fits.
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    first = (out / "summary.csv").read_text()
    assert main(argv + ["--resume"]) == 0
    assert (out / "summary.csv").read_text() == first
