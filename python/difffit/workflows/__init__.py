"""The three workflows, one module each: :mod:`.fit` (one or more structures into a map),
:mod:`.composite` (several subunits, round after round) and :mod:`.identify` (which library
structure a density holds). Each holds its workflow's loop and decisions; settings are in
:mod:`difffit.params`, results in :mod:`difffit.results`, files in :mod:`difffit.output`.

Import the functions from the package top: ``difffit.fit``, ``difffit.composite``,
``difffit.identify`` (this package re-exports nothing, so a module and its function never
share a name).
"""
