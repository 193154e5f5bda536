"""Running the suite on two pytest-xdist workers (`scripts/test` does): which tests share a
worker, in what order they are handed out, and which ones run with nothing else beside them.

- Every lab module is one unit of work, so its module-scoped lab boots once, on one worker;
  the modules on the session's `site_lab` are one unit between them. Units are handed out
  longest first (the order below, from the suite's measured durations), and the unit
  tests, one unit each, fill the gaps at the end. The scheduler is xdist's scope
  scheduling with these units as scopes (its `loadgroup` marks are lost on pytest 9.2,
  which no longer reads the node id xdist rewrites).
- A test marked `alone` measures bandwidth against bounds: it runs only when no other test
  runs (an exclusive lock that every other test takes shared), so a converge on the other
  worker cannot slow what it measures. A writer-first turnstile keeps the other worker from
  taking the shared lock again and again while an `alone` test waits.

Without xdist (a plain `pytest`) nothing here takes effect but the order.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LAB_TESTS = "tests/lab/"
#: The modules on `site_lab` (a session fixture: one worker must run them all).
SITE_LAB_MODULES = {
    "tests/lab/test_roles_slurm.py",
    "tests/lab/test_roles_prometheus.py",
    "tests/lab/test_ssh_allreduce.py",
}
#: Lab units, longest first (seconds each took in a two-worker run on 2 shared cores).
LONGEST_FIRST = [
    "site_lab",  # ~1100 beside another module, waits for `alone` tests included
    "tests/lab/test_main_job.py",  # ~950
    "tests/lab/test_faults.py",  # ~370
    "tests/lab/test_roles_gpu.py",  # ~360
    "tests/lab/test_roles_node.py",  # ~160
    "tests/lab/test_roles_runtime.py",  # ~150
    "tests/lab/test_roles_storage.py",  # ~130
    "tests/lab/test_roles_rdma.py",  # ~90
    "tests/lab/test_providers.py",
    "tests/lab/test_lab.py",
]


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


def unit_of(nodeid: str) -> str:
    """The unit a test belongs to: its lab module (or `site_lab`), else the test itself."""
    path = _module(nodeid)
    if not path.startswith(LAB_TESTS):
        return nodeid
    return "site_lab" if path in SITE_LAB_MODULES else path


def check_and_order(items: list[pytest.Item]) -> None:
    """Refuse a module on `site_lab` that is not listed; put the lab units, longest first,
    at the front (xdist hands scopes out in collection order)."""
    for item in items:
        path = _module(item.nodeid)
        if "site_lab" in item.fixturenames and path not in SITE_LAB_MODULES:
            raise pytest.UsageError(
                f"{path} uses site_lab: add it to SITE_LAB_MODULES in tests/parallel.py"
            )
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    # Stable: each unit's tests, and the unit tests, keep their order.
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))


def make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling over `unit_of`."""
    from xdist.scheduler import LoadScopeScheduling

    class LabUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return LabUnits(config, log)


def _lock_path(run: str) -> Path:
    return Path(tempfile.gettempdir()) / f"kiln-tests-{run}"


def _lock_dir() -> Path | None:
    """The run's lock directory, shared by its workers; None when not under xdist."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return None
    directory = _lock_path(run)
    directory.mkdir(exist_ok=True)
    return directory


def name_the_run(config: pytest.Config) -> None:
    """On the controller: choose the run's id that xdist hands its workers (it would pick
    one itself, out of our sight), so `remove_locks` knows which directory is this run's."""
    if getattr(config.option, "testrunuid", "") is None and not hasattr(config, "workerinput"):
        config.option.testrunuid = uuid.uuid4().hex


def remove_locks(config: pytest.Config) -> None:
    """On the controller, once every worker is done: the run's lock directory goes."""
    run = getattr(config.option, "testrunuid", None)
    if run and not hasattr(config, "workerinput"):
        shutil.rmtree(_lock_path(run), ignore_errors=True)


def _alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


#: The lock files an `alone` test keeps for the next one, when that one is `alone` too:
#: the other worker does not get a test in between, and the block waits for it once.
_held: tuple | None = None


@contextmanager
def turn(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Hold the run lock for one test: exclusive for `alone` tests, shared for the rest."""
    global _held
    directory = _lock_dir()
    if directory is None:
        yield
        return
    alone = _alone(item)
    if _held is not None:
        files, _held = _held, None
    else:
        gate, run = open(directory / "turnstile", "w"), open(directory / "run", "w")  # noqa: SIM115 - closed below
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            gate.close()  # an `alone` test holds the turnstile to its end
        files = (gate, run)
    try:
        yield
    finally:
        if alone and _alone(nextitem):
            _held = files
        else:
            for file in files:
                file.close()  # closing releases its lock
