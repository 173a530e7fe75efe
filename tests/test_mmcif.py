"""Written mmCIF files are valid PDBx: checked against the PDBx/mmCIF dictionary with gemmi's
validator (when the dictionary is installed) and against the consistency rules that
viewers rely on (always), and read back with the same atoms.

The rules (:func:`pdbx_problems`): every struct_asym names an entity that exists; every
atom's label_entity_id exists and is its struct_asym's; every polymer entity has
entity_poly and entity_poly_seq; a polymer atom's (label_seq_id, label_comp_id) is a
monomer of its entity's entity_poly_seq, a non-polymer atom has no label_seq_id.

The dictionary: ``$DIFFFIT_PDBX_DIC``, else Debian's ``libcifpp-data``
(``/usr/share/libcifpp/mmcif_pdbx.dic``; ``.ci/run`` installs it).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import gemmi
import numpy as np
import pytest

import difffit
from difffit.structures import combine, read_structure, split_chains, write_structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402

PDBX_DIC = [Path(p) for p in (os.environ.get("DIFFFIT_PDBX_DIC"),
                              "/usr/share/libcifpp/mmcif_pdbx.dic") if p]

# Every structure file of the real data.
MODELS = ["daq_emd2566_3j6b/3J6B_9.pdb", "apoferritin_emd20026_3ajo/3ajo_fitted_refined.pdb",
          "hemoglobin_emd3488_5ni1/5ni1_updated.cif", "hemoglobin_emd3488_5ni1/modelangelo_5ni1.cif",
          "spike_ntd_emd21457_6vyb/6vyb_Ndom.pdb", "phage_emd4054_5lij/5lij.pdb",
          "tempy_factin_emd5168/1J6Z.pdb", "tempy_factin_emd5168/3MFP.pdb",
          "difffit_domain_demo/I7MLV6_D3.pdb", "difffit_domain_demo/I7LV70_D1.pdb"]


def _loop(block: gemmi.cif.Block, category: str, *tags: str) -> list[tuple[str, ...]]:
    """The rows of a category's tags, unquoted; nulls stay ``.`` / ``?``."""
    table = block.find(category, list(tags))
    return [tuple(v if gemmi.cif.is_null(v) else gemmi.cif.as_string(v) for v in row)
            for row in table]


def pdbx_problems(path: Path) -> list[str]:
    """Violations of the PDBx consistency rules of the module docstring (empty: none)."""
    block = gemmi.cif.read(str(path)).sole_block()
    entities = {e: t for e, t in _loop(block, "_entity.", "id", "type")}
    asym = {a: e for a, e in _loop(block, "_struct_asym.", "id", "entity_id")}
    poly = {e for (e,) in _loop(block, "_entity_poly.", "entity_id")}
    seq = {(e, n, m) for e, n, m in _loop(block, "_entity_poly_seq.", "entity_id", "num", "mon_id")}
    out = [f"struct_asym {a}: entity {e!r} not in entity" for a, e in asym.items()
           if e not in entities]
    for e, t in entities.items():
        if t == "polymer" and (e not in poly or not any(s[0] == e for s in seq)):
            out.append(f"polymer entity {e}: no entity_poly / entity_poly_seq")
    for asym_id, ent, seq_id, comp in _loop(block, "_atom_site.", "label_asym_id",
                                             "label_entity_id", "label_seq_id", "label_comp_id"):
        if ent not in entities:
            out.append(f"atom of {asym_id}: entity {ent!r} not in entity")
        elif asym.get(asym_id) != ent:
            out.append(f"atom of {asym_id}: entity {ent}, struct_asym says {asym.get(asym_id)!r}")
        elif entities[ent] == "polymer" and (ent, seq_id, comp) not in seq:
            out.append(f"atom {comp} {seq_id} of {asym_id}: not in entity_poly_seq of {ent}")
        elif entities[ent] != "polymer" and seq_id not in (".", "?"):
            out.append(f"non-polymer atom {comp} of {asym_id} has label_seq_id {seq_id}")
    return sorted(set(out))


def _dictionary() -> Path | None:
    return next((p for p in PDBX_DIC if p.is_file()), None)


