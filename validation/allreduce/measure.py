"""The timed allreduce sweep on an initialised group: what is timed, and how.

* In place, and why: torch.distributed's all_reduce has no out-of-place form
  (nccl-tests' default). Copying fresh input before every call would put a
  memory copy between collectives, and on CPU the other ranks' timers would
  wait for it (measured: about half the bandwidth). So timed rounds reduce a
  zero buffer (sums of zeros stay exact, no overflow, no denormals) and the
  results are checked in a separate correctness round.
* ``--warmup-iters`` untimed iterations, then ``--iters`` timed ones back to
  back, timed as one loop like nccl-tests (CUDA events on GPU; ``perf_counter``
  after a barrier on CPU); the slowest rank's time per iteration defines a
  repeat's time (MAX all_reduce). ``--repeat`` repeats give min/median/max,
  and bandwidths use the median.
* Correctness: the timed rounds must leave exact zeros; then every rank fills
  the buffer with its pattern (:mod:`validation.allreduce.patterns`), one
  allreduce runs, and ``#wrong`` counts elements, summed over ranks, that
  differ from the analytically known sum.
* Memory: one message-sized buffer per rank, whatever the sweep.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from validation.allreduce.patterns import (
    DTYPES,
    count_wrong_periodic,
    expected_table,
    fill_periodic,
    rank_table,
)
from validation.allreduce.report import format_row, preamble_lines, summary_lines
from validation.allreduce.sizes import bus_bandwidth_factor, sweep_sizes
from validation.guard import EXIT_INJECTED_FAULT, CollectiveGuard
from validation.options import check_counts, check_names, check_timeout
from validation.rendezvous import DistSession, attach_to_initialized
from validation.results import (
    AllreduceMeasurement,
    AllreduceMetrics,
    AllreduceResult,
    collect_environ,
)

#: The command name that prefixes every message, also the CLI's ``prog``.
PROG = "python -m validation.allreduce"


@dataclass(frozen=True)
class AllreduceConfig:
    """What to measure; field defaults are the CLI defaults."""

    min_bytes: int = 32 * 1024**2
    max_bytes: int = 32 * 1024**2
    factor: float = 2.0
    dtypes: tuple[str, ...] = ("float32",)
    warmup_iters: int = 5
    iters: int = 20
    repeat: int = 3
    check: bool = True
    backend: str = "auto"
    timeout_s: float = 300.0
    json_path: str | None = None
    fault_exit_rank: int | None = None
    fault_hang_rank: int | None = None

    def __post_init__(self) -> None:
        check_names("--dtype", self.dtypes, list(DTYPES))
        check_counts(
            ("--warmup-iters", self.warmup_iters, 0),
            ("--iters", self.iters, 1),
            ("--repeat", self.repeat, 1),
        )
        check_timeout(self.timeout_s)
        for dtype in self.dtypes:  # raises on bad -b/-e/-f
            sweep_sizes(self.min_bytes, self.max_bytes, self.factor, DTYPES[dtype].itemsize)


def _timed_loop(buf: torch.Tensor, iters: int, guard: CollectiveGuard, what: str) -> float:
    """Seconds per allreduce on this rank: ``iters`` back-to-back collectives, timed as one
    loop like nccl-tests, with nothing else between them on any rank."""
    guard.barrier(f"{what} (start barrier)")
    if buf.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # Enqueue the whole loop so the GPU never waits for the CPU between
        # iterations; NCCL counts its timeout from enqueue, so one bound covers it.
        with guard.collective(f"{what} ({iters} timed iterations)"):
            start.record()
            for _ in range(iters):
                work = dist.all_reduce(buf, async_op=True)
            end.record()
            work.wait(timeout=guard.timeout)  # blocks the CPU, bounded
            end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        with guard.collective(what):
            work = dist.all_reduce(buf, async_op=True)
            work.wait(timeout=guard.timeout)
    return (time.perf_counter() - t0) / iters


def _inject_fault(config: AllreduceConfig, session: DistSession) -> None:
    if config.fault_exit_rank == session.rank:
        print(
            f"{PROG}: injected fault: {session.describe(session.rank)} exits now "
            "(--fault-exit-rank)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_INJECTED_FAULT)
    if config.fault_hang_rank == session.rank:
        print(
            f"{PROG}: injected fault: {session.describe(session.rank)} stops answering "
            "for an hour (--fault-hang-rank)",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(3600)


def _measure_dtype(
    dtype_name: str,
    config: AllreduceConfig,
    session: DistSession,
    guard: CollectiveGuard,
    emit: Callable[[AllreduceMeasurement], None],
    first: bool,
) -> list[AllreduceMeasurement]:
    dtype = DTYPES[dtype_name]
    sizes = sweep_sizes(config.min_bytes, config.max_bytes, config.factor, dtype.itemsize)
    n, device = session.world_size, session.device
    # One message-sized buffer per rank, whatever the sweep: the benchmark must
    # fit beside the memory a real job leaves free. Smaller sizes use prefixes.
    buf = torch.empty(sizes[-1] // dtype.itemsize, dtype=dtype, device=device)
    mine = torch.tensor(rank_table(session.rank, n, dtype), dtype=dtype, device=device)
    expected = torch.tensor(expected_table(n, dtype), dtype=dtype, device=device)
    zero = torch.zeros(1, dtype=dtype, device=device)
    factor = bus_bandwidth_factor(n)
    rows = []
    for size in sizes:
        count = size // dtype.itemsize
        dst = buf[:count]
        what = f"allreduce of {size} B {dtype_name}"
        # torch's all_reduce works in place; timed rounds reduce zeros, which stay
        # exact zeros however many rounds run (no overflow, no denormals), so any
        # non-zero afterwards is corruption. Copying fresh input before each call
        # would make the other ranks' timers wait for this rank's copy.
        dst.zero_()
        for _ in range(config.warmup_iters):
            guard.all_reduce(dst, f"{what} (warm-up)")
        if first:
            _inject_fault(config, session)
            first = False
        repeat_s: list[float] = []
        for _ in range(config.repeat):
            mine_s = torch.tensor(
                [_timed_loop(dst, config.iters, guard, what)], dtype=torch.float64, device=device
            )
            # The slowest rank defines the time, as a training step waits for it.
            guard.all_reduce(mine_s, f"{what} (collecting times)", op=dist.ReduceOp.MAX)
            repeat_s.append(float(mine_s.item()))
        worst_wrong: int | None = None
        if config.check:
            # Timed rounds must have left zeros; then one reduction of the real
            # pattern, compared with its analytic sum (nccl-tests' -c).
            wrong = count_wrong_periodic(dst, zero)
            fill_periodic(dst, mine)
            guard.all_reduce(dst, f"{what} (correctness round)")
            wrong += count_wrong_periodic(dst, expected)
            total = torch.tensor([wrong], dtype=torch.int64, device=device)
            guard.all_reduce(total, f"{what} (collecting #wrong)")
            worst_wrong = int(total.item())
        median_s = statistics.median(repeat_s)
        algbw = size / median_s / 1e9 if median_s > 0 else 0.0
        row = AllreduceMeasurement(
            dtype=dtype_name,
            size_bytes=size,
            count=count,
            time_us_min=min(repeat_s) * 1e6,
            time_us_median=median_s * 1e6,
            time_us_max=max(repeat_s) * 1e6,
            algbw_gbps=algbw,
            busbw_gbps=algbw * factor,
            wrong=worst_wrong,
            repeat_time_us=[t * 1e6 for t in repeat_s],
        )
        emit(row)
        rows.append(row)
    return rows


def run_allreduce(
    config: AllreduceConfig,
    session: DistSession | None = None,
    guard: CollectiveGuard | None = None,
    out: Callable[[str], None] | None = None,
) -> AllreduceResult:
    """Run the sweep on every rank of an initialised group; every rank gets the result.

    ``session`` defaults to the already initialised default group
    (:func:`~validation.rendezvous.attach_to_initialized`); ``out``, if given,
    receives the human table line by line (pass it on rank 0 only).
    Raises :class:`~validation.guard.CollectiveError` naming the ranks that
    failed to answer.
    """
    if session is None:
        session = attach_to_initialized(config.timeout_s)
    if guard is None:
        with CollectiveGuard(session, prog=PROG) as own_guard:
            return run_allreduce(config, session, own_guard, out)

    def emit_row(row: AllreduceMeasurement) -> None:
        if out is not None:
            out(format_row(row))

    if out is not None:
        for line in preamble_lines(config, session):
            out(line)
    baseline_rss = _peak_rss_all_ranks(session, guard)
    rows: list[AllreduceMeasurement] = []
    for i, dtype_name in enumerate(config.dtypes):
        rows += _measure_dtype(dtype_name, config, session, guard, emit_row, first=(i == 0))
    settings = asdict(config)
    for key in ("json_path", "fault_exit_rank", "fault_hang_rank"):
        settings.pop(key)
    settings["dtypes"] = list(config.dtypes)
    settings["backend"] = session.backend
    metrics = AllreduceMetrics(
        sizes=rows,
        avg_busbw_gbps=statistics.fmean(r.busbw_gbps for r in rows),
        bus_factor=bus_bandwidth_factor(session.world_size),
        settings=settings,
        peak_rss_bytes=_peak_rss_all_ranks(session, guard),
        baseline_rss_bytes=baseline_rss,
    )
    if out is not None:
        for line in summary_lines(metrics, config.check):
            out(line)
    return AllreduceResult(
        environ=collect_environ(session.hostnames, session.backend), metrics=metrics
    )


def _peak_rss_all_ranks(session: DistSession, guard: CollectiveGuard) -> int:
    """The largest peak RSS of any rank: the benchmark must not need much more than
    its buffers (input, output, expected), or it would not fit beside a real job."""
    # ru_maxrss is in KiB on Linux.
    mine = torch.tensor(
        [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024],
        dtype=torch.int64,
        device=session.device,
    )
    guard.all_reduce(mine, "collecting peak memory", op=dist.ReduceOp.MAX)
    return int(mine.item())
