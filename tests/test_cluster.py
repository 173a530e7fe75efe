"""Tests for difffit.cluster: greedy ChimeraX-style pose clustering."""
from __future__ import annotations

import math

import pytest
import torch

import difffit.cluster as cluster_mod
from difffit.cluster import Clusters, cluster_poses
from difffit.errors import DifffitInputError
from difffit.rotations import (
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    random_rotations,
    rotation_angle_deg,
)


def _rot(axis, angle_deg) -> torch.Tensor:
    """[3,3] rotation by angle_deg about axis."""
    axis = torch.nn.functional.normalize(torch.as_tensor(axis, dtype=torch.float64), dim=0)
    half = math.radians(angle_deg) / 2
    q = torch.cat([torch.tensor([math.cos(half)], dtype=torch.float64), axis * math.sin(half)])
    return quat_to_matrix(q)


def _reference(centers, rotations, scores, shift_tol, angle_tol, valid=None):
    """Plain sequential greedy rule, one placement at a time (the specification)."""
    P = scores.shape[0]
    valid = torch.ones(P, dtype=torch.bool) if valid is None else valid
    order = sorted((i for i in range(P) if valid[i]), key=lambda i: (-float(scores[i]), i))
    labels = [-1] * P
    reps: list[int] = []
    for i in order:
        if reps:
            r = torch.tensor(reps)
            d = (centers[r] - centers[i]).norm(dim=1)
            a = rotation_angle_deg(rotations[r], rotations[i])
            ok = torch.nonzero((d <= shift_tol) & (a <= angle_tol)).flatten()
            if ok.numel():
                labels[i] = int(ok[0])
                continue
        labels[i] = len(reps)
        reps.append(i)
    return labels, reps


def _jittered(center, R, count, g, shift=0.9, angle=2.5):
    """count copies of a pose, centre moved < shift A, rotated < angle deg."""
    d = torch.nn.functional.normalize(torch.randn(count, 3, generator=g, dtype=torch.float64), dim=1)
    c = center + d * torch.rand(count, 1, generator=g, dtype=torch.float64) * shift
    axes = torch.randn(count, 3, generator=g, dtype=torch.float64)
    angles = torch.rand(count, generator=g, dtype=torch.float64) * angle
    Rs = torch.stack([_rot(axes[i], float(angles[i])) for i in range(count)]) @ R
    return c, Rs


def test_three_poses_with_jitter_and_noise():
    g = torch.Generator().manual_seed(0)
    true_R = quat_to_matrix(random_rotations(3, g))
    true_c = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # poses 0 and 2 share a centre but differ in rotation: only the angle separates them
    assert rotation_angle_deg(true_R[0], true_R[2]) > 20
    counts = [50, 30, 10]
    cs, Rs, group = [], [], []
    for k, n in enumerate(counts):
        c, R = _jittered(true_c[k], true_R[k], n, g)
        cs.append(c)
        Rs.append(R)
        group += [k] * n
    n_noise = 40  # random placements in a 200 A box: singletons
    cs.append(torch.rand(n_noise, 3, generator=g, dtype=torch.float64) * 200 + 50)
    Rs.append(quat_to_matrix(random_rotations(n_noise, g)))
    group += [-1] * n_noise
    centers, rotations = torch.cat(cs), torch.cat(Rs)
    group = torch.tensor(group)
    # Scores: group 1 best, then group 0, then group 2; noise anywhere.
    base = torch.tensor([5.0, 8.0, 2.0, 0.0])[group]
    scores = base + torch.rand(len(group), generator=g, dtype=torch.float64) * torch.where(group >= 0, 1.0, 9.0)
    perm = torch.randperm(len(group), generator=g)  # input order must not matter
    centers, rotations, scores, group = centers[perm], rotations[perm], scores[perm], group[perm]

    cl = cluster_poses(centers, rotations, scores)
    assert isinstance(cl, Clusters)
    assert len(cl) == 3 + n_noise
    assert cl.size.sum() == len(group)
    for k, n in enumerate(counts):
        labels_k = cl.labels[group == k].unique()
        assert labels_k.numel() == 1, f"group {k} split into {labels_k.tolist()}"
        lab = int(labels_k)
        assert cl.size[lab] == n
        members = torch.nonzero(group == k).flatten()
        assert cl.representative[lab] == members[scores[members].argmax()]
        assert cl.best_score[lab] == scores[members].max()
    assert torch.all(cl.size[cl.labels[group == -1]] == 1)
    # ranked by best score
    assert torch.all(cl.best_score[1:] <= cl.best_score[:-1])
    torch.testing.assert_close(cl.best_score, scores[cl.representative])
    assert cl.labels.dtype == cl.representative.dtype == cl.size.dtype == torch.int64
    # identical to the plain sequential rule
    ref_labels, ref_reps = _reference(centers, rotations, scores, 3.0, 6.0)
    assert cl.labels.tolist() == ref_labels and cl.representative.tolist() == ref_reps


