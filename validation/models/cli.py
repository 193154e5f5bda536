"""Command line of the training benchmark: ``python -m validation.models`` on every rank.

Run one process per GPU (or per CPU rank), e.g.
``torchrun --nproc-per-node 8 -m validation.models --preset full``, or through
a :mod:`validation.launch` launcher. Rank 0 prints one line per timed phase
and writes the ``--json`` result. ``--make-dataset DIR`` instead writes a
dataset for ``--data`` (format: :mod:`validation.models.data`) and exits; it
joins no group.

Exit status: 0 ok, 2 bad arguments, 3 a rank failed, ran out of memory,
timed out or never joined (the message names it), 13 injected fault (testing
only).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from validation.entry import die, join_group, write_json
from validation.guard import EXIT_OK, CollectiveError, CollectiveGuard
from validation.models.config import PROG, TrainConfig
from validation.models.data import make_dataset, rank_shards, read_meta
from validation.models.presets import DEFAULT_STEPS, PRESETS
from validation.models.train import WorkloadError, run_models
from validation.options import add_run_options, name_list


def _mb_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of MB values: {text!r}") from None
    if not values or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"bucket sizes must be positive MB, got {text!r}")
    return tuple(dict.fromkeys(values))  # keep order, drop repeats


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is documented in ``--help``."""
    workloads = "; ".join(f"{p}: {', '.join(w.name for w in ws)}" for p, ws in PRESETS.items())
    warmups = ", ".join(f"{w} for {p}" for p, (w, _) in DEFAULT_STEPS.items())
    timed = ", ".join(f"{s} for {p}" for p, (_, s) in DEFAULT_STEPS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Time DistributedDataParallel training steps of transformers models (random "
            "weights, synthetic or file-backed inputs) on every rank and report samples/s "
            "for the group, per rank, and the step time split into compute, communication "
            "wait and data wait. Run one process per GPU (or per CPU rank) under torchrun or "
            "a kiln launcher; without RANK and WORLD_SIZE it runs a one-process group."
        ),
        epilog=(
            "Exit status: 0 ok; 2 bad arguments; 3 a rank failed, ran out of memory, timed out "
            "or never joined (the one-line error names it and its host); 13 injected fault."
        ),
    )
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--preset",
        choices=("auto", *PRESETS),
        default="auto",
        help=f"model set ({workloads}); auto: full with CUDA, else tiny (default: auto)",
    )
    what.add_argument(
        "--model",
        action="append",
        metavar="NAME[,NAME...]",
        help="run only these workloads of the preset, in this order (default: all)",
    )
    what.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="samples per rank per step (default: per workload, e.g. 256 for resnet50)",
    )
    what.add_argument(
        "--warmup",
        type=int,
        metavar="N",
        help=f"untimed steps before each bucket size's timed steps, at least 1 (default: "
        f"{warmups})",
    )
    what.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"timed steps per phase; a phase per bucket size, plus one of no_sync steps "
        f"for the split (default: {timed})",
    )
    what.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast for forward and loss (default: on with CUDA, off on CPU)",
    )
    ddp = parser.add_argument_group("gradient communication")
    buckets = ddp.add_mutually_exclusive_group()
    buckets.add_argument(
        "--bucket-mb",
        type=float,
        default=25.0,
        metavar="MB",
        help="DDP bucket_cap_mb (default: 25, DDP's own default)",
    )
    buckets.add_argument(
        "--bucket-sweep",
        type=_mb_list,
        metavar="MB,MB,...",
        help="measure each bucket size (e.g. 1,5,25,100), a fresh model "
        "each, and report the fastest",
    )
    ddp.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="skip the no_sync steps that split step time into compute and "
        "communication wait (comm_fraction is then not measured)",
    )
    data = parser.add_argument_group("input data")
    data.add_argument(
        "--data",
        metavar="DIR",
        dest="data_dir",
        help="read samples written by --make-dataset from DIR/<workload>/ "
        "through a DataLoader instead of synthetic batches on the device",
    )
    data.add_argument(
        "--workers",
        type=int,
        default=4,
        metavar="N",
        help="DataLoader worker processes per rank with --data (default: 4)",
    )
    data.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="batches each worker loads ahead with --data (default: 2)",
    )
    data.add_argument(
        "--make-dataset",
        metavar="DIR",
        help="write random samples for the preset's workloads to DIR and exit",
    )
    data.add_argument(
        "--samples",
        type=int,
        default=1024,
        metavar="N",
        help="samples per workload for --make-dataset (default: 1024)",
    )
    data.add_argument(
        "--shard-samples",
        type=int,
        default=256,
        metavar="N",
        help="samples per shard file for --make-dataset (default: 256)",
    )
    group = add_run_options(
        parser,
        300.0,
        "bound for joining, for each step and for every collective; a "
        "rank that does not answer in time is named",
    )
    group.add_argument(
        "--backend",
        choices=("auto", "nccl", "gloo"),
        default="auto",
        help="torch.distributed backend; auto: nccl with CUDA, else gloo (gloo trains on "
        "the CPU, even where there are GPUs)",
    )
    faults = parser.add_argument_group(
        "fault injection", "for testing fault handling only; never use in a certification run"
    )
    faults.add_argument(
        "--fault-exit-rank",
        type=int,
        metavar="RANK",
        help="this rank exits (status 13) after the first warm-up step, like a crash mid-training",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Translate parsed options; raises ValueError with the option name on bad values."""
    preset = args.preset
    if preset == "auto":
        preset = "full" if torch.cuda.is_available() else "tiny"
    return TrainConfig(
        preset=preset,
        models=name_list(args.model),
        batch=args.batch,
        warmup=args.warmup,
        steps=args.steps,
        amp=args.amp,
        bucket_mb=args.bucket_sweep or (args.bucket_mb,),
        split=args.split,
        data_dir=args.data_dir,
        workers=args.workers,
        prefetch=args.prefetch,
        backend=args.backend,
        timeout_s=args.timeout,
        json_path=args.json_path,
        fault_exit_rank=args.fault_exit_rank,
    )


def _check_data(config: TrainConfig) -> None:
    """Every workload has a dataset with a full batch for this rank (before joining)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    for workload in config.workloads():
        meta = read_meta(config.data_dir or "", workload)
        batch = config.batch or workload.batch
        have = sum(n for _, n in rank_shards(meta, rank, world))
        if have < batch:
            raise ValueError(
                f"--data: {workload.name} gives rank {rank} of {world} {have} samples, fewer "
                f"than one batch of {batch}; make a larger dataset (--samples)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse, join the group, train and time, print, write JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bucket_mb <= 0:
        parser.error(f"--bucket-mb must be positive, got {args.bucket_mb:g}")
    try:
        config = config_from_args(args)
        if args.make_dataset and args.data_dir:
            raise ValueError("--make-dataset writes a dataset; do not combine it with --data")
        if config.data_dir:
            _check_data(config)
        if args.make_dataset:
            if os.environ.get("RANK", "0") == "0":  # under a launcher, one writer
                for meta in make_dataset(
                    args.make_dataset, config.workloads(), args.samples, args.shard_samples
                ):
                    print(f"{PROG}: wrote {meta.parent} ({args.samples} samples)", flush=True)
            return EXIT_OK
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"--make-dataset: cannot write {args.make_dataset}: {exc}")
    if config.backend == "nccl" and not torch.cuda.is_available():
        parser.error("--backend nccl needs CUDA, and torch sees no GPU here")

    session = join_group(PROG, config.backend, config.timeout_s)

    def print_line(line: str) -> None:
        print(line, flush=True)  # flushed: long runs should show progress live

    try:
        with CollectiveGuard(session, prog=PROG) as guard:
            result = run_models(config, session, guard, print_line if session.rank == 0 else None)
            if session.rank == 0 and config.json_path:
                write_json(config.json_path, result.to_json())
            # Rank 0 serves the store; keep everyone until all ranks are done with it.
            guard.barrier("final barrier")
    except CollectiveError as exc:
        die(PROG, str(exc))
    except WorkloadError as exc:
        die(PROG, f"{exc} [this is {session.describe_self()}]")
    dist.destroy_process_group()
    return EXIT_OK
