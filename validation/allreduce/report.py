"""The human table rank 0 prints: preamble, one nccl-tests style line per size, summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from validation.allreduce.sizes import bus_bandwidth_factor
from validation.results import AllreduceMeasurement, AllreduceMetrics

if TYPE_CHECKING:  # measure imports this module
    from validation.allreduce.measure import AllreduceConfig
    from validation.rendezvous import DistSession

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


def preamble_lines(config: AllreduceConfig, session: DistSession) -> list[str]:
    """What was run where (settings, one line per rank up to 64), then the table header."""
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


def summary_lines(metrics: AllreduceMetrics, checked: bool) -> list[str]:
    """The closing lines: total #wrong with a verdict, and the average bus bandwidth."""
    if checked:
        verdict = "OK" if metrics.wrong_total == 0 else "FAILED"
        wrong_line = f"# Out of bounds values : {metrics.wrong_total} {verdict}"
    else:
        wrong_line = "# Out of bounds values : N/A (check disabled)"
    return [wrong_line, f"# Avg bus bandwidth    : {metrics.avg_busbw_gbps:.4f}", "#"]
