"""``difffit identify``: rank a library of structures by how well each fits a density."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import DifffitInputError
from ..params import SCORES
from ..structures import SELECTIONS
from .common import (add_device_argument, add_map_arguments, add_outdir_arguments,
                     add_search_arguments, check_device, check_output_dir, command_line,
                     default_outdir, positive_int, refuse_maps, search_overrides)


def register(sub) -> None:
    p = sub.add_parser(
        "identify", help="rank a library of structures by how well each fits a density",
        description="Fit every structure of a library into a map and rank them by a "
                    "size-fair score (default cam: correlation about the mean, not a sum). "
                    "Batches are checkpointed to the output folder: an interrupted run "
                    "continues with --resume. Batches can run on a Dask cluster.")
    add_map_arguments(p)
    p.add_argument("--library", "-l", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="a folder of PDB/mmCIF files (optionally .gz), structure files, or "
                        "a .txt/.lst file listing one path per line")
    add_outdir_arguments(p, "identify",
                         force_help="start afresh in an existing non-empty output folder",
                         resume_help="continue the interrupted run in the output folder")
    p.add_argument("--batch-atoms", type=positive_int, default=100_000, metavar="N",
                   help="at most N fitted atoms per batch (default: 100000)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="candidates shown and written as best-pose models (default: 10)")
    p.add_argument("--score", choices=SCORES, default="cam",
                   help="ranking score (default: cam; zscore: the best placement against "
                        "the candidate's other clusters)")
    p.add_argument("--selection", choices=SELECTIONS, default="backbone",
                   help="atoms used for fitting (default: backbone)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave unreadable library files out (listed in the log) instead of "
                        "stopping")
    p.add_argument("--first-pass", type=positive_int, default=None, metavar="K",
                   help="screen the library with a coarse Gaussian-mixture search first and "
                        "fit fully only the candidates that could still reach the top K")
    add_device_argument(p, default="auto")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--dask-scheduler", metavar="ADDRESS", default=None,
                      help="run the batches on this Dask scheduler (e.g. tcp://host:8786)")
    dask.add_argument("--dask-local", type=positive_int, metavar="N", default=None,
                      help="run the batches on a local Dask cluster of N worker processes")
    add_search_arguments(p)
    p.add_argument("--model-format", choices=("cif", "pdb"), default="cif",
                   help="format of the best-pose models (default: cif)")
    p.add_argument("--report", action="store_true", help="also write report.html")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(_run=run)


def _dask_client(args):
    """(client, cluster or None) for --dask-scheduler / --dask-local, else (None, None)."""
    if args.dask_scheduler is None and args.dask_local is None:
        return None, None
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DifffitInputError("--dask-scheduler/--dask-local need dask.distributed: "
                                "pip install 'difffit[dask]'") from None
    if args.dask_scheduler is not None:
        try:
            return Client(args.dask_scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise DifffitInputError(f"--dask-scheduler {args.dask_scheduler}: cannot connect: "
                                    f"{exc}") from exc
    # Each worker process gets its share of the cores (torch threads follow it).
    threads = max(1, (os.cpu_count() or 1) // args.dask_local)
    cluster = LocalCluster(n_workers=args.dask_local, threads_per_worker=threads,
                           processes=True, dashboard_address=None)
    return Client(cluster), cluster


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..library import library_files
    from ..workflows.identify import identify
    from ..workflows.prescreen import first_pass_line
    from ..maps import read_map
    from ..report import identify_report
    from ..runs import check_outdir

    if args.device != "auto":
        check_device(args.device)
    if args.top < 0:
        raise DifffitInputError(f"--top must be >= 0, got {args.top}")
    # A map in the library (named, or listed in a .txt): said plainly, before any work.
    refuse_maps([f for f in library_files(args.library) if isinstance(f, str)], "identify",
                "--library")
    map_path = Path(args.map)
    outdir = default_outdir(args, "identify")
    if not args.resume:
        check_outdir(outdir, args.force)
    check_output_dir(outdir, files=("ranking.csv", "ranking.json", "identify_log.txt",
                                    "report.html"), folders=("models", "checkpoint"))
    overrides = {**search_overrides(args), "device": args.device}
    if args.first_pass is not None:
        overrides.update(first_pass=True, first_pass_top=args.first_pass)
    if args.first_pass is not None and (args.dask_scheduler or args.dask_local):
        raise DifffitInputError("--first-pass does not combine with --dask-scheduler or "
                                "--dask-local yet: its batches are decided as the run goes")
    command = command_line(argv)
    dmap = read_map(map_path, voxel_size=args.voxel_size)  # a bad map fails before Dask starts
    client, cluster = _dask_client(args)
    try:
        if client is not None and not args.quiet:
            print(f"difffit: dask cluster {client.scheduler.address}", file=sys.stderr)
        result = identify(dmap, args.library, args.resolution, args.threshold,
                          batch_atoms=args.batch_atoms, outdir=outdir, resume=args.resume,
                          force=args.force, client=client, progress=not args.quiet,
                          score=args.score, selection=args.selection, skip_bad=args.skip_bad,
                          top=args.top, model_format=args.model_format, command=command,
                          **overrides)
    except KeyboardInterrupt:
        print(f"difffit: interrupted; finished batches are saved in {outdir}/checkpoint: "
              f"continue with the same command plus --resume", file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if args.report:
        identify_report(result, outdir / "report.html", overwrite=True, command=command)
    if not args.quiet:
        print(result.summary_table(top=args.top or 10))
        n_ck = sum(b["from_checkpoint"] for b in result.batches)
        print(f"\n{len(result.candidates)} candidates in {len(result.batches)} batches"
              + (f" ({n_ck} from the checkpoint)" if n_ck else "")
              + f", {result.timings['total']:.1f} s (threshold {result.threshold:.4g})"
              + (f"; skipped {len(result.skipped)} unreadable file(s), see the log"
                 if result.skipped else ""))
        fp = getattr(result, "first_pass", None)
        if fp:
            print(first_pass_line(fp, len(result.candidates),
                                  {c.index: c.name for c in result.candidates}))
    print(f"results written to {outdir}/ (ranking.csv, models/, identify_log.txt"
          + (", report.html" if args.report else "") + ")")
    return 0
