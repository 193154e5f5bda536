"""The phases of a storage run across ranks, on an initialised group.

1. Every rank checks DIR (exists, directory, writable, enough free space and
   inodes for the whole run); the ranks agree, so a problem on one node stops
   all of them with the same message (exit 2) instead of a hang.
2. Rank 0 makes a fresh run id and shares it; it creates the run directory and
   every other rank must see it: a node where DIR is a local directory (the
   shared filesystem not mounted there) is named and the run stops (exit 2).
3. Write phase, per workload: after a barrier, every rank writes its own new
   files, fsyncing each and dropping it from the page cache (:mod:`.files`).
4. Read phase, per workload: after a barrier, so that every node reads at
   once (shared-filesystem contention is what certification is about), every
   rank reads the files of a rank on another host (:mod:`.plan`). The read is
   the timed region certification judges.
5. Every rank's figures go to all ranks through one bounded all_reduce; every
   rank removes its own files, and after a barrier rank 0 removes the rest of
   the run directory. After an error the ranks still clean up what they can.

Every collective runs through :class:`~validation.guard.CollectiveGuard`, so
a dead or stuck rank (also one whose write or read outlasts ``--timeout``) is
named instead of hanging the others. An I/O error or a short file on any rank
is agreed on like a DIR problem and ends the run with exit 1, naming the rank.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from validation.guard import EXIT_USAGE, EXIT_WRONG_RESULTS, CollectiveError, CollectiveGuard
from validation.options import check_timeout
from validation.rendezvous import DistSession, attach_to_initialized, format_ranks
from validation.results import collect_environ
from validation.storage.files import (
    IoStats,
    check_target,
    rank_dir,
    read_files,
    remove_tree,
    run_dir,
    stale_runs,
    workload_paths,
    write_files,
)
from validation.storage.plan import WORKLOADS, WorkloadSpec, reading_sources
from validation.storage.report import preamble_lines, summary_lines, workload_lines
from validation.storage.result import (
    RankIo,
    StorageMetrics,
    StorageResult,
    summarize_workload,
)

#: The command name that prefixes every message, also the CLI's ``prog``.
PROG = "python -m validation.storage"

#: Bytes of each rank's error message that the agreement round carries.
_TEXT_WIDTH = 480


@dataclass(frozen=True)
class StorageConfig:
    """What to measure; field defaults are the CLI defaults."""

    directory: str
    workloads: tuple[str, ...] = WORKLOADS
    large_size: int = 256 * 1024**2
    large_count: int = 2
    small_size: int = 64 * 1024
    small_count: int = 2000
    block_size: int = 4 * 1024**2
    slow_fraction: float = 0.7
    timeout_s: float = 300.0
    json_path: str | None = None

    def __post_init__(self) -> None:
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown or not self.workloads:
            raise ValueError(
                f"--workload: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(WORKLOADS)}"
            )
        for name, value in (
            ("--large-size", self.large_size),
            ("--large-count", self.large_count),
            ("--small-size", self.small_size),
            ("--small-count", self.small_count),
            ("--block-size", self.block_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 < self.slow_fraction <= 1:
            raise ValueError(f"--slow-fraction must be in (0, 1], got {self.slow_fraction:g}")
        check_timeout(self.timeout_s)

    def specs(self) -> list[WorkloadSpec]:
        """The selected workloads, in the order given."""
        shape = {
            "large": (self.large_size, self.large_count),
            "small": (self.small_size, self.small_count),
        }
        return [WorkloadSpec(w, *shape[w]) for w in dict.fromkeys(self.workloads)]


class StorageFailure(Exception):
    """Every rank agreed the run cannot go on; ``str(exc)`` is the one-line error."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- agreeing across ranks, through bounded collectives --------------------------