@pytest.fixture(scope="module")
def ddl():
    """gemmi's DDL2 validator loaded with the PDBx/mmCIF dictionary, and its messages; None
    without the dictionary (the rules are still checked; test_dictionary_validation says
    that the dictionary check was skipped)."""
    dic = _dictionary()
    if dic is None:
        return None
    messages: list[str] = []
    validator = gemmi.cif.Ddl(messages.append)
    validator.read_ddl(gemmi.cif.read(str(dic)))
    return validator, messages


def dictionary_problems(ddl, path: Path) -> list[str]:
    """What the PDBx dictionary validation says about ``path``, less two things every
    wwPDB archive entry gets too: the per-atom component definitions (_chem_comp_atom)
    that model files never carry, and the parent check of the non-polymer atoms'
    (label_comp_id, label_entity_id, label_seq_id) against entity_poly_seq, where the
    validator does not skip their null label_seq_id ``.`` (accepted only when the number of
    misses is exactly the number of atoms with a null label_seq_id)."""
    validator, messages = ddl
    messages.clear()
    doc = gemmi.cif.read(str(path))
    validator.validate_cif(doc)
    n_null = sum(v == "." for v in doc.sole_block().find_values("_atom_site.label_seq_id"))
    out = []
    for m in messages:
        if "_chem_comp_atom." in m:
            continue
        miss = re.search(r"(\d+) missing parent\(s\) in item-linked-group atom_site \d+:\s+"
                         r"child:\s+_atom_site\.label_comp_id\+label_entity_id\+label_seq_id\s+"
                         r"parent: _entity_poly_seq\.mon_id\+entity_id\+num\s+1st miss: \S+\+\.$", m)
        if miss and int(miss.group(1)) == n_null:
            continue
        out.append(m)
    return out


def _atoms(st: gemmi.Structure) -> list[tuple]:
    return [(ch.name, str(r.seqid), r.name, a.name, a.element.name)
            for ch in st[0] for r in ch for a in r]


def _same_atoms(a: difffit.Structure, b: difffit.Structure) -> None:
    np.testing.assert_allclose(b.coords, a.coords, atol=1e-3)
    np.testing.assert_array_equal(b.atomic_numbers, a.atomic_numbers)
    np.testing.assert_array_equal(b.chain_ids, a.chain_ids)
    np.testing.assert_array_equal(b.fit_mask, a.fit_mask)
    assert _atoms(b.gemmi_structure) == _atoms(a.gemmi_structure)


def _check_file(path: Path, ddl) -> None:
    assert pdbx_problems(path) == []
    if ddl is not None:
        assert dictionary_problems(ddl, path) == []


def test_dictionary_validation(ddl, tmp_path):
    """The dictionary check runs (reported as skipped when the dictionary is missing), and
    it catches the issue #13 file: a struct_asym without entity_id, no entity_poly_seq."""
    if ddl is None:
        pytest.skip(f"PDBx/mmCIF dictionary not found (looked for "
                    f"{', '.join(map(str, PDBX_DIC))}; Debian: apt-get install libcifpp-data, "
                    f"or set DIFFFIT_PDBX_DIC): written mmCIF checked by the rules only")
    bad = _broken_file(tmp_path)
    problems = "\n".join(dictionary_problems(ddl, bad))
    assert "_struct_asym.id+entity_id" in problems and "_entity_poly_seq" in problems


@pytest.mark.parametrize("name", MODELS)
def test_written_models_are_valid_pdbx(name, shared_data, tmp_path, ddl):
    """Every structure of the real data, read with everything kept (waters, ligands,
    hydrogens: written models carry every atom) and moved: valid PDBx, and read back by
    gemmi and difffit with the same atoms where they were put."""
    s = read_structure(data_file(shared_data, name), keep_waters=True, keep_ligands=True,
                       keep_hydrogens=True)
    R, t = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), np.array([5.0, -3.0, 12.5])
    out = tmp_path / "model.cif"
    write_structure(out, s, R, t)
    _check_file(out, ddl)
    back = read_structure(out, keep_waters=True, keep_ligands=True, keep_hydrogens=True)
    _same_atoms(s.transformed(R, t), back)
    assert gemmi.read_structure(str(out))[0].count_atom_sites() == s.n_atoms
    # Polymer sequences come from the input when it records them (SEQRES, entity_poly_seq).
    st = gemmi.read_structure(str(out))
    for ent in st.entities:
        assert ent.entity_type != gemmi.EntityType.Polymer or len(ent.full_sequence) > 0


