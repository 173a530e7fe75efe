"""Exchange with ChimeraX: the .cxc scripts of fit and composite parse with a small grammar
of the commands difffit emits (quoted where a path needs it, as ChimeraX's parser reads
quotes), every file they open exists, and the positions files move the input structures
exactly onto the written models."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file

import difffit
from difffit.output import write_fit_outputs
from difffit.output.chimerax import chain_spec, positions_line
from difffit.output.common import cxc_quote

NUMBER = r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
SPEC = r"#\d+(/[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*)?"
# Every command difffit writes, as (verb, pattern of the words after the verb).
GRAMMAR = {
    "open": [r"PATH", r"PATH models #\d+(-\d+)?"],
    "volume": [rf"#\d+ level {NUMBER} style (surface|mesh)( transparency {NUMBER})?"],
    "color": [rf"{SPEC} [a-z]+ target ac"],
    "hide": [r"atoms", r"#\d+ atoms", r"#\d+ models"],
    "show": [r"cartoons", r"#\d+ cartoons"],
    "view": [r""],
}


def words(line: str) -> list[str]:
    """Split a command line as ChimeraX does: a word starting with a quote runs to the
    same quote followed by a space or the end of the line (a double-quoted word may
    escape its quote as \\"); other words end at a space."""
    out, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        q = line[i]
        if q in "\"'":
            m = re.compile(re.escape(q) + r"(\s|$)").search(line, i + 1)
            while q == '"' and m and line[m.start() - 1] == "\\":
                m = re.compile(re.escape(q) + r"(\s|$)").search(line, m.start() + 1)
            assert m, f"unterminated quote in {line!r}"
            text = line[i + 1:m.start()]
            out.append(text.replace('\\"', '"') if q == '"' else text)
            i = m.end()
        else:
            j = i
            while j < len(line) and not line[j].isspace():
                j += 1
            word = line[i:j]
            assert not re.search(r"[\"';]", word), f"unquoted special character in {word!r}"
            out.append(word)
            i = j
    return out


def check_cxc(text: str) -> list[str]:
    """Parse a .cxc with :data:`GRAMMAR`; return the paths it opens."""
    opened = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        w = words(line)
        verb, rest = w[0], w[1:]
        assert verb in GRAMMAR, f"unknown command {line!r}"
        if verb == "open":
            opened.append(rest[0])
            rest = ["PATH"] + rest[1:]
        assert any(re.fullmatch(p, " ".join(rest)) for p in GRAMMAR[verb]), f"bad {line!r}"
    return opened


def read_positions(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, R [3, 3], t [3]) per line of a ChimeraX positions file."""
    out = []
    for line in path.read_text().splitlines():
        name, *nums = line.rsplit(",", 12)
        M = np.array([float(v) for v in nums]).reshape(3, 4)
        out.append((name, M[:, :3], M[:, 3]))
    return out


def test_words_and_quoting():
    for path in ("/plain/map.mrc", "/with space/map.mrc", "/x#y/map.mrc", '/a"b/m.mrc',
                 "/a'b c/m.mrc", "/a'b\"c d/m.mrc", ""):
        assert words(f"open {cxc_quote(path)}") == ["open", path]
    assert words('open "a b" models #2-3') == ["open", "a b", "models", "#2-3"]
    with pytest.raises(AssertionError):
        check_cxc("open a;b")
    with pytest.raises(AssertionError):
        check_cxc("color #2/A,B-C red target ac")
    assert chain_spec(2, ["A", "B_1_1", "x-y", "a b"]) == ("#2/A,B_1_1", ["x-y", "a b"])
    line = positions_line("a,b.pdb", np.eye(3), [1.5, -2, 3])
    assert line == "a_b.pdb,1,0,0,1.5,0,1,0,-2,0,0,1,3"


def test_fit_outputs_script_and_positions(shared_data, tmp_path):
    dmap = difffit.read_map(data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc"))
    model = difffit.read_structure(data_file(shared_data, "daq_emd2566_3j6b/3J6B_9.pdb"))
    res = difffit.fit(dmap, [model], 5.0, n_rotations=10, n_positions=3, n_iters=30,
                      refine_top=4)
    out = tmp_path / "a dir with 'quotes' #1"  # every character that needs quoting
    paths = write_fit_outputs(res, out, top=3)
    opened = check_cxc(paths["cxc"].read_text())
    assert all(Path(p).is_file() for p in opened)
    models = [Path(p) for p in opened[1:]]
    assert len(models) == 3 and all(p.parent == (out / "models").resolve() for p in models)
    pos = read_positions(paths["positions"])
    assert len(pos) == 3 and "difffit_fits.positions" in (out / "results.json").read_text()
    for (name, R, t), path in zip(pos, models):
        assert name == Path(model.path).name  # 3J6B_9.pdb (.gz in tests/data)
        placed = difffit.read_structure(path)
        np.testing.assert_allclose(model.coords @ R.T + t, placed.coords, atol=2e-3)


@pytest.mark.slow
def test_composite_outputs_script_and_positions(shared_data, tmp_path):
    hb = data_file(shared_data, "hemoglobin_emd3488_5ni1/5ni1_updated.cif")
    alpha = difffit.read_structure(hb, chains=["A"])
    res = difffit.composite(data_file(shared_data, "hemoglobin_emd3488_5ni1/emd_3488.mrc"),
                            [alpha], 3.2, outdir=tmp_path / "comp x", copies=2, max_rounds=1,
                            n_rotations=30, n_positions=5, n_iters=60)
    assert res.placements
    text = (tmp_path / "comp x" / "composite.cxc").read_text()
    assert all(Path(p).is_file() for p in check_cxc(text))
    pos = read_positions(tmp_path / "comp x" / "composite.positions")
    assert len(pos) == len(res.placements)
    for (name, R, t), p in zip(pos, res.placements):
        assert name == Path(str(hb)).name
        np.testing.assert_allclose(alpha.coords @ R.T + t, p.moved(alpha).coords, atol=1e-6)
