"""Shared pytest fixtures: where the real test data is.

Every test that reads real maps and models finds them in ONE way: it takes the session
fixture ``shared_data`` (the data folder) and asks for each file with
``data_file(shared_data, "daq_emd2566_3j6b/2566_3J6B_9.mrc")``. Data folders, in order:

1. ``$DIFFFIT_TEST_DATA`` when that variable is set (then the only place looked);
2. ``tests/data`` in the repository, when it holds data sets (small copies; a file there
   may be gzipped: ``<name>.gz`` is accepted for ``<name>``);
3. ``../shared/data`` beside the repository (the full data, read in place, never copied).

A test whose data is in none of them is skipped, with a reason that says where it looked;
it never fails for missing data. Plain scripts (benchmarks/) may call ``data_dirs`` and
``data_file`` too: tests/ on ``sys.path``, then ``from conftest import data_file``.

The headless-browser report test (it takes the ``browser`` fixture) skips, with the reason,
where no browser is installed; CI requires it: with ``DIFFFIT_REQUIRE_BROWSER=1`` (which
``.ci/run`` sets, and the default when ``CI=true``) its skip is turned into a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_VAR = "DIFFFIT_TEST_DATA"
REPO = Path(__file__).resolve().parents[1]
IN_REPO = REPO / "tests" / "data"
BESIDE_REPO = REPO.parent / "shared" / "data"


def data_dirs() -> list[Path]:
    """The folders searched for real data, in order: ``[$DIFFFIT_TEST_DATA]`` when the
    variable is set, else ``[tests/data, ../shared/data]``. The last one is the full data
    set (what the benchmarks read)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser().resolve()]
    return [IN_REPO, BESIDE_REPO]


def _holds_data(folder: Path) -> bool:
    """A data folder holds at least one data set (a sub-folder such as daq_emd2566_3j6b)."""
    return folder.is_dir() and any(p.is_dir() for p in folder.iterdir())


def _looked_in() -> str:
    env = os.environ.get(ENV_VAR)
    where = [f"${ENV_VAR}={env}" if env else f"${ENV_VAR} (not set)"]
    if not env:
        where += [str(d) for d in data_dirs()]
    return ", ".join(where)


def data_file(root: Path, name: str | os.PathLike) -> Path:
    """Path of one data file or data-set folder ``name`` (relative, e.g.
    ``"daq_emd2566_3j6b/3J6B_9.pdb"``): ``root/name``, else ``root/name.gz``, else the same
    in the later data folders of ``data_dirs()`` (so a partial ``tests/data`` falls back to
    ``../shared/data`` file by file). Skips the calling test when none holds it."""
    name = os.fspath(name)
    tried = []
    for folder in dict.fromkeys([Path(root), *data_dirs()]):
        for path in (folder / name, folder / f"{name}.gz"):
            if path.exists():
                return path
            tried.append(str(path))
    pytest.skip(f"test data {name!r} not found; looked for {', '.join(tried)}")


def _browser_required() -> bool:
    default = "1" if os.environ.get("CI", "").lower() == "true" else "0"
    return os.environ.get("DIFFFIT_REQUIRE_BROWSER", default) == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A browser test that skips fails instead when the browser is required."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and "browser" in getattr(item, "fixturenames", ()) and _browser_required():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: the headless-browser test is required here "
                           f"(DIFFFIT_REQUIRE_BROWSER=1 or CI=true) but was skipped: {reason}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (the first of ``data_dirs()`` that holds data sets); skips the
    test, naming where it looked, when there is none. Ask for files with ``data_file``."""
    for folder in data_dirs():
        if _holds_data(folder):
            return folder
    pytest.skip(f"real test data not found; looked in {_looked_in()}")
