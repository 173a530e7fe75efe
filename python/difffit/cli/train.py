"""``difffit train-simulator``: train the learned simulator from map/model pairs."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from .common import command_line, non_negative_int, positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "train-simulator", help="train the learned (experimental-like) map simulator",
        description="Train a 3D nested U-Net that turns a molmap at 2 A into an "
                    "experimental-like map (adversarial + SmoothL1 loss, cubes of the maps), "
                    "from a CSV of map/model pairs (columns map, model, resolution; optional "
                    "voxel_size, split = train|val). The pairs are curated first (model-map "
                    "correlation, unmodelled density, one molecule type, one pair per 30 %% "
                    "identity cluster); what is dropped is reported with the reason. Writes "
                    "best.pt (use it with --simulator learned --checkpoint), last.pt "
                    "(resume with --resume), curation.json and report.html.")
    p.add_argument("pairs", metavar="PAIRS.csv", help="map/model pairs")
    p.add_argument("-o", "--outdir", required=True, metavar="DIR", help="checkpoint folder")
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs (default: 20)")
    p.add_argument("--steps", type=positive_int, default=25, metavar="N",
                   help="steps per epoch (default: 25)")
    p.add_argument("--batch", type=positive_int, default=4, help="cubes per step (default: 4)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="learning rate (default: 2e-3)")
    p.add_argument("--adv-weight", type=float, default=0.01, metavar="W",
                   help="weight of the adversarial term against SmoothL1 (default: 0.01; 0: none)")
    p.add_argument("--cube", type=positive_int, default=16, help="training cube edge in voxels, "
                   "a multiple of 4 (default: 16)")
    p.add_argument("--channels", default="4,8,16", metavar="C1,C2,C3",
                   help="generator widths per depth (default: 4,8,16)")
    p.add_argument("--min-correlation", type=float, default=0.65, metavar="C",
                   help="drop pairs whose molmap-vs-map correlation is below C (default: 0.65, "
                        "the paper's; lower it when few pairs are at hand)")
    p.add_argument("--max-unmodelled", type=float, default=0.30, metavar="F",
                   help="drop pairs with more than F of the strong density unmodelled "
                        "(default: 0.30)")
    p.add_argument("--max-identity", type=float, default=0.30, metavar="F",
                   help="drop a pair with a chain more than F identical to one of a pair kept "
                        "before it (default: 0.30)")
    p.add_argument("--base", choices=("fit", "input"), default="fit",
                   help="what the residual generator adds its correction to: 'fit' (default) "
                        "a blur of the 2 A molmap input to a molmap at a factor of each map's "
                        "resolution, the factor fitted to the training pairs; 'input' the "
                        "input itself (the untrained generator is the molmap at 2 A)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    p.add_argument("--force", action="store_true", help="start afresh over DIR's checkpoints")
    p.set_defaults(_run=run)


def _channels(text: str) -> list[int]:
    try:
        c = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        c = []
    if len(c) < 2 or min(c) < 1:
        raise DifffitInputError(f"--channels must be two or more positive integers "
                                f"(e.g. 4,8,16), got {text!r}")
    return c


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..files import atomic_write, jsonable
    from ..simulators.training import curate, prepare_pair, read_pairs, train
    from ..simulators.train_report import training_report

    out = Path(args.outdir)
    channels = _channels(args.channels)
    if args.cube % 2 ** (len(channels) - 1):
        raise DifffitInputError(f"--cube must be a multiple of {2 ** (len(channels) - 1)} "
                                f"with {len(channels)} depths, got {args.cube}")
    written = [out / n for n in ("best.pt", "last.pt", "report.html", "curation.json")]
    if args.resume and args.force:
        raise DifffitInputError("--resume and --force exclude each other")
    if args.resume and not (out / "last.pt").is_file():
        raise DifffitInputError(f"--resume: {out / 'last.pt'} not found")
    if not args.resume and not args.force and any(p.exists() for p in written):
        raise FileExistsError(f"{out}: holds a training run already; pass --resume to continue "
                              f"it or --force to start afresh")
    if out.exists() and not out.is_dir():
        raise DifffitInputError(f"{out}: not a folder")
    pairs = read_pairs(args.pairs)       # every file checked before any work
    out.mkdir(parents=True, exist_ok=True)
    if args.force:
        for p in written:
            if p.is_file():
                p.unlink()
    t0 = time.perf_counter()
    data = [prepare_pair(p) for p in pairs]
    kept, dropped = curate(data, args.min_correlation, args.max_unmodelled, args.max_identity)
    for d in dropped:
        print(f"dropped {d['name']}: {d['reason']}")
    val = [d for d in kept if d.pair.split == "val"]
    trn = [d for d in kept if d.pair.split != "val"]
    if not val and len(trn) >= 2:
        val, trn = trn[-1:], trn[:-1]   # no split given: the last kept pair validates
        print(f"validation pair: {val[0].pair.name} (mark pairs with split=val to choose)")
    elif not val:
        print("one pair only: validation on other cubes of the training pair")
    print(f"training on {len(trn)} pair(s), validating on {len(val)} "
          f"({time.perf_counter() - t0:.0f} s to prepare)")
    curation = {"pairs": [{"name": d.pair.name, "map": str(d.pair.map),
                           "model": str(d.pair.model), "resolution": d.pair.resolution,
                           **d.checks,
                           "use": ("validation" if d in val else "training" if d in trn
                                   else "dropped")} for d in data],
                "dropped": dropped,
                "rules": {"min_correlation": args.min_correlation,
                          "max_unmodelled": args.max_unmodelled,
                          "max_identity": args.max_identity}}
    atomic_write(out / "curation.json", json.dumps(jsonable(curation), indent=1))
    config = {"channels": channels, "cube": args.cube}
    history = train(trn, val, out, epochs=args.epochs, steps=args.steps, batch=args.batch,
                    lr=args.lr, adv_weight=args.adv_weight, config=config, seed=args.seed,
                    resume=args.resume, progress=True, fit_base=args.base == "fit", log=print,
                    extra={"command": command_line(argv), "pairs": str(args.pairs)})
    training_report(out / "report.html", history, curation, command_line(argv))
    best = min(history, key=lambda h: h["val_loss"])
    print(f"validation loss {history[0]['val_loss']:.5f} (the untrained residual base) -> "
          f"{best['val_loss']:.5f} (epoch {best['epoch']}); checkpoint {out / 'best.pt'}, "
          f"report {out / 'report.html'}")
    return 0
