"""Allreduce bus-bandwidth benchmark with nccl-tests semantics.

Run on every rank, e.g. ``torchrun --nproc-per-node 8 -m validation.allreduce -b 8 -e 1G``.
What it measures and how, following nccl-tests ``doc/PERFORMANCE.md``:

* A sweep of message sizes from ``--min-bytes`` to ``--max-bytes``, each size
  ``--factor`` times the previous, rounded down to whole elements.
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
* ``algbw = bytes / time`` and ``busbw = algbw * 2(n-1)/n`` in GB/s (1e9).
* Correctness: the timed rounds must leave exact zeros; then every rank fills
  the buffer with small integers whose sum is exact in the dtype, one
  allreduce runs, and ``#wrong`` counts elements, summed over ranks, that
  differ from the analytically known sum (compared a chunk at a time).
* Memory: one message-sized buffer per rank, whatever the sweep.

Exit status: 0 ok, 1 wrong results, 2 bad arguments, 3 a rank failed, timed
out or never joined (the message names it), 13 injected fault (testing only).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist

from validation.guard import (
    EXIT_DIST_FAILURE,
    EXIT_INJECTED_FAULT,
    EXIT_OK,
    EXIT_WRONG_RESULTS,
    CollectiveError,
    CollectiveGuard,
)
from validation.rendezvous import (
    DistSession,
    RendezvousError,
    attach_to_initialized,
    free_port,
    init_from_env,
)
from validation.results import (
    AllreduceMeasurement,
    AllreduceMetrics,
    AllreduceResult,
    collect_environ,
)

PROG = "python -m validation.allreduce"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Every integer 0..limit is exact in the dtype (2 ** significand bits), so any
# partial sum of non-negative integers that totals at most this is exact in
# whatever order the backend adds them.
_EXACT_INT_LIMIT = {torch.float32: 2**24, torch.bfloat16: 2**8, torch.float16: 2**11}

# Prime, so the pattern never lines up with power-of-two chunk boundaries and a
# chunk delivered to the wrong offset shows up as wrong values.
_PATTERN_PERIOD_MAX = 97

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


# -- pure maths, unit-tested directly ------------------------------------------


def bus_bandwidth_factor(n: int) -> float:
    """nccl-tests' allreduce bus factor ``2*(n-1)/n``: 0 for one rank, 1 for two, 1.75 for 8."""
    if n < 1:
        raise ValueError(f"world size must be at least 1, got {n}")
    return 2 * (n - 1) / n


def parse_size(text: str) -> int:
    """Bytes from ``1024``, ``64K``, ``32M``, ``1G`` (powers of 1024, as nccl-tests)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 8, 64K, 32M, 1G)")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale


def sweep_sizes(min_bytes: int, max_bytes: int, factor: float, elem_size: int) -> list[int]:
    """Message sizes in bytes: ``min * factor**k`` up to ``max``, like nccl-tests ``-b -e -f``.

    Each size is rounded down to a whole number of elements (at least one);
    sizes that become equal after rounding appear once.
    """
    if elem_size < 1:
        raise ValueError(f"element size must be positive, got {elem_size}")
    if min_bytes < 1:
        raise ValueError(f"--min-bytes must be at least 1, got {min_bytes}")
    if max_bytes < min_bytes:
        raise ValueError(f"--max-bytes ({max_bytes}) is smaller than --min-bytes ({min_bytes})")
    if factor <= 1 and max_bytes > min_bytes:
        raise ValueError(f"--factor must be greater than 1 to sweep sizes, got {factor:g}")
    sizes: list[int] = []
    k = 0
    while True:
        # Small epsilon so that e.g. 1000 * 1.1**k does not lose a byte to float error.
        raw = int(min_bytes * factor**k + 1e-6) if k else min_bytes
        if raw > max_bytes:
            break
        size = max(elem_size, raw - raw % elem_size)
        if not sizes or size != sizes[-1]:
            sizes.append(size)
        if factor <= 1:
            break
        k += 1
    return sizes


def pattern_params(world_size: int, dtype: torch.dtype) -> tuple[int, int]:
    """``(period, stride)`` of the test pattern for this group size and dtype.

    Ranks ``r`` with ``r % stride == 0`` contribute ``(i + r) % period`` at
    element ``i``; the others contribute zeros. Both are chosen so that the sum
    over ranks never exceeds the dtype's exact-integer limit, e.g. bfloat16 at
    1024 ranks lets 128 ranks contribute values 0..2.
    """
    limit = _EXACT_INT_LIMIT[dtype]
    stride = math.ceil(world_size / (limit // 2))
    contributors = math.ceil(world_size / stride)
    period = min(_PATTERN_PERIOD_MAX, limit // contributors + 1)
    return period, stride


def _tile(table: list[int], count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(count, dtype=dtype, device=device)
    fill_periodic(out, torch.tensor(table, dtype=dtype, device=device))
    return out


def rank_table(rank: int, world_size: int, dtype: torch.dtype) -> list[int]:
    """One period of ``rank``'s input pattern (see :func:`pattern_params`)."""
    period, stride = pattern_params(world_size, dtype)
    if rank % stride:
        return [0] * period
    return [(k + rank) % period for k in range(period)]


