"""Where the search starts (difffit.starts): scanned, spread-out starts and focused restarts.

The end-to-end check is issue #11's: a haemoglobin chain fitted alone into EMD-3488, which
holds two copies of it, from three random transforms of the deposited chain, must find both
copies as ranks 1 and 2 with at least 25 hits each, with default settings.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import data_file
from test_fit import random_move

import difffit
import difffit.rotations
from difffit import FitParams, reference
from difffit.preprocess import build_pyramid
from difffit.rotations import quat_to_matrix, random_rotations, rotation_angle_deg, superpose
from difffit.starts import (distinct_best, first_round, focus_per_pose, focused_starts, perturb,
                            scanned_starts, spread_positions, starts_per_structure)

HB = "hemoglobin_emd3488_5ni1"


_kabsch = superpose


@pytest.fixture(scope="module")
def hb(shared_data):
    return difffit.read_map(data_file(shared_data, f"{HB}/emd_3488.mrc")), \
        data_file(shared_data, f"{HB}/5ni1_updated.cif")


def test_defaults_are_1200_starts():
    p = FitParams()
    assert p.n_positions * p.n_rotations == 800 and focus_per_pose(p) == 40
    assert starts_per_structure(p) == 1200
    assert starts_per_structure(FitParams(focus_top=0)) == 800
    assert starts_per_structure(FitParams(n_rotations=20, n_positions=5)) == 100 + 10 * 5
    assert starts_per_structure(FitParams(focus_starts=5, focus_top=2)) == 810
    mol = torch.arange(2).repeat_interleave(1200)
    first = first_round(mol, p)
    assert first.sum() == 1600 and first[:800].all() and not first[800:1200].any()


def test_spread_positions_lie_in_density_and_cover_it_better_than_random_draws(hb):
    dmap, _ = hb
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, 0.03)
    pos = spread_positions(pyr, 50, seed=0).numpy()
    ijk = np.rint((pos - pyr.origin) / pyr.voxel_size).astype(int)[:, ::-1]
    assert pyr.mask[tuple(ijk.T)].all()
    flat = np.flatnonzero(pyr.mask)
    xyz = np.stack(np.unravel_index(flat, pyr.mask.shape), -1)[:, ::-1] * pyr.voxel_size + pyr.origin
    rnd = xyz[np.random.default_rng(0).choice(len(xyz), 50, replace=False)]

    def worst_gap(p):  # the farthest any density voxel is from its nearest position
        return np.sqrt(((xyz[:, None] - p[None]) ** 2).sum(-1).min(1)).max()
    assert worst_gap(pos) < worst_gap(rnd)
    assert np.array_equal(pos, spread_positions(pyr, 50, seed=0).numpy())


def test_scan_keeps_the_best_rotations_by_the_plain_pytorch_score(hb):
    dmap, model_path = hb
    s = difffit.read_structure(model_path, chains=["A"], selection="ca")
    pyr = build_pyramid(dmap.data, dmap.origin, dmap.voxel_size, 0.03)
    vol = pyr.levels.sum(-1, keepdim=True).contiguous()
    pts = torch.from_numpy(s.fit_coords - s.centroid).float()
    off = torch.tensor([0, pts.shape[0]])
    pos = torch.from_numpy(np.stack([s.centroid, s.centroid + 4.0]))
    params = FitParams(n_rotations=3, scan_rotations=60, seed=2)
    q, t, mol = scanned_starts(vol, pyr.origin.tolist(), pyr.voxel_size.tolist(), pts, off,
                               pos, params)
    assert q.shape == (6, 4) and t.shape == (6, 3) and mol.tolist() == [0] * 6
    rots = difffit.rotations.uniform_rotations(60, seed=2).float()
    for k in range(2):
        qq, tt = rots, pos[k].float().expand(60, 3)
        ref = reference.score_reference(vol, torch.ones(1), pyr.origin.tolist(),
                                        pyr.voxel_size.tolist(), pts, off, qq, tt,
                                        torch.zeros(60, dtype=torch.int64))
        want = rots[ref.topk(3).indices]
        torch.testing.assert_close(q[3 * k:3 * k + 3], want)
        assert torch.allclose(t[3 * k:3 * k + 3], tt[:3])


def test_perturb_stays_within_its_angle_and_distinct_best_keeps_tolerances():
    g = torch.Generator().manual_seed(0)
    q = random_rotations(500, generator=g).double()
    t = torch.randn(500, 3, dtype=torch.float64, generator=g)
    q2, t2 = perturb(q, t, 20.0, 3.0, g)
    ang = rotation_angle_deg(quat_to_matrix(q), quat_to_matrix(q2))
    assert float(ang.max()) <= 20.0 + 1e-6 and float(ang.mean()) > 10.0
    assert torch.allclose(q2.norm(dim=1), torch.ones(500, dtype=torch.float64))
    assert 2.5 < float((t2 - t).std()) < 3.5
    R = quat_to_matrix(q2)
    score = torch.rand(500, generator=g, dtype=torch.float64)
    kept = distinct_best(t2, R, score, 30, 3.0, 6.0)
    assert kept[0] == int(score.argmax()) and len(kept) == 30
    for a in range(len(kept)):
        for b in range(a):
            i, j = kept[a], kept[b]
            assert score[j] >= score[i]
            near = float((t2[i] - t2[j]).norm()) <= 3.0
            close = float(rotation_angle_deg(R[i], R[j])) < 6.0
            assert not (near and close)


def test_focused_restarts_surround_each_structures_best_poses():
    g = torch.Generator().manual_seed(1)
    q = random_rotations(40, generator=g).float()
    t = 20 * torch.randn(40, 3, generator=g)
    score = torch.rand(40, generator=g)
    mol = torch.arange(2).repeat_interleave(20)
    params = FitParams(focus_top=3, focus_starts=4, focus_angle=10.0, focus_shift=1.0)
    q2, t2, mol2 = focused_starts(q, t, score, mol, 2, params)
    assert q2.shape == (24, 4) and mol2.tolist() == [0] * 12 + [1] * 12
    best0 = int(score[:20].argmax())
    d = (t2[:4] - t[best0]).norm(dim=1)  # the first restarts surround structure 0's best
    assert float(d.max()) < 6.0
    ang = rotation_angle_deg(quat_to_matrix(q2[:4].double()),
                             quat_to_matrix(q[best0].double()).expand(4, 3, 3))
    assert float(ang.max()) <= 10.0 + 1e-3


def test_a_structures_restarts_do_not_depend_on_its_batch_mates():
    g = torch.Generator().manual_seed(2)
    q = random_rotations(30, generator=g).float()
    t = 20 * torch.randn(30, 3, generator=g)
    score = torch.rand(30, generator=g)
    params = FitParams(focus_top=2, focus_starts=3)
    alone = focused_starts(q[:10], t[:10], score[:10], torch.zeros(10, dtype=torch.int64), 1,
                           params)
    mol = torch.arange(3).repeat_interleave(10)
    batch = focused_starts(q[[*range(10, 20), *range(10), *range(20, 30)]],
                           t[[*range(10, 20), *range(10), *range(20, 30)]],
                           score[[*range(10, 20), *range(10), *range(20, 30)]], mol, 3, params)
    assert torch.equal(batch[0][6:12], alone[0]) and torch.equal(batch[1][6:12], alone[1])


def _copy_ranks(result, moved_from, copies, centroid):
    """(rank, hits) of each deposited copy among the placements (3 A / 6 degrees)."""
    R0, t0 = moved_from
    out = []
    for Rc, tc in copies:
        found = (None, 0)
        for p in result.placements:
            a = math.degrees(math.acos(np.clip((np.trace(p.rotation @ R0 @ Rc.T) - 1) / 2, -1, 1)))
            c = p.rotation @ (R0 @ centroid + t0) + p.translation
            if a < 6 and np.linalg.norm(c - (Rc @ centroid + tc)) < 3:
                found = (p.rank, p.hits)
                break
        out.append(found)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("chain,mate", [("A", "C"), ("B", "D")])
def test_a_haemoglobin_chain_finds_both_its_copies_with_default_settings(hb, chain, mate):
    dmap, model_path = hb
    s = difffit.read_structure(model_path, chains=[chain])
    a = difffit.read_structure(model_path, chains=[chain], selection="ca").fit_coords
    b = difffit.read_structure(model_path, chains=[mate], selection="ca").fit_coords
    n = min(len(a), len(b))
    copies = [(np.eye(3), np.zeros(3)), _kabsch(a[:n], b[:n])]
    for seed in (0, 1, 2):
        R0, t0 = random_move(100 + seed)
        result = difffit.fit(dmap, [s.transformed(R0, t0)], 3.2)
        ranks = _copy_ranks(result, (R0, t0), copies, s.centroid)
        assert sorted(r for r, _ in ranks if r is not None) == [1, 2], \
            f"chain {chain}, move {seed}: copies at (rank, hits) {ranks}"
        assert min(h for _, h in ranks) >= 25, f"chain {chain}, move {seed}: {ranks}"
