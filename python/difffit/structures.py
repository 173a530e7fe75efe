"""Atomic structures: the Structure type, reading, selecting, moving and writing models.

Structure reading keeps one model, the first alternative conformation, and every atom of
them (hydrogens, waters, ligands, ions and unknown residues too, unless asked to drop
them): written models carry every atom of the input. Atom selections ("backbone", "ca") are made by
residue type *and* atom name, so that a water oxygen or a calcium ion named "CA" is never
taken for a backbone atom.
"""
from __future__ import annotations

import functools

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import gemmi
import numpy as np

from .errors import DifffitInputError, opt, warn
from .files import atomic_write, is_gz, is_map_path, refuse_existing, stem
from .pdbx import recorded_sequences, setup_pdbx

__all__ = ["Structure", "SELECTIONS", "read_structure", "split_chains", "write_structure",
           "trace_mask", "simulation_mask", "combine"]


SELECTIONS = ("backbone", "ca", "heavy", "all")

# Backbone atom names. Nucleotides: the sugar-phosphate backbone including the sugar ring
# (C1', C2', O4'), which is as rigid as the phosphate trace and adds density coverage.
# O1P/O2P are the pre-2007 PDB names of OP1/OP2.
_AA_BACKBONE = frozenset({"N", "CA", "C", "O"})
_NA_BACKBONE = frozenset(
    {"P", "OP1", "OP2", "O1P", "O2P", "O5'", "C5'", "C4'", "O4'", "C3'", "O3'", "C2'", "C1'"}
)
# Atoms whose joint presence identifies a residue as part of a polymer even when its name
# is not in gemmi's table (e.g. an unusual modified residue).
_PEPTIDE_CORE = frozenset({"N", "CA", "C"})
_NUCLEOTIDE_CORE = frozenset({"C1'", "C3'", "C4'", "O4'"})

_AA, _NA, _WATER, _OTHER = "aa", "na", "water", "other"


@functools.lru_cache(maxsize=4096)
def _class_of_name(name: str) -> str | None:
    """The class a residue name decides alone (a water, or a component in gemmi's table);
    None for a name only the residue's atoms can decide. Cached: a model repeats a few
    dozen names thousands of times."""
    probe = gemmi.Residue()
    probe.name = name
    if probe.is_water():
        return _WATER
    info = gemmi.find_tabulated_residue(name)
    # gemmi answers names it does not know with an UNKNOWN entry: classified by atoms.
    if info is not None and info.kind != gemmi.ResidueKind.UNKNOWN:
        if info.is_amino_acid():
            return _AA
        if info.is_nucleic_acid():
            return _NA
        if info.is_water():
            return _WATER
        # A tabulated non-polymer component (CA calcium, MG, NAG, HEM, ADP ...) is a
        # ligand even if it has atoms named like backbone atoms.
        return _OTHER
    return None


def _residue_class(res: gemmi.Residue) -> str:
    """Classify a residue as amino acid, nucleotide, water or other (ligand / ion).

    Decided per residue from its name and atoms, not from gemmi's entity types: those come
    from TER records / het flags, which are unreliable in real files (e.g. the shared
    1J6Z.pdb has a stray TER mid-chain, after which gemmi calls 299 amino acids
    "non-polymer").
    """
    cls = _class_of_name(res.name)
    if cls is not None:
        return cls
    # Fallback for components missing from gemmi's table (unusual modified residues):
    # recognise a polymer residue by its backbone atoms.
    names = {a.name for a in res}
    if _PEPTIDE_CORE <= names:
        return _AA
    if _NUCLEOTIDE_CORE <= names:
        return _NA
    return _OTHER


def _select_atom(cls: str, atom: gemmi.Atom, selection: str) -> bool:
    """Whether ``atom`` of a residue of class ``cls`` belongs to ``selection``."""
    if selection == "all":
        return True
    if selection == "heavy":
        return not atom.is_hydrogen()
    if selection == "backbone":
        if cls == _AA:
            return atom.name in _AA_BACKBONE
        if cls == _NA:
            return atom.name in _NA_BACKBONE
        return False
    if selection == "ca":
        if cls == _AA:
            return atom.name == "CA"
        if cls == _NA:
            return atom.name == "P"
        return False
    raise AssertionError(selection)