@pytest.mark.parametrize(
    "shift, angle, joins",
    [
        (2.999, 0.0, True),
        (3.001, 0.0, False),
        (0.0, 5.99, True),
        (0.0, 6.01, False),
        (2.99, 5.99, True),
        (3.01, 5.99, False),
        (2.99, 6.01, False),
    ],
)
def test_tolerance_boundary(shift, angle, joins):
    R0 = quat_to_matrix(random_rotations(1, torch.Generator().manual_seed(1)))[0]
    direction = torch.nn.functional.normalize(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), dim=0)
    centers = torch.stack([torch.zeros(3, dtype=torch.float64) + 7.0, 7.0 + shift * direction])
    rotations = torch.stack([R0, _rot([0.3, 1.0, -0.2], angle) @ R0])
    cl = cluster_poses(centers, rotations, torch.tensor([1.0, 0.5]), shift_tol=3.0, angle_tol_deg=6.0)
    assert cl.labels.tolist() == ([0, 0] if joins else [0, 1])


def test_greedy_compares_with_representative_not_members():
    # B is within tolerance of A, C within tolerance of B but not of A: C founds a new
    # cluster (greedy rule, not single linkage).
    I = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    centers = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [4.0, 0, 0]], dtype=torch.float64)
    cl = cluster_poses(centers, I, torch.tensor([3.0, 2.0, 1.0]))
    assert cl.labels.tolist() == [0, 0, 1]
    assert cl.size.tolist() == [2, 1]
    # C joins the first (best) cluster whose representative is within tolerance.
    centers = torch.tensor([[0.0, 0, 0], [5.0, 0, 0], [2.5, 0, 0]], dtype=torch.float64)
    cl = cluster_poses(centers, I, torch.tensor([3.0, 2.0, 1.0]))
    assert cl.labels.tolist() == [0, 1, 0]


def test_symmetric_poses_not_merged():
    # A half turn about z (e.g. a C2 axis of the molecule) at the same centre is a
    # different placement: no symmetry special-casing.
    R0 = torch.eye(3, dtype=torch.float64)
    rotations = torch.stack([R0, _rot([0, 0, 1], 180.0), _rot([0, 0, 1], 120.0)])
    cl = cluster_poses(torch.zeros(3, 3, dtype=torch.float64), rotations, torch.tensor([1.0, 1.0, 1.0]))
    assert cl.labels.tolist() == [0, 1, 2]


def test_ties_deterministic_by_index():
    I = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    centers = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [50.0, 0, 0], [51.0, 0, 0]], dtype=torch.float64)
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0])
    cl = cluster_poses(centers, I, scores)
    assert cl.labels.tolist() == [0, 0, 1, 1]
    assert cl.representative.tolist() == [0, 2]
    # reversed input order: the lower index still wins each tie
    cl_rev = cluster_poses(centers.flip(0), I, scores)
    assert cl_rev.representative.tolist() == [0, 2]
    # repeat calls identical
    cl2 = cluster_poses(centers, I, scores)
    assert all(torch.equal(getattr(cl, f), getattr(cl2, f)) for f in ("labels", "representative", "size", "best_score"))


def test_valid_mask_and_nonfinite():
    I = torch.eye(3, dtype=torch.float64).expand(5, 3, 3).clone()
    centers = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [20.0, 0, 0], [21.0, 0, 0], [40.0, 0, 0]], dtype=torch.float64)
    scores = torch.tensor([9.0, 1.0, 5.0, float("nan"), 4.0])
    valid = torch.tensor([False, True, True, True, True])
    I[4, 0, 0] = float("nan")  # a diverged pose
    cl = cluster_poses(centers, I, scores, valid=valid)
    # 0 masked out (so 1 founds its own cluster), 3 has a NaN score, 4 a NaN rotation
    assert cl.labels.tolist() == [-1, 1, 0, -1, -1]
    assert cl.representative.tolist() == [2, 1]
    assert cl.size.tolist() == [1, 1]
    assert cl.best_score.tolist() == [5.0, 1.0]


def test_empty_and_all_invalid():
    cl = cluster_poses(torch.zeros(0, 3), torch.zeros(0, 3, 3), torch.zeros(0))
    assert len(cl) == 0 and cl.labels.shape == (0,)
    I = torch.eye(3).expand(2, 3, 3)
    cl = cluster_poses(torch.zeros(2, 3), I, torch.ones(2), valid=torch.zeros(2, dtype=torch.bool))
    assert cl.labels.tolist() == [-1, -1] and len(cl) == 0 and cl.size.shape == (0,)


