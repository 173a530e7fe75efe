"""The HTML report of a simulator training run: validation curve and the curation table."""
from __future__ import annotations

from pathlib import Path

from ..report.blocks import line_plot, page, table, write_report


def training_report(path, history: list[dict], curation: dict, command: str | None = None
                    ) -> Path:
    """Write ``path`` (overwriting: the report follows the run it belongs to)."""
    ep = [h["epoch"] for h in history]
    curves = {"validation loss": (ep, [h["val_loss"] for h in history])}
    trained = [h for h in history if h.get("train_loss") is not None]
    if trained:
        curves["training loss"] = ([h["epoch"] for h in trained],
                                   [h["train_loss"] for h in trained])
    cols = ["name", "use", "resolution", "voxel_size", "correlation", "unmodelled", "protein",
            "nucleic", "shape_xyz"]
    rows = [{k: (" x ".join(map(str, r[k])) if k == "shape_xyz" else r.get(k)) for k in cols}
            for r in curation["pairs"]]
    why = {d["name"]: d["reason"] for d in curation["dropped"]}
    for r in rows:
        r["reason dropped"] = why.get(r["name"], "")
    sections = [
        ("Validation curve", line_plot(curves, title="SmoothL1 loss per epoch (epoch 0: the "
                                       "untrained network, i.e. the residual base: the "
                                       "molmap input, blurred by the fitted base factor)",
                                       xlabel="epoch", ylabel="loss")),
        ("Pairs and curation", table(rows, cols + ["reason dropped"],
                                     caption="correlation: molmap at the map's resolution vs "
                                             "the map; unmodelled: fraction of the strong "
                                             "density away from the model")),
        ("Epochs", table(history, ["epoch", "train_loss", "val_loss", "seconds"])),
    ]
    meta = {"command": command, "rules": curation.get("rules")}
    return write_report(path, page("difffit simulator training", sections, meta), overwrite=True)
