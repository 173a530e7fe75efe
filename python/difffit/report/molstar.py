"""An interactive 3D view of a fit in the HTML report: Mol* (the molstar npm package's
viewer bundle, MIT licence) showing the placed models in the map's density.

The viewer is shipped with difffit (``report/assets``: ``molstar.js.gz``, 1.4 MB, the
5.0 MB ``build/viewer/molstar.js`` of molstar 5.11.0 gzipped; ``molstar.css``, 73 KB; its
licence) and written next to the report, in ``difffit_molstar/``, when the report is
written (:func:`write_assets`): the page loads it with a relative ``<script src>``, so
the report opens offline, from any folder, as long as that folder goes with it. The data
are in the page: the placed models as mmCIF text and the map around them as a small MRC
file (8-bit, the map's values scaled to -127..127, the contour scaled alike), base64, which
Mol* reads from a ``data:`` URL. Without the folder the page still shows everything else
and says that the 3D view is missing.
"""
from __future__ import annotations

import base64
import gzip
import json
import struct
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write
from ..maps import DensityMap
from .blocks import _esc

__all__ = ["ASSET_DIR", "write_assets", "molstar_view", "mrc_int8"]

ASSET_DIR = "difffit_molstar"  # next to the report
_VERSION = "5.11.0"


def write_assets(folder) -> Path:
    """Write the Mol* viewer (molstar.js, molstar.css, its licence) into
    ``folder/difffit_molstar`` (skipped when the same files are there); returns that folder."""
    out = Path(folder) / ASSET_DIR
    out.mkdir(parents=True, exist_ok=True)
    src = resources.files("difffit.report") / "assets"
    files = {"molstar.js": gzip.decompress((src / "molstar.js.gz").read_bytes()),
             "molstar.css": (src / "molstar.css").read_bytes(),
             "LICENSE.txt": (src / "molstar-LICENSE.txt").read_bytes()}
    for name, data in files.items():
        p = out / name
        if not (p.is_file() and p.stat().st_size == len(data)):
            atomic_write(p, data)
    return out


def mrc_int8(dmap: DensityMap, lo: np.ndarray, hi: np.ndarray,
             max_voxels: int = 2_000_000) -> tuple[bytes, float]:
    """The part [lo, hi] (voxel indices x, y, z, inclusive) of ``dmap`` as an MRC file of
    mode 0 (signed 8-bit), and the scale: file value = map value / scale. A part of more
    than ``max_voxels`` voxels keeps every k-th voxel along each axis (the page stays a
    few MB for a large complex)."""
    sub = dmap.data[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].astype(np.float64)
    step = max(1, int(np.ceil((sub.size / max_voxels) ** (1 / 3))))
    sub = sub[::step, ::step, ::step]
    scale = float(np.abs(sub).max()) / 127 or 1.0
    q = np.clip(np.rint(sub / scale), -127, 127).astype(np.int8)
    nz, ny, nx = q.shape
    cell = np.array([nx, ny, nz]) * dmap.voxel_size * step
    origin = dmap.origin + lo * dmap.voxel_size
    head = bytearray(1024)
    struct.pack_into("<3i i 3i 3i 3f 3f 3i 3f", head, 0, nx, ny, nz, 0, 0, 0, 0, nx, ny, nz,
                     *cell, 90.0, 90.0, 90.0, 1, 2, 3, float(q.min()), float(q.max()),
                     float(q.mean()))
    struct.pack_into("<i", head, 88, 0)                       # ISPG
    struct.pack_into("<3f", head, 196, *origin)               # ORIGIN (MRC2014)
    head[208:212] = b"MAP "
    head[212:216] = bytes([0x44, 0x44, 0, 0])                 # little-endian stamp
    struct.pack_into("<i", head, 220, 0)                       # no labels
    return bytes(head) + q.tobytes(), scale


def molstar_view(dmap: DensityMap, threshold: float, models: Sequence[tuple[str, object]],
                 element_id: str = "molstar-view", margin: float = 8.0) -> str:
    """The HTML of the 3D view: a box the viewer fills, the data, and the script that
    starts it (the viewer script itself comes from ``difffit_molstar/``, see
    :func:`write_assets`).

    Args:
        dmap: the map; only its part around the models (``margin`` A wider) is embedded.
        threshold: the contour level shown, in map units.
        models: (label, Structure in its placed pose) per model.
        element_id: the id of the viewer's box (unique in the page).
    """
    from ..structures import simulation_mask

    if not models:
        return '<p class="note">No placed model for the 3D view.</p>'
    xyz = np.vstack([s.coords[simulation_mask(s)] for _, s in models])
    lo = np.floor(dmap.world_to_index(xyz.min(0) - margin)).astype(int)
    hi = np.ceil(dmap.world_to_index(xyz.max(0) + margin)).astype(int)
    n = np.array(dmap.shape_xyz)
    lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    mrc, scale = mrc_int8(dmap, lo, hi)
    data = {
        "map": "data:application/octet-stream;base64," + base64.b64encode(mrc).decode("ascii"),
        "level": float(threshold) / scale,
        "models": [{"label": label, "cif": s.gemmi_structure.make_mmcif_document().as_string()}
                   for label, s in models],
    }
    payload = json.dumps(data).replace("</", "<\\/")  # never closes the script element
    eid = _esc(element_id)
    return f"""<div class="molstar-box" style="position:relative;width:100%;max-width:900px;box-sizing:border-box;
 height:480px;border:3px solid #6a7f99"><div id="{eid}" class="molstar-view"
 style="position:absolute;left:0;top:0;right:0;bottom:0" data-state="loading"></div></div>
<p class="note" id="{eid}-note">Interactive 3D view (Mol* {_VERSION}): drag to rotate, scroll
to zoom. The viewer is loaded from the folder {ASSET_DIR}/ next to this report.</p>
<link rel="stylesheet" href="{ASSET_DIR}/molstar.css">
<script src="{ASSET_DIR}/molstar.js"></script>
<script type="application/json" id="{eid}-data">{payload}</script>
<script>
(function () {{
  var box = document.getElementById("{eid}");
  var note = document.getElementById("{eid}-note");
  if (typeof molstar === "undefined") {{
    box.setAttribute("data-state", "no-viewer");
    note.textContent = "The 3D view needs the folder {ASSET_DIR}/ next to this report.";
    return;
  }}
  var d = JSON.parse(document.getElementById("{eid}-data").textContent);
  molstar.Viewer.create("{eid}", {{
    layoutIsExpanded: false, layoutShowControls: false, layoutShowRemoteState: false,
    layoutShowSequence: false, layoutShowLog: false, layoutShowLeftPanel: false,
    viewportShowExpand: true, viewportShowSelectionMode: false, viewportShowAnimation: false,
    collapseLeftPanel: true, pdbProvider: "rcsb", emdbProvider: "rcsb"
  }}).then(async function (viewer) {{
    for (var i = 0; i < d.models.length; i++) {{
      var m = d.models[i];
      await viewer.loadStructureFromData(m.cif, "mmcif", {{dataLabel: m.label}});
    }}
    await viewer.loadVolumeFromUrl({{url: d.map, format: "ccp4", isBinary: true}},
      [{{type: "absolute", value: d.level, color: 0x8899aa, alpha: 0.35}}]);
    box.setAttribute("data-state", "ready");
  }}).catch(function (e) {{
    box.setAttribute("data-state", "error");
    note.textContent = "The 3D view failed: " + e;
  }});
}})();
</script>"""
