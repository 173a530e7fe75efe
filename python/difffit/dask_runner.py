"""Running identify's batches on a Dask cluster, and setting up the process (or worker)
that runs a batch: its torch threads and its device."""
from __future__ import annotations

import sys
import time
from typing import Callable

from .errors import DifffitInputError
from .maps import DensityMap

__all__ = ["worker_setup", "run_on_dask"]


def worker_setup(device: str) -> tuple[str, str]:
    """(device to use, worker name). On a Dask worker in a process of its own, torch gets
    as many threads as the worker has (a worker's threads are its share of the cores); a
    worker thread inside the client's process (``processes=False``) leaves the process-
    wide setting alone, since that would change it for everyone in the process."""
    import multiprocessing

    import torch

    worker = "local"
    # A Dask worker has imported distributed already; importing it here only to learn
    # that we are not on one would cost a second per process.
    distributed = sys.modules.get("distributed")
    try:
        if distributed is None:
            raise ValueError("not on a Dask worker")
        w = distributed.get_worker()
        worker = str(w.address)
        if multiprocessing.parent_process() is not None:
            n = getattr(getattr(w, "state", None), "nthreads", None) or getattr(w, "nthreads", 1)
            torch.set_num_threads(max(int(n), 1))
    except (ImportError, ValueError):
        pass  # not on a Dask worker
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, worker


def run_on_dask(client, run: Callable[[dict, DensityMap], dict], tasks: list[dict],
                dmap: DensityMap, finished: Callable[[dict], None]) -> None:
    """Run the batches as tasks on the client's cluster; ``finished`` gets each result as
    it arrives (in completion order; the ranking does not depend on it)."""
    try:
        from distributed import as_completed
    except ImportError as exc:  # pragma: no cover - a client implies distributed
        raise DifffitInputError("client= needs dask.distributed: pip install 'difffit[dask]'") from exc
    if not tasks:
        return
    # The map goes to every worker once, not once per task.
    dmap_f = client.scatter(dmap, broadcast=True)
    futures = [client.submit(run, t, dmap_f, pure=False,
                             key=f"difffit-identify-batch-{t['batch']}-{time.time_ns()}")
               for t in tasks]
    try:
        for fut in as_completed(futures):
            finished(fut.result())
    except BaseException:
        client.cancel(futures)
        raise
