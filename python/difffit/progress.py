"""Progress bars (tqdm): drawn on a terminal and in notebooks; left out when the output
goes to a file or a pipe (a batch job's log), where each redraw would be one more line of
fragments."""
from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``, disabled where stderr is not a terminal
    (outside notebooks, whose widget bars do not write to stderr)."""
    import warnings

    from tqdm.auto import tqdm
    from tqdm.std import TqdmExperimentalWarning, tqdm as plain

    with warnings.catch_warnings():  # as tqdm.auto imports it
        warnings.simplefilter("ignore", category=TqdmExperimentalWarning)
        from tqdm.autonotebook import tqdm as chosen
    if chosen is plain:  # not a notebook; tqdm's own rule: None disables it off a terminal
        kwargs.setdefault("disable", None)
    return tqdm(iterable, **kwargs)
