"""Command line of the benchmark: ``python -m validation.storage DIR`` on every rank.

Start it through a :mod:`validation.launch` launcher (or torchrun) with as many
ranks per host as the reads should have; ranks on the same host share its host
name. Collectives always use gloo: the data moves through the filesystem, the
group only synchronises and collects figures. Rank 0 prints the tables and
writes the ``--json`` result.

Exit status: 0 measured (slow hosts are flagged in the output and the result,
certification judges them); 1 a write or read failed on some rank (I/O error,
short file); 2 bad arguments, or DIR unusable on some node; 3 a rank failed,
timed out or never joined (the message names it); 143 terminated by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import torch.distributed as dist

from validation.allreduce.sizes import parse_size
from validation.entry import die, join_group, write_json
from validation.guard import EXIT_OK, CollectiveError, CollectiveGuard
from validation.options import add_run_options, name_list
from validation.storage.measure import PROG, StorageConfig, StorageFailure, run_storage
from validation.storage.plan import WORKLOADS

_EXIT_TERMINATED = 128 + signal.SIGTERM


class _Terminated(BaseException):
    """SIGTERM (a launcher's wall-clock limit) as an exception, so cleanup runs."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workload_list(values: list[str] | None) -> tuple[str, ...]:
    return name_list(values) or WORKLOADS


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is documented in ``--help``."""
    d = StorageConfig(directory="")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Measure read throughput of a shared filesystem from every node at once and name "
            "the slow node. Each rank writes fresh files under DIR/.kiln-storage-<run id>/ "
            "(fsynced, dropped from the page cache), then every rank reads, all together, "
            "the files a rank on another host wrote, so no host reads from its own cache. "
            "Reads are timed and certified; writes are reported. The run directory is removed "
            "at the end. Run one or more processes per node under a kiln launcher or torchrun; "
            "without RANK and WORLD_SIZE it runs alone on this machine, which cannot rule out "
            "its own cache. The file servers may still serve fresh data from their memory: "
            "write more than they can cache (--large-size, --large-count) to measure disks."
        ),
        epilog=(
            "Exit status: 0 measured (slow hosts are flagged, not failed); 1 a write or read "
            "failed on some rank; 2 bad arguments, or DIR unusable on some node (the message "
            "says what to fix); 3 a rank failed, timed out or never joined (the message names "
            "it and its host); 143 terminated."
        ),
    )
    parser.add_argument(
        "directory",
        metavar="DIR",
        help="directory on the shared filesystem, mounted at the same path on every node",
    )
    work = parser.add_argument_group("workloads")
    work.add_argument(
        "--workload",
        action="append",
        metavar="NAME[,NAME...]",
        help="large (a few big files per rank, read sequentially) and/or small (many small "
        "files per rank: files/s and MB/s); repeat or give a comma list (default: large,small)",
    )
    for flag, default, text in (
        ("--large-size", "256M", "size of each large file; K, M, G are powers of 1024"),
        ("--small-size", "64K", "size of each small file"),
        ("--block-size", "4M", "read and write size of one call; small files are one call"),
    ):
        work.add_argument(
            flag,
            type=_size_arg,
            default=default,
            metavar="SIZE",
            help=f"{text} (default: {default})",
        )
    work.add_argument(
        "--large-count",
        type=int,
        default=d.large_count,
        metavar="N",
        help=f"large files each rank writes and another rank reads (default: {d.large_count})",
    )
    work.add_argument(
        "--small-count",
        type=int,
        default=d.small_count,
        metavar="N",
        help=f"small files each rank writes and another rank reads (default: {d.small_count})",
    )
    work.add_argument(
        "--slow-fraction",
        type=float,
        default=d.slow_fraction,
        metavar="F",
        help="flag a host whose read GB/s is below F times the median of the hosts "
        f"(default: {d.slow_fraction:g})",
    )
    add_run_options(
        parser,
        d.timeout_s,
        "bound for joining the group and for every collective; it must exceed the "
        "slowest rank's write or read of one workload, or that rank is named as not "
        "answering",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> StorageConfig:
    """Translate parsed options; raises ValueError with the option name on bad values."""
    return StorageConfig(
        directory=os.path.abspath(args.directory),
        workloads=_workload_list(args.workload),
        large_size=args.large_size,
        large_count=args.large_count,
        small_size=args.small_size,
        small_count=args.small_count,
        block_size=args.block_size,
        slow_fraction=args.slow_fraction,
        timeout_s=args.timeout,
        json_path=args.json_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse, join the group, measure, print, write JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    session = join_group(PROG, "gloo", config.timeout_s)
    signal.signal(signal.SIGTERM, _on_sigterm)

    def print_line(line: str) -> None:
        print(line, flush=True)

    status = EXIT_OK
    try:
        with CollectiveGuard(session, prog=PROG) as guard:
            try:
                result = run_storage(
                    config, session, guard, print_line if session.rank == 0 else None
                )
                if session.rank == 0 and config.json_path:
                    write_json(config.json_path, result.to_json())
            except StorageFailure as exc:
                # Every rank agreed on this; all of them say it and leave together.
                print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
                status = exc.exit_code
            # Rank 0 serves the store; keep everyone until all ranks are done with it.
            guard.barrier("final barrier")
    except CollectiveError as exc:
        die(PROG, str(exc))
    except _Terminated:
        print(
            f"{PROG}: error: terminated by SIGTERM on {session.describe_self()}; "
            "removed this rank's files",
            file=sys.stderr,
            flush=True,
        )
        os._exit(_EXIT_TERMINATED)
    dist.destroy_process_group()
    return status