@dataclass
class Structure:
    """An atomic model prepared for fitting.

    Attributes:
        name: file stem, plus ``_<chain>`` for structures made by :func:`split_chains`.
        path: source file, if any.
        coords: [N, 3] float64 world coordinates of all kept atoms (every atom of the
            input's model and chains, unless waters, ligands or hydrogens were dropped),
            in the atom order of ``gemmi_structure``.
        atomic_numbers: [N] int32 atomic numbers (unknown element -> 6, carbon).
        fit_mask: [N] bool, True for the atoms used for fitting (the selection).
        chain_ids: [N] str chain name of each atom.
        gemmi_structure: the kept atoms only (one model), for writing fitted models with
            their original names and numbering.
    """

    name: str
    path: str | None
    coords: np.ndarray
    atomic_numbers: np.ndarray
    fit_mask: np.ndarray
    chain_ids: np.ndarray
    gemmi_structure: gemmi.Structure = field(repr=False)
    # Residue class of every atom, filled on first use (metrics, refinement and the
    # first pass all ask; a replace() or transformed() copy starts without it).
    _classes: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def fit_coords(self) -> np.ndarray:
        """[M, 3] float64 coordinates of the fitted atoms."""
        return self.coords[self.fit_mask]

    @property
    def n_fit_atoms(self) -> int:
        return int(np.count_nonzero(self.fit_mask))

    @property
    def n_atoms(self) -> int:
        return int(self.coords.shape[0])

    @property
    def centroid(self) -> np.ndarray:
        """[3] float64 mean of the fitted atoms' coordinates."""
        return self.fit_coords.mean(axis=0)

    @property
    def chains(self) -> list[str]:
        """Chain names in order of first appearance."""
        return list(dict.fromkeys(self.chain_ids.tolist()))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Structure":
        """A new Structure with every atom moved by x -> R x + t.

        Args:
            rotation: [3, 3] rotation matrix R.
            translation: [3] translation t in Angstrom.

        Returns:
            A new Structure; coordinates and the gemmi structure (positions and
            anisotropic ADPs) are both transformed. ``self`` is not modified.
        """
        R, t = _check_rt(rotation, translation)
        st = self.gemmi_structure.clone()
        tr = gemmi.Transform()
        tr.mat.fromlist(R.tolist())
        tr.vec.fromlist(t.tolist())
        st[0].transform_pos_and_adp(tr)
        return Structure(
            name=self.name,
            path=self.path,
            coords=self.coords @ R.T + t,  # [N, 3]
            atomic_numbers=self.atomic_numbers.copy(),
            fit_mask=self.fit_mask.copy(),
            chain_ids=self.chain_ids.copy(),
            gemmi_structure=st,
        )


def _check_rt(rotation, translation) -> tuple[np.ndarray, np.ndarray]:
    R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    t = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64)
    if R.shape != (3, 3) or t.shape != (3,):
        raise DifffitInputError(
            f"rotation must be [3, 3] and translation [3], got {R.shape} and {t.shape}"
        )
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise DifffitInputError("rotation and translation must be finite")
    return R, t


def _structure_from_gemmi(
    st: gemmi.Structure, name: str, path: str | None, selection: str
) -> Structure:
    """Build a Structure from a one-model gemmi structure holding only the kept atoms."""
    coords: list[tuple[float, float, float]] = []
    znum: list[int] = []
    mask: list[bool] = []
    chain_ids: list[str] = []
    for chain in st[0]:
        for res in chain:
            cls = _residue_class(res)
            for atom in res:
                pos = atom.pos
                coords.append((pos.x, pos.y, pos.z))
                z = atom.element.atomic_number
                znum.append(z if z > 0 else 6)
                mask.append(_select_atom(cls, atom, selection))
                chain_ids.append(chain.name)
    return Structure(
        name=name,
        path=path,
        coords=np.array(coords, dtype=np.float64).reshape(-1, 3),
        atomic_numbers=np.array(znum, dtype=np.int32),
        fit_mask=np.array(mask, dtype=bool),
        chain_ids=np.array(chain_ids, dtype=str),
        gemmi_structure=st,
    )