def test_bad_input():
    I = torch.eye(3).expand(2, 3, 3)
    with pytest.raises(DifffitInputError, match="centers must have shape"):
        cluster_poses(torch.zeros(3, 3), I, torch.ones(2))
    with pytest.raises(DifffitInputError, match="rotations must have shape"):
        cluster_poses(torch.zeros(2, 3), torch.eye(3).expand(3, 3, 3), torch.ones(2))
    with pytest.raises(DifffitInputError, match="valid must be a bool tensor"):
        cluster_poses(torch.zeros(2, 3), I, torch.ones(2), valid=torch.ones(2))
    with pytest.raises(DifffitInputError, match="shift_tol"):
        cluster_poses(torch.zeros(2, 3), I, torch.ones(2), shift_tol=-1.0)


@pytest.mark.parametrize("block", [7, 1024])
def test_matches_sequential_rule_across_blocks(block, monkeypatch):
    # Many overlapping clusters (crowded: hundreds of poses near 6 centres and rotations), so
    # that blocks see both old and new representatives; float32 inputs.
    monkeypatch.setattr(cluster_mod, "_BLOCK", block)
    g = torch.Generator().manual_seed(5)
    P = 1500 if block == 1024 else 300
    base_q = random_rotations(6, g)
    base_c = torch.rand(6, 3, generator=g, dtype=torch.float64) * 8
    k = torch.randint(6, (P,), generator=g)
    centers = (base_c[k] + torch.randn(P, 3, generator=g, dtype=torch.float64) * 1.5).float()
    q = quat_normalize(base_q[k] + torch.randn(P, 4, generator=g, dtype=torch.float64) * 0.03)
    rotations = quat_to_matrix(q).float()
    scores = torch.randint(0, 40, (P,), generator=g).float()  # many ties
    valid = torch.rand(P, generator=g) > 0.1
    cl = cluster_poses(centers, rotations, scores, valid=valid)
    ref_labels, ref_reps = _reference(centers.double(), rotations.double(), scores, 3.0, 6.0, valid)
    assert cl.labels.tolist() == ref_labels
    assert cl.representative.tolist() == ref_reps
    assert 10 < len(cl) < int(valid.sum()) // 2  # real merging happens
    assert cl.best_score.dtype == torch.float32


def test_custom_tolerances():
    # quaternion offsets of 10 deg about x, fixed centre
    q0 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    step = torch.tensor([math.cos(math.radians(5)), math.sin(math.radians(5)), 0, 0], dtype=torch.float64)
    qs = [q0]
    for _ in range(3):
        qs.append(quat_multiply(step, qs[-1]))
    R = quat_to_matrix(torch.stack(qs))  # 0, 10, 20, 30 deg
    centers = torch.zeros(4, 3, dtype=torch.float64)
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert cluster_poses(centers, R, scores).labels.tolist() == [0, 1, 2, 3]
    assert cluster_poses(centers, R, scores, angle_tol_deg=15).labels.tolist() == [0, 0, 1, 1]
    assert cluster_poses(centers, R, scores, angle_tol_deg=30).labels.tolist() == [0, 0, 0, 0]


def test_first_representatives_of_many_sets_match_cluster_poses():
    """The batched first-K representatives (identify's first pass clusters every candidate's
    starts at once) are cluster_poses' first K of each set: sets of jittered basins plus
    scattered poses, with ties, a NaN score and fewer clusters than K in some sets."""
    from difffit.cluster import first_representatives

    g = torch.Generator().manual_seed(7)
    M, S, keep = 12, 64, 4
    cs, Rs, ss = [], [], []
    for m in range(M):
        n_basins = 1 + m % 6
        parts_c, parts_R = [], []
        for b in range(n_basins):
            c0 = torch.randn(3, generator=g, dtype=torch.float64) * 10
            R0 = quat_to_matrix(random_rotations(1, generator=g))[0]
            c, R = _jittered(c0, R0, S // n_basins, g)
            parts_c.append(c)
            parts_R.append(R)
        c, R = torch.cat(parts_c), torch.cat(parts_R)
        extra = S - len(c)
        c = torch.cat([c, torch.randn(extra, 3, generator=g, dtype=torch.float64) * 10])
        R = torch.cat([R, quat_to_matrix(random_rotations(extra, generator=g))]) if extra else R
        s = torch.rand(S, generator=g, dtype=torch.float64)
        s[::9] = 0.5  # ties, ordered by index
        if m == 3:
            s[0] = float("nan")
        cs.append(c)
        Rs.append(R)
        ss.append(s)
    got = first_representatives(torch.stack(cs), torch.stack(Rs), torch.stack(ss), keep, 3.0, 6.0)
    for m in range(M):
        want = cluster_poses(cs[m], Rs[m], ss[m], 3.0, 6.0).representative[:keep].tolist()
        assert got[m][got[m] >= 0].tolist() == want, m
        assert (got[m] >= 0).sum() == min(keep, len(cluster_poses(cs[m], Rs[m], ss[m]).representative))
