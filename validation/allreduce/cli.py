"""Command line of the benchmark: ``python -m validation.allreduce`` on every rank.

Run one process per GPU (or per CPU rank), e.g.
``torchrun --nproc-per-node 8 -m validation.allreduce -b 8 -e 1G``, or
through a :mod:`validation.launch` launcher. Rank 0 prints the table and
writes the ``--json`` result.

Exit status: 0 ok, 1 wrong results, 2 bad arguments, 3 a rank failed, timed
out or never joined (the message names it), 13 injected fault (testing only).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.distributed as dist

from validation.allreduce.measure import PROG, AllreduceConfig, run_allreduce
from validation.allreduce.patterns import DTYPES
from validation.allreduce.sizes import parse_size
from validation.entry import die, join_group, write_json
from validation.guard import (
    EXIT_OK,
    EXIT_WRONG_RESULTS,
    CollectiveError,
    CollectiveGuard,
)
from validation.options import add_run_options, name_list


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dtype_list(values: list[str] | None) -> tuple[str, ...]:
    return name_list(values) or ("float32",)


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
    group = add_run_options(
        parser,
        AllreduceConfig.timeout_s,
        "bound for joining the group and for every collective; a rank that does not "
        "answer in time is named in the error. On NCCL the bound counts from when a "
        "collective is enqueued, so it must exceed ITERS times the slowest collective",
    )
    group.add_argument(
        "--backend",
        choices=("auto", "nccl", "gloo"),
        default=AllreduceConfig.backend,
        help="torch.distributed backend; auto picks nccl when CUDA is available, else gloo "
        "(default: auto)",
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

    session = join_group(PROG, config.backend, config.timeout_s)

    def print_line(line: str) -> None:
        print(line, flush=True)  # flushed: long sweeps should show progress live

    try:
        with CollectiveGuard(session, prog=PROG) as guard:
            out = print_line if session.rank == 0 else None
            result = run_allreduce(config, session, guard, out=out)
            if session.rank == 0 and config.json_path:
                write_json(config.json_path, result.to_json())
            # Rank 0 serves the store; keep everyone until all ranks are done with it.
            guard.barrier("final barrier")
    except CollectiveError as exc:
        die(PROG, str(exc))
    dist.destroy_process_group()
    return EXIT_WRONG_RESULTS if result.metrics.wrong_total else EXIT_OK