def read_structure(
    path,
    selection: str = "backbone",
    chains: Sequence[str] | None = None,
    keep_waters: bool = True,
    keep_ligands: bool = True,
    keep_hydrogens: bool = True,
    model_index: int = 0,
) -> Structure:
    """Read a PDB or mmCIF model (optionally gzip-compressed) for fitting, or take a
    ``gemmi.Structure`` (which is not modified) as one.

    Every atom of the chosen model and chains is kept (so written models carry them all,
    moved rigidly); ``selection`` only decides which atoms are fitted. For atoms with
    alternative conformations the first one is kept. Residues are classified one by one
    (amino acid, nucleotide, water, other): see ``_residue_class``. Ligands are all
    non-polymer, non-water residues (ions, sugars, cofactors).

    Args:
        path: .pdb / .ent / .cif / .mmcif, optionally .gz; or a ``gemmi.Structure``
            (the Structure's name is then the gemmi structure's).
        selection: atoms used for fitting, one of SELECTIONS:
            "backbone": N, CA, C, O of amino acids and the sugar-phosphate backbone of
            nucleotides (P, OP1, OP2, O5', C5', C4', O4', C3', O3', C2', C1');
            "ca": CA of amino acids and P of nucleotides;
            "heavy": all non-hydrogen kept atoms; "all": all kept atoms.
        chains: keep only these chain names (default: all chains).
        keep_waters, keep_ligands, keep_hydrogens: keep these atoms (the default; they
            are then in ``coords`` and in "all" ("heavy" without hydrogens), never in
            "backbone"/"ca"). False leaves them out of the structure and of the models
            written from it.
        model_index: which model (0-based position in the file) to use.

    Returns:
        Structure with the kept atoms and the selection mask.

    Raises:
        DifffitInputError: missing or unparsable file, no such model, unknown chain,
            no atoms left after filtering, or an empty selection.
    """
    if selection not in SELECTIONS:
        raise DifffitInputError(
            f"{path if isinstance(path, (str, os.PathLike)) else 'structure'}: unknown "
            f"selection {selection!r}; choose one of {', '.join(SELECTIONS)}"
        )
    if isinstance(path, gemmi.Structure):
        return _prepare(path.clone(), path.name or "structure", None, selection, chains,
                        keep_waters, keep_ligands, keep_hydrogens, model_index)
    p = _as_path(path)
    if not p.exists():
        raise DifffitInputError(f"{p}: structure file does not exist")
    if not p.is_file() or p.stat().st_size == 0:
        raise DifffitInputError(f"{p}: structure file is empty or not a regular file")
    if is_map_path(p):
        raise DifffitInputError(
            f"{p}: a map (MRC/CCP4), where an atomic model (PDB/mmCIF) is expected; a map "
            f"is placed into a map only by difffit.fit(target, {p.name!r}) or `difffit fit "
            f"TARGET.mrc {p.name}`")
    try:
        st = gemmi.read_structure(str(p))
    except (RuntimeError, ValueError, OSError) as exc:
        raise DifffitInputError(f"{p}: cannot read as a PDB/mmCIF structure: {exc}") from exc
    return _prepare(st, stem(p), str(p), selection, chains, keep_waters, keep_ligands,
                    keep_hydrogens, model_index)


def _as_path(path) -> Path:
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise DifffitInputError(f"a structure must be given as the path of a PDB/mmCIF file "
                            f"(str or pathlib.Path) or a gemmi.Structure, got "
                            f"{type(path).__name__}")