def _gather_texts(guard: CollectiveGuard, session: DistSession, text: str, what: str) -> list[str]:
    """Every rank's ``text`` (cut to a few hundred bytes), by rank: a zero matrix with
    one row per rank, each rank filling its own, summed (gloo has no gather of bytes)."""
    data = text.encode()[:_TEXT_WIDTH]
    rows = torch.zeros((session.world_size, _TEXT_WIDTH), dtype=torch.uint8)
    if data:
        rows[session.rank, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    guard.all_reduce(rows, what)
    return [bytes(row.tolist()).rstrip(b"\0").decode(errors="ignore") for row in rows]


def _gather_rows(
    guard: CollectiveGuard, session: DistSession, values: list[float], what: str
) -> list[list[float]]:
    """Every rank's ``values`` (same length everywhere), by rank, in float64."""
    table = torch.zeros((session.world_size, len(values)), dtype=torch.float64)
    table[session.rank] = torch.tensor(values, dtype=torch.float64)
    guard.all_reduce(table, what)
    return table.tolist()


def _agree(
    guard: CollectiveGuard, session: DistSession, problem: str | None, what: str
) -> list[tuple[int, str]]:
    """(rank, message) of every rank that has a problem; the same list on all ranks."""
    flags = torch.zeros(session.world_size, dtype=torch.int64)
    flags[session.rank] = 1 if problem else 0
    guard.all_reduce(flags, f"{what} (comparing outcomes)")
    bad = [r for r, flag in enumerate(flags.tolist()) if flag]
    if not bad:
        return []
    texts = _gather_texts(guard, session, problem or "", f"{what} (collecting errors)")
    return [(r, texts[r]) for r in bad]


def _fail_if(
    problems: list[tuple[int, str]], session: DistSession, exit_code: int, lead: str = ""
) -> None:
    """Raise one StorageFailure for the agreed problems; ranks with the same message
    are listed together."""
    if not problems:
        return
    by_text: dict[str, list[int]] = {}
    for rank, text in problems:
        by_text.setdefault(text, []).append(rank)
    hosts = dict(enumerate(session.hostnames))
    parts = [f"{text} [{format_ranks(ranks, hosts)}]" for text, ranks in list(by_text.items())[:3]]
    if len(by_text) > 3:
        parts.append(f"and {len(by_text) - 3} more different errors")
    raise StorageFailure(lead + "; ".join(parts), exit_code)


def _attempt(action: Callable[[], IoStats]) -> tuple[IoStats | None, str | None]:
    """Run one rank's I/O; an OSError becomes the message the ranks agree on."""
    try:
        return action(), None
    except OSError as exc:
        if exc.filename and exc.strerror:
            return None, f"{exc.filename}: {exc.strerror}"
        return None, str(exc) or type(exc).__name__


# -- the run ---------------------------------------------------------------------------


def run_storage(
    config: StorageConfig,
    session: DistSession | None = None,
    guard: CollectiveGuard | None = None,
    out: Callable[[str], None] | None = None,
) -> StorageResult:
    """Run every phase on every rank of an initialised group; every rank gets the result.

    ``out``, if given, receives the human lines (pass it on rank 0 only). Raises
    :class:`StorageFailure` (exit code inside) when the ranks agreed to stop, and
    :class:`~validation.guard.CollectiveError` naming a rank that did not answer.
    """
    if session is None:
        session = attach_to_initialized(config.timeout_s)
    if guard is None:
        with CollectiveGuard(session, prog=PROG) as own_guard:
            return run_storage(config, session, own_guard, out)
    say = out or (lambda _line: None)
    specs = config.specs()
    problem = check_target(config.directory, specs, session.world_size)
    _fail_if(_agree(guard, session, problem, "checking DIR"), session, EXIT_USAGE)
    fresh = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_id = _gather_texts(
        guard, session, fresh if session.rank == 0 else "", "sharing the run id"
    )[0]
    run = run_dir(config.directory, run_id)
    mine = rank_dir(run, session.hostnames[session.rank], session.rank)
    if session.rank == 0 and (stale := stale_runs(config.directory, current=run)):
        say(
            f"# note: {config.directory} holds {len(stale)} run directories of earlier runs "
            f"({stale[0].name}{', ...' if len(stale) > 1 else ''}); remove them when no run "
            "is active"
        )
    try:
        result = _phases(config, session, guard, specs, run, mine, say)
    except StorageFailure:
        _cleanup(session, guard, run, mine, synced=True, failing=True)
        raise
    except BaseException:  # a dead peer, a signal: clean what this rank can, unsynced
        _cleanup(session, guard, run, mine, synced=False, failing=True)
        raise
    _cleanup(session, guard, run, mine, synced=True, failing=False)
    return result


def _phases(
    config: StorageConfig,
    session: DistSession,
    guard: CollectiveGuard,
    specs: list[WorkloadSpec],
    run: Path,
    mine: Path,
    say: Callable[[str], None],
) -> StorageResult:
    """Phases 2-5 of the module docstring, up to (not including) the cleanup."""
    rank, hostnames = session.rank, session.hostnames
    problem = None
    if rank == 0:
        try:
            run.mkdir()
        except OSError as exc:
            problem = (
                f"cannot create {run}: {exc.strerror or exc}; make {config.directory} writable"
            )
    _fail_if(_agree(guard, session, problem, "creating the run directory"), session, EXIT_USAGE)
    problem = None
    if not run.is_dir():
        problem = (
            f"{run}, created by {session.describe(0)}, is not visible on the ranks named "
            f"last: {config.directory} is not the same shared filesystem on every node "
            "(is the shared filesystem mounted on their hosts?)"
        )
    else:
        try:
            mine.mkdir()
        except OSError as exc:
            problem = f"cannot create {mine}: {exc.strerror or exc}"
    _fail_if(
        _agree(guard, session, problem, "checking that every rank sees the run directory"),
        session,
        EXIT_USAGE,
    )
    sources = reading_sources(hostnames)
    for line in preamble_lines(
        config.directory, str(run), specs, config.block_size, hostnames, sources
    ):
        say(line)

    def each_workload(
        verb: str, what_failed: str, directory: Path, io: Callable[..., IoStats]
    ) -> dict[str, IoStats]:
        done: dict[str, IoStats] = {}
        for spec in specs:
            paths = workload_paths(directory, spec)
            # Together: every node reads at once, as a training job's data loaders do.
            guard.barrier(f"waiting for every rank to start {verb} {spec.name} files")
            stats, problem = _attempt(lambda p=paths, s=spec: io(p, s.file_size, config.block_size))
            what = f"waiting for every rank to finish {verb} {spec.name} files"
            _fail_if(
                _agree(guard, session, problem, what), session, EXIT_WRONG_RESULTS, what_failed
            )
            assert stats is not None
            done[spec.name] = stats
        return done

    writes = each_workload("writing", "write failed: ", mine, write_files)
    source_dir = rank_dir(run, hostnames[sources[rank]], sources[rank])
    reads = each_workload("reading", "read failed: ", source_dir, read_files)

    values: list[float] = []
    for spec in specs:
        w, r = writes[spec.name], reads[spec.name]
        values += [w.files, w.bytes, w.seconds, r.files, r.bytes, r.seconds]
    table = _gather_rows(guard, session, values, "collecting every rank's figures")
    workloads = []
    for k, spec in enumerate(specs):
        ranks = []
        for q, row in enumerate(table):
            wf, wb, ws, rf, rb, rs = row[6 * k : 6 * k + 6]
            src = sources[q]
            ranks.append(
                RankIo(
                    q, hostnames[q], src, hostnames[src], int(wf), int(wb), ws, int(rf), int(rb), rs
                )
            )
        workload = summarize_workload(
            spec.name, spec.file_size, spec.count, ranks, config.slow_fraction
        )
        workloads.append(workload)
        for line in workload_lines(workload):
            say(line)
    cross_host, notes = _cache_notes(hostnames, sources)
    metrics = StorageMetrics(
        workloads=tuple(workloads),
        cross_host_reads=cross_host,
        notes=tuple(notes),
        settings=_settings(config, run, session.backend),
    )
    for line in summary_lines(metrics, config.slow_fraction):
        say(line)
    return StorageResult(
        environ=collect_environ(session.hostnames, session.backend), metrics=metrics
    )


def _cache_notes(hostnames: list[str], sources: list[int]) -> tuple[bool, list[str]]:
    """Whether every read was of another host's files, and the caveat when not."""
    same = [r for r, s in enumerate(sources) if hostnames[s] == hostnames[r]]
    if not same:
        return True, []
    limit = (
        "fadvise(DONTNEED) dropped them from the kernel page cache, but a FUSE client's "
        "own cache, or a kernel that ignores the advice, cannot be ruled out"
    )
    if len(set(hostnames)) == 1:
        who = (
            "one rank read its own files"
            if len(hostnames) == 1
            else (f"all ranks ran on one host ({hostnames[0]}) and read files written there")
        )
        return False, [
            f"{who}: a single host cannot rule out its own cache; {limit}; "
            "run on two or more hosts for a cache-free figure"
        ]
    hosts = dict(enumerate(hostnames))
    return False, [
        f"{format_ranks(same, hosts)} read files written on the host they ran on (it has more "
        f"ranks than all other hosts together); {limit}"
    ]


def _settings(config: StorageConfig, run: Path, backend: str) -> dict[str, object]:
    return {
        "directory": config.directory,
        "run_dir": str(run),
        "workloads": list(dict.fromkeys(config.workloads)),
        "large_size_bytes": config.large_size,
        "large_count": config.large_count,
        "small_size_bytes": config.small_size,
        "small_count": config.small_count,
        "block_size_bytes": config.block_size,
        "slow_fraction": config.slow_fraction,
        "timeout_s": config.timeout_s,
        "backend": backend,
    }


def _cleanup(
    session: DistSession,
    guard: CollectiveGuard,
    run: Path,
    mine: Path,
    synced: bool,
    failing: bool,
) -> None:
    """Every rank removes its own files (in parallel: one rank alone would take
    minutes on NFS for a large cluster's small files), then rank 0 the rest.

    ``synced``: all ranks are here and nobody reads any more, so wait for all of
    them before rank 0 removes the run directory. ``failing``: a barrier failure
    must not hide the error being raised.
    """
    problems = remove_tree(mine)
    try:
        if synced:
            guard.barrier("waiting for every rank to remove its files")
    except CollectiveError:
        if not failing:
            raise
    finally:
        if session.rank == 0:
            problems += remove_tree(run)
        if problems:
            print(
                f"{PROG}: warning: could not remove {problems[0]}"
                f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}; "
                f"remove {run} by hand",
                file=sys.stderr,
                flush=True,
            )
