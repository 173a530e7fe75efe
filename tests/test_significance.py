"""Copies, significance and AlphaFold trimming (issue #11), on real maps from a random
rigid transform of the deposited model."""
import json

import numpy as np
import pytest
from conftest import data_file
from test_fit import random_move

import difffit
from difffit.cli import main
from difffit.copies import significance
from difffit.structures import alphafold_evidence, with_min_plddt

PHAGE_MAP, PHAGE_MODEL = "phage_emd4054_5lij/emd_4054.mrc", "phage_emd4054_5lij/5lij.pdb"
HB_MAP, HB_MODEL = "hemoglobin_emd3488_5ni1/emd_3488.mrc", "hemoglobin_emd3488_5ni1/5ni1_updated.cif"
DEMO = "difffit_domain_demo"


def test_the_significance_rule():
    z, why = significance([0.8, 0.3, 0.28, 0.25, 0.2])
    assert why is None and z[0] > z[1]
    z, why = significance([0.30, 0.295, 0.28, 0.25, 0.2])
    assert "not clearly separated from placement 2" in why
    # With two copies asked for, the second copy is compared with the third placement.
    assert significance([0.6, 0.59, 0.2, 0.19, 0.1], n_copies=2)[1] is None
    assert np.isnan(significance([0.5, 0.4])[0]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_ambiguity_fires_on_a_wrong_voxel_size_and_not_on_the_right_one(shared_data, seed):
    """The phage map's header says 1.0 A voxels (the truth is 1.38): the fit finds no
    placement that stands out, and says so; with the right voxel size it does not."""
    R0, t0 = random_move(seed)
    model = difffit.read_structure(data_file(shared_data, PHAGE_MODEL)).transformed(R0, t0)
    path = data_file(shared_data, PHAGE_MAP)
    with pytest.warns(difffit.errors.DifffitWarning):  # the plausibility checks speak too
        wrong = difffit.fit(path, [model], 4.0)
    assert "5lij" in wrong.ambiguous and "not clearly separated" in wrong.ambiguous["5lij"]
    right = difffit.fit(difffit.read_map(path, voxel_size=1.38), [model], 4.0)
    assert right.ambiguous == {}
    best = right.best("5lij")
    assert best.zscore > 8 and best.metrics["cam"] > 0.55


@pytest.mark.slow
def test_copies_lists_both_haemoglobin_copies_once(shared_data):
    """Chain B alone in EMD-3488 (two beta chains): with copies=2 ranks 1 and 2 are the two
    deposited beta chains, distinct and not overlapping; without it the answer is flagged
    as several copies."""
    dmap = difffit.read_map(data_file(shared_data, HB_MAP))
    path = data_file(shared_data, HB_MODEL)
    chain_b = difffit.read_structure(path, chains=["B"])
    chain_d = difffit.read_structure(path, chains=["D"])
    R0, t0 = random_move(2)
    moved = chain_b.transformed(R0, t0)
    plain = difffit.fit(dmap, [moved], 3.2)
    assert "several copies" in plain.ambiguous[moved.name]
    res = difffit.fit(dmap, [moved], 3.2, copies=2)
    top = res.for_structure(0)[:2]
    assert [p.copy for p in top] == [1, 2] and [p.rank for p in top] == [1, 2]
    targets = [chain_b.centroid, chain_d.centroid]
    found = []
    for p in top:  # where the moved model's centroid lands, against the deposited chains
        centre = p.rotation @ moved.centroid + p.translation
        d = [np.linalg.norm(centre - c) for c in targets]
        assert min(d) < 3.0
        found.append(int(np.argmin(d)))
    assert sorted(found) == [0, 1]
    assert moved.name not in res.ambiguous


def test_min_plddt_trims_the_fit_not_the_model(shared_data, tmp_path):
    path = data_file(shared_data, f"{DEMO}/I7LV70_D1.pdb")
    s = difffit.read_structure(path)
    assert "AlphaFold" in alphafold_evidence(s)
    assert alphafold_evidence(difffit.read_structure(data_file(shared_data, PHAGE_MODEL))) is None
    trimmed = with_min_plddt(s, 70)
    assert 0 < trimmed.n_fit_atoms < s.n_fit_atoms and trimmed.n_atoms == s.n_atoms
    with pytest.raises(difffit.DifffitInputError, match="pLDDT"):
        with_min_plddt(s, 100)
    # From the command line: the log says what was fitted, the model keeps every atom.
    out = tmp_path / "af"
    dens = data_file(shared_data, f"{DEMO}/density2.mrc")
    code = main(["fit", str(dens), str(path), "-r", "4", "-t", "0.886", "-o", str(out), "-q",
                 "--min-plddt", "70", "--rotations", "10", "--positions", "3",
                 "--iterations", "20", "--top", "1"])
    assert code == 0
    (model,) = (out / "models").glob("*.cif")
    assert difffit.read_structure(model, selection="all").n_atoms == s.n_atoms


def test_score_command_matches_chimerax(shared_data, capsys):
    """`difffit score` of haemoglobin chain A where it is deposited: ChimeraX fitmap gave
    correlation 0.7895, cam 0.6643 (chimerax_fitmap_metrics.json)."""
    row = next(r for r in json.loads(data_file(shared_data, "chimerax_fitmap_metrics.json").read_text())
               if r["case"].startswith("hemoglobin") and r["pose"] == "reference")
    code = main(["score", str(data_file(shared_data, HB_MAP)), str(data_file(shared_data, HB_MODEL)),
                 "--chains", "A", "-r", "3.2", "-t", str(row["map_level"]), "--json"])
    assert code == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert got["correlation"] == pytest.approx(row["correlation"], abs=0.005)
    assert got["cam"] == pytest.approx(row["cam"], abs=0.005)
    assert got["inside_fraction"] == pytest.approx(row["atoms_inside_level"], abs=0.005)