def _prepare(st: gemmi.Structure, name: str, path: str | None, selection: str, chains,
             keep_waters: bool, keep_ligands: bool, keep_hydrogens: bool,
             model_index: int) -> Structure:
    """Keep one model, its first conformations, the chosen chains and kinds of atoms of
    ``st`` (modified in place), and make the Structure."""
    p = path or name
    n_models = len(st)
    if n_models == 0 or not any(len(res) for model in st for ch in model for res in ch):
        # gemmi reads any text as a PDB file; no atoms at all means it was not one.
        raise DifffitInputError(f"{p}: no atoms found; is it a PDB or mmCIF file?")
    if not 0 <= model_index < n_models:
        raise DifffitInputError(
            f"{p}: model_index {model_index} out of range; the file has {n_models} model(s)"
        )
    # Keep only the requested model, as model 0.
    for i in reversed(range(n_models)):
        if i != model_index:
            del st[i]
    st.setup_entities()
    st.remove_alternative_conformations()  # keeps the first altloc
    if not keep_hydrogens:
        st.remove_hydrogens()  # H and D

    model = st[0]
    available = list(dict.fromkeys(ch.name for ch in model))
    if chains is not None:
        if isinstance(chains, str):
            chains = [chains]
        wanted = list(dict.fromkeys(chains))
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise DifffitInputError(
                f"{p}: chain(s) {unknown} not found; available chains: {available}"
            )
        for i in reversed(range(len(model))):
            if model[i].name not in wanted:
                del model[i]

    # Remove waters / ligands residue by residue (see _residue_class for why not by entity).
    if not (keep_waters and keep_ligands):
        for chain in model:
            for i in reversed(range(len(chain))):
                cls = _residue_class(chain[i])
                if (cls == _WATER and not keep_waters) or (cls == _OTHER and not keep_ligands):
                    del chain[i]
    st.remove_empty_chains()

    if sum(len(res) for ch in st[0] for res in ch) == 0:
        removed = [(what, key) for what, key, kept in (
            ("waters", "keep_waters", keep_waters), ("ligands", "keep_ligands", keep_ligands),
            ("hydrogens", "keep_hydrogens", keep_hydrogens)) if not kept]
        raise DifffitInputError(
            f"{p}: no atoms left in chains {list(chains or available)} after removing "
            f"{', '.join(w for w, _ in removed) or 'nothing'}"
            + (f"; keep them ({', '.join(opt(k, True) for _, k in removed)})" if removed else "")
        )

    out = _structure_from_gemmi(st, name, path, selection)
    if out.n_fit_atoms == 0:
        raise DifffitInputError(
            f"{p}: selection {selection!r} matches no atoms "
            f"({out.n_atoms} atoms kept, chains {out.chains}); choose another "
            f"({opt('selection')}: {', '.join(SELECTIONS)})"
        )
    return out


def split_chains(structure: Structure) -> list[Structure]:
    """Split a structure into one Structure per chain.

    Args:
        structure: a Structure, e.g. from read_structure.

    Returns:
        One Structure per chain name, in order of appearance, named
        ``f"{structure.name}_{chain}"``, each with its own gemmi structure holding only
        that chain. Chains with no fitted atoms (e.g. only ions) are skipped with a warning,
        since they cannot be fitted.
    """
    out: list[Structure] = []
    for chain in structure.chains:
        sel = structure.chain_ids == chain  # [N] bool
        if not np.any(structure.fit_mask[sel]):
            warn(f"{structure.path or structure.name}: chain {chain!r} has no atoms in the "
                 f"fitting selection; skipped")
            continue
        st = structure.gemmi_structure.clone()
        model = st[0]
        for i in reversed(range(len(model))):
            if model[i].name != chain:
                del model[i]
        out.append(
            Structure(
                name=f"{structure.name}_{chain}",
                path=structure.path,
                coords=structure.coords[sel].copy(),
                atomic_numbers=structure.atomic_numbers[sel].copy(),
                fit_mask=structure.fit_mask[sel].copy(),
                chain_ids=structure.chain_ids[sel].copy(),
                gemmi_structure=st,
            )
        )
    return out


