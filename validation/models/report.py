"""The lines rank 0 prints: one preamble, then one line per timed phase as it ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from validation.models.config import PROG, TrainConfig
from validation.models.result import BucketRun

if TYPE_CHECKING:
    from validation.rendezvous import DistSession


def preamble(config: TrainConfig, session: DistSession) -> str:
    """What runs where, before the first number."""
    amp = "bf16 autocast" if config.amp_on(session.device) else "off"
    return (
        f"# {PROG}: preset {config.preset}, {session.world_size} ranks "
        f"({session.backend}, {session.device.type}), amp {amp}, "
        f"data {config.data_dir or 'synthetic'}"
    )


def _rate(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"  # CPU runs: below 1/s


def format_bucket(model: str, run: BucketRun, compute_s: float | None) -> str:
    """One human line per timed phase: throughput, then where the step time went."""
    wait = f"data wait {run.data_wait_s * 1e3:.1f} ms"
    if compute_s is not None and run.comm_wait_s is not None:
        split = f" = compute {compute_s * 1e3:.1f} + comm wait {run.comm_wait_s * 1e3:.1f} + {wait}"
    else:
        split = f" ({wait})"
    return (
        f"{model:<18s} bucket {run.bucket_mb:>5g} MB  {_rate(run.samples_per_s):>10s} samples/s "
        f"({_rate(run.samples_per_s_per_rank)}/rank)  step {run.step_s * 1e3:.1f} ms{split}"
    )


def format_best(model: str, best: BucketRun) -> str:
    """After a bucket sweep: the size whose figures the result reports."""
    return f"{model:<18s} best bucket {best.bucket_mb:g} MB: {_rate(best.samples_per_s)} samples/s"
