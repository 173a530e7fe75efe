"""PDBx records of written models: entities, subchains (label_asym_id), sequences and
label_seq_id, rebuilt so that every mmCIF difffit writes is consistent PDBx (every
struct_asym names an entity, every polymer entity has its entity_poly_seq, the atoms'
label_seq_id point into it), and the input's metadata made valid for a model that is no
longer the deposited entry. Used by :func:`difffit.structures.write_structure` and
:func:`difffit.structures.combine`; checked against the PDBx/mmCIF dictionary in
tests/test_mmcif.py.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import gemmi

__all__ = ["recorded_sequences", "setup_pdbx"]


def recorded_sequences(st: gemmi.Structure) -> dict[str, list[str]]:
    """Chain name -> the full sequence its polymer's entity records (PDB SEQRES, mmCIF
    entity_poly_seq), for the chains of the first model whose entity has one."""
    out: dict[str, list[str]] = {}
    for chain in st[0]:
        for sub in chain.subchains():
            ent = st.get_entity_of(sub)
            if (ent is not None and ent.entity_type == gemmi.EntityType.Polymer
                    and len(ent.full_sequence)):
                out[chain.name] = list(ent.full_sequence)
                break
    return out


def _labels_match(span: gemmi.ResidueSpan, seq: Sequence[str]) -> bool:
    """Whether every residue of ``span`` has a label_seq_id, increasing, that points at its
    own monomer in ``seq`` (an entry may list alternatives, ``"ALA,SER"``)."""
    prev = 0
    for res in span:
        k = res.label_seq
        if k is None or not prev < k <= len(seq) or res.name not in seq[k - 1].split(","):
            return False
        prev = k
    return True


def _align_labels(span: gemmi.ResidueSpan, seq: Sequence[str]) -> bool:
    """Set the label_seq_id of ``span``'s residues by aligning them to ``seq`` (as gemmi's
    ``assign_label_seq_id``, for one span); whether every residue got its own monomer."""
    cigar = gemmi.align_sequence_to_polymer(list(seq), span, span.check_polymer_type()).cigar_str()
    residues, label = list(span), 1
    for count, op in ((int(n), o) for n, o in re.findall(r"(\d+)([MID])", cigar)):
        if op == "I":      # sequence positions without a modelled residue
            label += count
        elif op == "D":    # modelled residues missing from the sequence
            return False
        else:
            for res in residues[:count]:
                res.label_seq = label
                label += 1
            residues = residues[count:]
    return not residues and _labels_match(span, seq)


def setup_pdbx(st: gemmi.Structure, sequences: dict[str, list[str]],
               is_polymer: Callable[[gemmi.Residue], bool]) -> None:
    """Rebuild, in place, the PDBx records of a one-model structure: entity type of every
    residue, subchains (label_asym_id), entities with their sequences, label_entity_id and
    label_seq_id, so that a written mmCIF is consistent: every struct_asym names an entity,
    every polymer entity has its entity_poly_seq, and the polymer atoms' label_seq_id
    point into it.

    Args:
        st: the structure; its first model is set up, its entity list replaced.
        sequences: chain name -> the full sequence recorded for it (``recorded_sequences``
            of the input); used when the chain's residues align to it, otherwise the
            modelled residues are the sequence (label_seq_id 1..n).
        is_polymer: whether a residue is an amino acid or a nucleotide (difffit's residue
            classes, :func:`difffit.structures._residue_class`: gemmi's entity types come
            from TER records and het flags, unreliable in real files).

    Entities are one per distinct polymer sequence (copies of a chain share one), one per
    ligand component and one for all waters, numbered 1, 2, ...: polymers, ligands, water,
    each in order of appearance. The metadata records are cleaned up as well
    (:func:`_tidy_records`).
    """
    Etype = gemmi.EntityType
    for chain in st[0]:
        # The polymer is the chain's first run of amino acids / nucleotides, so that it
        # is one subchain.
        state = "before"  # -> "in" the polymer run -> "after" it
        for res in chain:
            if state != "after" and is_polymer(res):
                state = "in"
                res.entity_type = Etype.Polymer
            else:
                state = "after" if state == "in" else state
                res.entity_type = Etype.Water if res.is_water() else Etype.NonPolymer
                res.label_seq = None
            res.entity_id = ""
    st.assign_subchains(force=True)

    entities: dict[tuple, gemmi.Entity] = {}
    for chain in st[0]:
        for sub in chain.subchains():
            etype = sub[0].entity_type
            if etype == Etype.Polymer:
                seq = sequences.get(chain.name)
                if not (seq and (_labels_match(sub, seq) or _align_labels(sub, seq))):
                    seq = [res.name for res in sub]
                    for k, res in enumerate(sub, 1):
                        res.label_seq = k
                ptype = sub.check_polymer_type()
                key = (etype, ptype, tuple(seq))
            else:
                key = (etype, sub[0].name if etype == Etype.NonPolymer else "")
            ent = entities.get(key)
            if ent is None:
                ent = entities[key] = gemmi.Entity("")  # numbered below
                ent.entity_type = etype
                if etype == Etype.Polymer:
                    ent.polymer_type = ptype
                    ent.full_sequence = list(seq)
            if sub.subchain_id() not in ent.subchains:  # waters split by a ligand: one id
                ent.subchains = [*ent.subchains, sub.subchain_id()]
    # Numbered as the PDB does: polymers first, then ligands, then water.
    order = (Etype.Polymer, Etype.NonPolymer, Etype.Water)
    st.entities.clear()
    for k, ent in enumerate(sorted(entities.values(), key=lambda e: order.index(e.entity_type))):
        ent.name = str(k + 1)
        st.entities.append(ent)
    st.add_entity_ids(overwrite=True)
    _tidy_records(st)


# PDBx's enumeration of _exptl.method.
_EXPTL_METHODS = ("X-RAY DIFFRACTION", "NEUTRON DIFFRACTION", "FIBER DIFFRACTION",
                  "ELECTRON CRYSTALLOGRAPHY", "ELECTRON MICROSCOPY", "SOLUTION NMR",
                  "SOLID-STATE NMR", "SOLUTION SCATTERING", "POWDER DIFFRACTION",
                  "INFRARED SPECTROSCOPY", "EPR", "FLUORESCENCE TRANSFER", "THEORETICAL MODEL")


def _tidy_records(st: gemmi.Structure) -> None:
    """Make the input's metadata valid PDBx for a written model: remove the records (links,
    cis peptides, modified residues, helices, strands) that name a residue the first model
    does not hold (removed waters, ligands or chains, or missing from the input itself) and
    the deposition status of the source entry (a written model is not that entry); write
    the experimental method as PDBx enumerates it (5NI1 spells it "Electron Microscopy",
    PDB EXPDTA lines add details: "THEORETICAL MODEL, MODELLER 9.11"), or not at all."""
    present = {(ch.name, str(res.seqid), res.name) for ch in st[0] for res in ch}

    def ok(*addresses) -> bool:  # an empty address (no H-bond atom given) names nothing
        return all((a.chain_name, str(a.res_id.seqid), a.res_id.name) in present
                   for a in addresses if a.chain_name)

    def keep(records, addresses) -> None:  # gemmi's bound lists, edited in place
        for i in reversed(range(len(records))):
            if not ok(*addresses(records[i])):
                del records[i]

    keep(st.connections, lambda c: (c.partner1, c.partner2))
    keep(st.helices, lambda h: (h.start, h.end))
    # These two are copies in gemmi's Python API: assigned.
    st.cispeps = [c for c in st.cispeps if ok(c.partner_c, c.partner_n)]
    st.mod_residues = [r for r in st.mod_residues
                       if (r.chain_name, str(r.res_id.seqid), r.res_id.name) in present]
    for sheet in st.sheets:
        keep(sheet.strands, lambda s: (s.start, s.end, s.hbond_atom1, s.hbond_atom2))
    for i in reversed(range(len(st.sheets))):
        if not len(st.sheets[i].strands):
            del st.sheets[i]
    for key in [k for k in st.info.keys() if k.startswith("_pdbx_database_status.")]:
        del st.info[key]

    def method(text: str) -> str:
        first = text.split(",")[0].strip().upper()
        return first if first in _EXPTL_METHODS else ""

    for exp in st.meta.experiments:
        exp.method = method(exp.method)
    st.meta.experiments = [exp for exp in st.meta.experiments if exp.method]
    if "_exptl.method" in st.info:
        st.info["_exptl.method"] = method(st.info["_exptl.method"])
        if not st.info["_exptl.method"]:
            del st.info["_exptl.method"]