def write_structure(
    path,
    structure: Structure,
    rotation: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    overwrite: bool = False,
) -> None:
    """Write a (transformed) structure as mmCIF or PDB.

    Every kept atom is moved by x -> R x + t (identity by default). Chain names, residue
    names and numbering are the original ones. The format is mmCIF when the name ends in
    .cif or .mmcif (optionally .gz), PDB otherwise; ``.gz`` gives gzip compression.

    Args:
        path: output file.
        structure: the structure to write.
        rotation: [3, 3] rotation matrix R, default identity.
        translation: [3] translation t in Angstrom, default zero.
        overwrite: replace an existing file; otherwise refuse.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        DifffitInputError: bad R/t, or chain names too long for the PDB format.
    """
    if not isinstance(structure, Structure):
        raise DifffitInputError(f"write_structure: structure must be a difffit Structure "
                                f"(from read_structure), got {type(structure).__name__}")
    p = Path(path)
    refuse_existing(p, overwrite)
    if not p.parent.is_dir():
        raise DifffitInputError(f"{p}: output folder {p.parent} does not exist")
    R, t = _check_rt(rotation, translation)
    moved = structure.transformed(R, t)
    st = moved.gemmi_structure

    # ``coords`` is the canonical data: write those positions, so that a Structure whose
    # coords were replaced (dataclasses.replace) is still written as it is.
    n = 0
    for chain in st[0]:
        for res in chain:
            for atom in res:
                if n < moved.coords.shape[0]:
                    atom.pos = gemmi.Position(*moved.coords[n])
                n += 1
    if n != moved.coords.shape[0]:
        raise DifffitInputError(
            f"{p}: structure {structure.name} has {moved.coords.shape[0]} coordinates but its "
            f"gemmi model has {n} atoms"
        )

    lower = p.name.lower()
    base = lower[:-3] if lower.endswith(".gz") else lower
    try:
        if base.endswith((".cif", ".mmcif")):
            # The input's entity records name subchains that filtering may have removed
            # (waters, ligands, chains) and PDB input has no label_seq_id: rebuilt so the
            # file is consistent PDBx (st is the transformed clone, not the input's).
            setup_pdbx(st, recorded_sequences(st), _is_polymer)
            text = st.make_mmcif_document().as_string()
        else:
            text = st.make_pdb_string()
    except RuntimeError as exc:
        raise DifffitInputError(
            f"{p}: cannot write structure {structure.name}: {exc} (write .cif instead)"
        ) from exc
    payload = text.encode()
    if is_gz(p):
        payload = gzip.compress(payload)
    atomic_write(p, payload)


def _is_polymer(res: gemmi.Residue) -> bool:
    """An amino acid or a nucleotide (the polymers of written models' entities)."""
    return _residue_class(res) in (_AA, _NA)


def _atom_classes(s: Structure) -> np.ndarray:
    """[N] residue class of every atom, in atom order (their names)."""
    if s._classes is None:
        cls, size = [], []
        for chain in s.gemmi_structure[0]:
            for res in chain:
                cls.append(_residue_class(res))
                size.append(len(res))
        s._classes = np.repeat(np.array(cls, dtype="U8"), size)
    return s._classes


def simulation_mask(s: Structure) -> np.ndarray:
    """[N] bool: the atoms a simulated map of the structure is made of: every kept atom
    but waters (hydrogens included when they were kept), as ChimeraX ``molmap`` and
    ``fitmap`` use a model without its waters."""
    classes = _atom_classes(s)
    if classes.shape[0] != s.n_atoms:  # a Structure whose gemmi model was replaced
        return np.ones(s.n_atoms, dtype=bool)
    return classes != _WATER


def trace_mask(s: Structure) -> np.ndarray:
    """[N] bool: CA of amino acids and P of nucleotides (the atoms of clash tests).

    Falls back to the fitted atoms for a structure with neither (e.g. a ligand-only input).
    """
    mask = []
    for chain in s.gemmi_structure[0]:
        for res in chain:
            cls = _residue_class(res)
            mask.extend(_select_atom(cls, atom, "ca") for atom in res)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape[0] != s.n_atoms or not mask.any():
        return s.fit_mask.copy()
    return mask