def test_recorded_sequence_kept_with_gaps(shared_data, tmp_path, ddl):
    """1J6Z.pdb lacks residue 73 (HIC) that its SEQRES lists: the written entity keeps the
    full 375-residue sequence and the residues after the gap are numbered past it."""
    s = read_structure(data_file(shared_data, "tempy_factin_emd5168/1J6Z.pdb"))
    out = tmp_path / "1j6z.cif"
    write_structure(out, s)
    _check_file(out, ddl)
    st = gemmi.read_structure(str(out))
    (poly,) = [e for e in st.entities if e.entity_type == gemmi.EntityType.Polymer]
    assert len(poly.full_sequence) == 375 and poly.full_sequence[72] == "HIC"
    res = {r.seqid.num: r.label_seq for r in st[0]["A"]}
    assert res[72] == 72 and res[74] == 74


def test_composite_model_entities(shared_data, tmp_path, ddl):
    """combine (the composite model): renamed chains, copies of one input share one entity,
    every subchain has its entity (the struct_asym without entity_id of issue #13)."""
    hb = read_structure(data_file(shared_data, "hemoglobin_emd3488_5ni1/5ni1_updated.cif"))
    alpha, beta = split_chains(hb)[:2]
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    model = combine([(alpha, ["A_1_1"]), (beta, ["B_2_1"]),
                     (alpha.transformed(R, np.array([40.0, 0, 0])), ["A_1_2"])], name="composite")
    st = model.gemmi_structure
    assert [ch.name for ch in st[0]] == ["A_1_1", "B_2_1", "A_1_2"]
    polymers = {e.name: sorted(e.subchains) for e in st.entities
                if e.entity_type == gemmi.EntityType.Polymer}
    assert sorted(map(len, polymers.values())) == [1, 2]  # alpha twice, beta once
    for ch in st[0]:
        for sub in ch.subchains():
            assert st.get_entity_of(sub) is not None, sub.subchain_id()
    out = tmp_path / "composite.cif"
    write_structure(out, model)
    _check_file(out, ddl)
    _same_atoms(model, read_structure(out))


def test_composite_run_writes_valid_cif(shared_data, tmp_path, ddl):
    """composite.cif and round_01/accepted.cif of a real (reduced) composite run."""
    from test_composite import REDUCED

    dmap = data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc")
    model = data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb")
    res = difffit.composite(dmap, [model], 5.0, copies=1, outdir=tmp_path / "c", **REDUCED)
    assert len(res.placements) == 1
    for name in ("composite.cif", "round_01/accepted.cif"):
        _check_file(tmp_path / "c" / name, ddl)
    back = read_structure(tmp_path / "c" / "composite.cif")
    assert back.chains == ["9_1_1"]
    _same_atoms(res.model(), back)


def _broken_file(tmp_path: Path) -> Path:
    """A valid written model, then broken as composite.cif was (issue #13): struct_asym
    without entity_id, no entity_poly_seq."""
    from difffit.demo import ideal_protein

    out = tmp_path / "m.cif"
    write_structure(out, ideal_protein(n_helices=1, helix_length=8, seed=0))
    assert pdbx_problems(out) == []
    doc = gemmi.cif.read(str(out))
    block = doc.sole_block()
    for row in block.find("_struct_asym.", ["entity_id"]):
        row[0] = "?"
    block.find_mmcif_category("_entity_poly_seq.").erase()
    doc.write_file(str(tmp_path / "bad.cif"))
    return tmp_path / "bad.cif"


def test_pdbx_rules_catch_the_old_composite(tmp_path):
    """The rules fail a file whose struct_asym has no entity (the bug of issue #13)."""
    problems = pdbx_problems(_broken_file(tmp_path))
    assert any("struct_asym" in p for p in problems)
    assert any("entity_poly_seq" in p for p in problems)


def test_pdb_format_unchanged(shared_data, tmp_path):
    """PDB output is not touched by the PDBx setup: the same atoms come back."""
    s = read_structure(data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb"))
    out = tmp_path / "m.pdb"
    write_structure(out, s)
    _same_atoms(s, read_structure(out))