def expected_table(world_size: int, dtype: torch.dtype) -> list[int]:
    """One period of the exact allreduce sum of every rank's pattern."""
    period, stride = pattern_params(world_size, dtype)
    # Only r % period matters for a contributor, so count contributors per residue.
    per_residue = [0] * period
    for r in range(0, world_size, stride):
        per_residue[r % period] += 1
    return [sum(n * ((k + c) % period) for c, n in enumerate(per_residue)) for k in range(period)]


def rank_pattern(
    rank: int, world_size: int, dtype: torch.dtype, count: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Input buffer of ``rank``: small non-negative integers, see :func:`pattern_params`."""
    return _tile(rank_table(rank, world_size, dtype), count, dtype, torch.device(device))


def expected_sum(
    world_size: int, dtype: torch.dtype, count: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The exact allreduce sum of every rank's :func:`rank_pattern`, computed analytically."""
    return _tile(expected_table(world_size, dtype), count, dtype, torch.device(device))


# Elements compared at a time: bounds the temporary a check needs, whatever the size.
_CHECK_CHUNK = 1 << 20


def fill_periodic(buf: torch.Tensor, period: torch.Tensor) -> None:
    """Write ``period`` repeated over ``buf`` in place, allocating nothing message-sized."""
    p = period.numel()
    full = buf.numel() // p * p
    if full:
        rows = buf[:full].view(-1, p)
        rows.copy_(period.expand_as(rows))
    buf[full:].copy_(period[: buf.numel() - full])


def count_wrong_periodic(buf: torch.Tensor, period: torch.Tensor) -> int:
    """Elements of ``buf`` that differ from ``period`` repeated (NaN counts as wrong),
    compared a chunk at a time so the check costs no message-sized buffer."""
    p = period.numel()
    chunk = max(p, _CHECK_CHUNK // p * p)
    wrong = 0
    for start in range(0, buf.numel(), chunk):
        part = buf[start : start + chunk]
        full = part.numel() // p * p
        if full:
            rows = part[:full].view(-1, p)
            wrong += int(torch.ne(rows, period.expand_as(rows)).sum().item())
        wrong += int(torch.ne(part[full:], period[: part.numel() - full]).sum().item())
    return wrong


def check_result(tensor: torch.Tensor, expected: torch.Tensor) -> int:
    """Number of elements of ``tensor`` that differ from ``expected`` (NaN counts as wrong)."""
    if tensor.shape != expected.shape:
        raise ValueError(f"shape {tuple(tensor.shape)} does not match {tuple(expected.shape)}")
    return int(torch.ne(tensor, expected).sum().item())


# -- configuration -------------------------------------------------------------


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
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown or not self.dtypes:
            raise ValueError(f"--dtype: unknown {unknown}; choose from {', '.join(DTYPES)}")
        for name, value, least in (
            ("--warmup-iters", self.warmup_iters, 0),
            ("--iters", self.iters, 1),
            ("--repeat", self.repeat, 1),
        ):
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout_s:g}")
        for dtype in self.dtypes:  # raises on bad -b/-e/-f
            sweep_sizes(self.min_bytes, self.max_bytes, self.factor, DTYPES[dtype].itemsize)


# -- measurement ---------------------------------------------------------------


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


# -- human output --------------------------------------------------------------

_HEADER = (
    "#        size         count      type   redop   time min     median        max"
    "    algbw    busbw  #wrong\n"
    "#         (B)    (elements)                          (us)       (us)       (us)"
    "   (GB/s)   (GB/s)"
)


def format_row(row: AllreduceMeasurement) -> str:
    """One table line, columns as in nccl-tests plus min/max time over repeats."""
    wrong = "N/A" if row.wrong is None else str(row.wrong)
    return (
        f"{row.size_bytes:>13d} {row.count:>13d} {row.dtype:>9s} {'sum':>7s} "
        f"{row.time_us_min:>10.2f} {row.time_us_median:>10.2f} {row.time_us_max:>10.2f} "
        f"{row.algbw_gbps:>8.3f} {row.busbw_gbps:>8.3f} {wrong:>7s}"
    )


def _preamble(config: AllreduceConfig, session: DistSession) -> list[str]:
    lines = [
        "# Kiln allreduce, nccl-tests semantics: in place, sum, "
        f"busbw = algbw * 2(n-1)/n = algbw * {bus_bandwidth_factor(session.world_size):g}",
        f"# world size {session.world_size}, backend {session.backend}, "
        f"torch {torch.__version__}, device {session.device}",
        f"# warm-up {config.warmup_iters}, iterations {config.iters}, repeats {config.repeat}, "
        f"check {'on' if config.check else 'off'}, timeout {config.timeout_s:g} s",
    ]
    shown = session.hostnames[:64]
    lines += [f"#  rank {r:4d} on {host}" for r, host in enumerate(shown)]
    if len(session.hostnames) > len(shown):
        lines.append(f"#  ... and {len(session.hostnames) - len(shown)} more ranks")
    return [*lines, "#", _HEADER]


def _summary(metrics: AllreduceMetrics, checked: bool) -> list[str]:
    if checked:
        verdict = "OK" if metrics.wrong_total == 0 else "FAILED"
        wrong_line = f"# Out of bounds values : {metrics.wrong_total} {verdict}"
    else:
        wrong_line = "# Out of bounds values : N/A (check disabled)"
    return [wrong_line, f"# Avg bus bandwidth    : {metrics.avg_busbw_gbps:.4f}", "#"]


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
        for line in _preamble(config, session):
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
        for line in _summary(metrics, config.check):
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


# -- command line --------------------------------------------------------------


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dtype_list(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return ("float32",)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is documented in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Measure allreduce bus bandwidth across all ranks with nccl-tests semantics "
            "(in-place sum, size sweep, busbw = algbw * 2(n-1)/n) and check the results. "
            "Run one process per GPU (or per CPU rank) under torchrun or a kiln launcher; "
            "it reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without "
            "RANK and WORLD_SIZE it runs a single-process group on this machine."
        ),
        epilog=(
            "Exit status: 0 ok; 1 wrong results; 2 bad arguments; 3 a rank failed, timed out "
            "or never joined (the one-line error names it and its host); 13 injected fault."
        ),
    )
    sweep = parser.add_argument_group("message sizes")
    sweep.add_argument(
        "-b",
        "--min-bytes",
        type=_size_arg,
        default=AllreduceConfig.min_bytes,
        metavar="SIZE",
        help="smallest message size in bytes; K, M, G suffixes are powers of 1024 (default: 32M)",
    )
    sweep.add_argument(
        "-e",
        "--max-bytes",
        type=_size_arg,
        default=AllreduceConfig.max_bytes,
        metavar="SIZE",
        help="largest message size in bytes, same suffixes (default: 32M)",
    )
    sweep.add_argument(
        "-f",
        "--factor",
        type=float,
        default=AllreduceConfig.factor,
        metavar="F",
        help="multiply the size by F from one step to the next; sizes are rounded down to a "
        "whole number of elements of the dtype, at least one (default: 2)",
    )
    sweep.add_argument(
        "--dtype",
        action="append",
        metavar="NAME[,NAME...]",
        help=f"element type: {', '.join(DTYPES)}; repeat the option or give a comma list "
        "to measure several, one sweep each (default: float32)",
    )
    timing = parser.add_argument_group("timing and checking")
    timing.add_argument(
        "-w",
        "--warmup-iters",
        type=int,
        default=AllreduceConfig.warmup_iters,
        metavar="N",
        help="untimed iterations per size before timing (default: 5)",
    )
    timing.add_argument(
        "-n",
        "--iters",
        type=int,
        default=AllreduceConfig.iters,
        metavar="N",
        help="timed iterations per repeat, run back to back; a repeat's time is the slowest "
        "rank's loop time divided by N (default: 20)",
    )
    timing.add_argument(
        "--repeat",
        type=int,
        default=AllreduceConfig.repeat,
        metavar="R",
        help="run the timed loop R times per size and report min/median/max over the repeats; "
        "bandwidths use the median (default: 3)",
    )
    timing.add_argument(
        "-c",
        "--check",
        type=int,
        choices=(0, 1),
        default=1,
        metavar="0|1",
        help="1: verify every element of the result against the exact expected sum and report "
        "#wrong; 0: skip the check, #wrong shows N/A (default: 1)",
    )
    group = parser.add_argument_group("process group")
    group.add_argument(
        "--backend",
        choices=("auto", "nccl", "gloo"),
        default=AllreduceConfig.backend,
        help="torch.distributed backend; auto picks nccl when CUDA is available, else gloo "
        "(default: auto)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=AllreduceConfig.timeout_s,
        metavar="SECONDS",
        help="bound for joining the group and for every collective; a rank that does not "
        "answer in time is named in the error. On NCCL the bound counts from when a "
        "collective is enqueued, so it must exceed ITERS times the slowest collective "
        "(default: 300)",
    )
    group.add_argument(
        "--json",
        metavar="PATH",
        dest="json_path",
        help="rank 0 writes the result as JSON {name, schema_version, environ, metrics} here",
    )
    faults = parser.add_argument_group(
        "fault injection", "for testing fault handling only; never use in a certification run"
    )
    faults.add_argument(
        "--fault-exit-rank",
        type=int,
        metavar="RANK",
        help="this rank exits abruptly (status 13) after the first size's warm-up, like a crash",
    )
    faults.add_argument(
        "--fault-hang-rank",
        type=int,
        metavar="RANK",
        help="this rank stops answering for an hour after the first size's warm-up, like a hang",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AllreduceConfig:
    """Translate parsed options; raises ValueError with the option name on bad values."""
    return AllreduceConfig(
        min_bytes=args.min_bytes,
        max_bytes=args.max_bytes,
        factor=args.factor,
        dtypes=_dtype_list(args.dtype),
        warmup_iters=args.warmup_iters,
        iters=args.iters,
        repeat=args.repeat,
        check=bool(args.check),
        backend=args.backend,
        timeout_s=args.timeout,
        json_path=args.json_path,
        fault_exit_rank=args.fault_exit_rank,
        fault_hang_rank=args.fault_hang_rank,
    )


def _write_json(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, target)


def _die(message: str) -> NoReturn:
    """Print the one-line error and leave without running finalizers.

    After a failed collective a backend thread may still be blocked; normal
    interpreter shutdown would join it and could wait out the full timeout.
    """
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_DIST_FAILURE)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse, join the group, measure, print, write JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if config.backend == "nccl" and not torch.cuda.is_available():
        parser.error("--backend nccl needs CUDA, and torch sees no GPU here")

    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        os.environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )
    try:
        session = init_from_env(config.backend, config.timeout_s)
    except RendezvousError as exc:
        _die(str(exc))
    except RuntimeError as exc:  # init_process_group itself failed or timed out
        _die(f"joining the process group failed: {exc}")

    def print_line(line: str) -> None:
        print(line, flush=True)  # flushed: long sweeps should show progress live

    try:
        with CollectiveGuard(session, prog=PROG) as guard:
            out = print_line if session.rank == 0 else None
            result = run_allreduce(config, session, guard, out=out)
            if session.rank == 0 and config.json_path:
                _write_json(config.json_path, result.to_json())
            # Rank 0 serves the store; keep everyone until all ranks are done with it.
            guard.barrier("final barrier")
    except CollectiveError as exc:
        _die(str(exc))
    dist.destroy_process_group()
    return EXIT_WRONG_RESULTS if result.metrics.wrong_total else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