def combine(parts: Sequence[tuple[Structure, list[str]]], name: str = "combined") -> Structure:
    """One Structure holding several structures' chains, renamed.

    Args:
        parts: (structure, new chain names in the order of ``structure.chains``) pairs;
            the structures are taken as they are (already moved).
        name: the new structure's name.

    Returns:
        A Structure whose gemmi model has every chain of every part; subchain
        (label_asym_id) and entity records are rebuilt (:func:`difffit.pdbx.setup_pdbx`):
        copies of one input share one entity, which keeps the input's recorded sequence.
    """
    st = gemmi.Structure()
    st.name = f"difffit_{name}"
    model = gemmi.Model("1")
    coords, znum, fmask, chain_ids = [], [], [], []
    sequences: dict[str, list[str]] = {}
    for moved, names in parts:
        rename = dict(zip(moved.chains, names))
        recorded = recorded_sequences(moved.gemmi_structure)
        for ch in moved.gemmi_structure[0]:
            c = ch.clone()
            c.name = rename[ch.name]
            model.add_chain(c)
            if ch.name in recorded:
                sequences[c.name] = recorded[ch.name]
        coords.append(moved.coords)
        znum.append(moved.atomic_numbers)
        fmask.append(moved.fit_mask)
        chain_ids.append(np.array([rename[c] for c in moved.chain_ids.tolist()], dtype=object))
    st.add_model(model)
    setup_pdbx(st, sequences, _is_polymer)
    if not parts:
        return Structure(name=name, path=None, coords=np.zeros((0, 3)),
                         atomic_numbers=np.zeros(0, np.int32), fit_mask=np.zeros(0, bool),
                         chain_ids=np.zeros(0, dtype=str), gemmi_structure=st)
    return Structure(name=name, path=None, coords=np.concatenate(coords),
                     atomic_numbers=np.concatenate(znum), fit_mask=np.concatenate(fmask),
                     chain_ids=np.concatenate(chain_ids).astype(str), gemmi_structure=st)


def bfactors(s: Structure) -> np.ndarray:
    """[N] the B-factor column of every atom (pLDDT in AlphaFold models), in atom order."""
    out = np.asarray([a.b_iso for ch in s.gemmi_structure[0] for res in ch for a in res],
                     dtype=np.float64)
    if out.shape[0] != s.n_atoms:
        raise DifffitInputError(f"{s.name}: its gemmi model and coordinates disagree in size")
    return out


def alphafold_evidence(s: Structure) -> str | None:
    """Why the structure looks like a predicted model with pLDDT in its B-factors (an
    AlphaFold-style model), or None.

    Evidence: the file's title or remarks name AlphaFold; or every B-factor lies in
    [0, 100], is constant within each residue and the mean is above 40 (experimental
    B-factors vary from atom to atom).
    """
    st = s.gemmi_structure
    text = " ".join([*map(str, st.info.values()), *st.raw_remarks]).lower()
    if "alphafold" in text:
        return "its header names AlphaFold"
    b = bfactors(s)
    if b.size == 0 or b.min() < 0 or b.max() > 100 or b.mean() <= 40:
        return None
    k = 0
    for ch in st[0]:
        for res in ch:
            n = len(res)
            if n and np.ptp(b[k:k + n]) > 1e-3:
                return None
            k += n
    return "its B-factors are per-residue values in 0-100 (pLDDT-like)"


def with_min_plddt(s: Structure, min_plddt: float) -> Structure:
    """A copy of the structure whose fitted atoms are only those of residues with
    pLDDT (the B-factor column) at least ``min_plddt``; every atom is still kept (and
    written), only the fit ignores the low-confidence ones.

    Raises:
        DifffitInputError: no fitted atom is left.
    """
    keep = s.fit_mask & (bfactors(s) >= float(min_plddt))
    if not keep.any():
        raise DifffitInputError(
            f"{s.path or s.name}: no fitted atom has pLDDT (B-factor) >= {min_plddt:g} "
            f"(of {s.n_fit_atoms} fitted atoms); lower the pLDDT cut")
    return Structure(name=s.name, path=s.path, coords=s.coords, atomic_numbers=s.atomic_numbers,
                     fit_mask=keep, chain_ids=s.chain_ids, gemmi_structure=s.gemmi_structure)
