"""Command line of the benchmark: ``python -m validation.gemm`` on every rank.

Run one process per GPU, e.g. ``torchrun --nproc-per-node 8 -m validation.gemm``
or through a :mod:`validation.launch` launcher; alone it measures one device.
Each rank times matmuls on its own GPU; rank 0 gathers every rank's record,
prints the table and writes the ``--json`` result.

Exit status: 0 ok (a dtype that could not run is recorded with its reason);
2 bad arguments; 3 a rank failed, timed out or never joined (the message
names it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from validation.entry import die, join_group, write_json
from validation.gemm.measure import DEFAULT_SIZE, PROG, GemmConfig, run_gemm
from validation.gemm.peaks import DTYPES
from validation.gemm.report import preamble_lines, summary_lines, table_lines
from validation.guard import EXIT_OK, CollectiveError, CollectiveGuard
from validation.options import add_run_options, name_list


def _dtype_list(values: list[str] | None) -> tuple[str, ...] | None:
    return name_list(values) or None  # None: the device's default dtypes


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is documented in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Measure dense matmul throughput (C = A·B, square M = N = K, 2·M·N·K FLOP per "
            "matmul) on every GPU, one rank per GPU, and relate it to the GPU model's dense "
            "peak where NVIDIA publishes one. Run under torchrun or a kiln launcher; it reads "
            "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without RANK and "
            "WORLD_SIZE it measures one device in a single-process group."
        ),
        epilog=(
            "Exit status: 0 ok (a dtype that could not run is recorded with its reason); "
            "2 bad arguments; 3 a rank failed, timed out or never joined (the one-line error "
            "names it and its host)."
        ),
    )
    work = parser.add_argument_group("what to multiply")
    work.add_argument(
        "-s",
        "--size",
        type=int,
        metavar="N",
        help=f"M = N = K of the square matmul (default: {DEFAULT_SIZE['cuda']} on GPU, "
        f"{DEFAULT_SIZE['cpu']} on CPU)",
    )
    work.add_argument(
        "--dtype",
        action="append",
        metavar="NAME[,NAME...]",
        help=f"{', '.join(DTYPES)}; tf32 is float32 with TF32 tensor-core math, fp32 is IEEE "
        "float32. Repeat the option or give a comma list (default: all four on GPU; on CPU "
        "fp32, and bf16 where the CPU does bf16 in hardware)",
    )
    work.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default=GemmConfig.device,
        help="auto: the rank's GPU (LOCAL_RANK) when torch sees one, else the CPU; the "
        "process group uses nccl on GPU and gloo on CPU (default: auto)",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "-w",
        "--warmup-iters",
        type=int,
        default=GemmConfig.warmup_iters,
        metavar="N",
        help=f"untimed matmuls per dtype before timing (default: {GemmConfig.warmup_iters})",
    )
    timing.add_argument(
        "-n",
        "--iters",
        type=int,
        default=GemmConfig.iters,
        metavar="N",
        help="matmuls per timed loop, run back to back; a loop's time is divided by N "
        f"(default: {GemmConfig.iters})",
    )
    timing.add_argument(
        "--repeat",
        type=int,
        default=GemmConfig.repeat,
        metavar="R",
        help="timed loops per dtype; throughput uses the median, min/max show the spread "
        f"(default: {GemmConfig.repeat})",
    )
    add_run_options(
        parser,
        GemmConfig.timeout_s,
        "bound for joining the group and for every barrier and gather; it must exceed "
        "the slowest rank's time for one dtype",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> GemmConfig:
    """Translate parsed options; raises ValueError with the option name on bad values."""
    return GemmConfig(
        size=args.size,
        dtypes=_dtype_list(args.dtype),
        warmup_iters=args.warmup_iters,
        iters=args.iters,
        repeat=args.repeat,
        device=args.device,
        timeout_s=args.timeout,
        json_path=args.json_path,
    )


def _check_device(parser: argparse.ArgumentParser, config: GemmConfig) -> str:
    """``cuda`` or ``cpu``, or a usage error before any rank joins."""
    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs CUDA, and torch sees no GPU here")
    device_type = config.device_type()
    if device_type == "cpu" and "tf32" in (config.dtypes or ()):
        parser.error("--dtype tf32 needs a GPU: TF32 is a tensor-core math mode")
    if device_type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local_rank >= count:
            parser.error(
                f"LOCAL_RANK is {local_rank} but torch sees {count} GPU(s) here; "
                "start one rank per GPU"
            )
    return device_type


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse, join the group, measure, gather, print, write JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    device_type = _check_device(parser, config)
    backend = "nccl" if device_type == "cuda" else "gloo"
    session = join_group(PROG, backend, config.timeout_s)
    try:
        with CollectiveGuard(session, prog=PROG) as guard:
            result = run_gemm(config, session, guard)
            if session.rank == 0:
                for line in preamble_lines(result) + table_lines(result) + summary_lines(result):
                    print(line, flush=True)
                if config.json_path:
                    write_json(config.json_path, result.to_json())
            # Rank 0 serves the store; keep everyone until all ranks are done with it.
            guard.barrier("final barrier")
    except CollectiveError as exc:
        die(PROG, str(exc))
    dist.destroy_process_group()
    return EXIT_OK
