"""The lines rank 0 prints: what runs where, one table per workload, the verdict lines.

Standard library only; the numbers come from :mod:`.result`.
"""

from __future__ import annotations

from collections.abc import Sequence

from validation.storage.plan import WorkloadSpec
from validation.storage.result import StorageMetrics, WorkloadResult

#: Reading-plan lines shown before "... and N more".
_SHOWN = 16


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def preamble_lines(
    directory: str,
    run: str,
    specs: Sequence[WorkloadSpec],
    block_size: int,
    hostnames: Sequence[str],
    sources: Sequence[int],
) -> list[str]:
    """Where the run writes, the workloads, and whose files each rank reads."""
    hosts = list(dict.fromkeys(hostnames))
    lines = [
        f"# Kiln storage: {_count(len(hostnames), 'rank')} on {_count(len(hosts), 'host')}, "
        f"DIR {directory}",
        f"# run directory {run} (removed at the end)",
    ]
    lines += [
        f"# {s.name}: {s.count} x {_size(s.file_size)} per rank, read in "
        f"{_size(min(block_size, s.file_size))} blocks"
        for s in specs
    ]
    lines.append("# whose files each rank reads (all ranks read at once):")
    for r, src in list(enumerate(sources))[:_SHOWN]:
        lines.append(f"#  rank {r:4d} ({hostnames[r]}) reads rank {src} ({hostnames[src]})")
    if len(sources) > _SHOWN:
        lines.append(f"#  ... and {len(sources) - _SHOWN} more ranks")
    return lines


def workload_lines(w: WorkloadResult) -> list[str]:
    """Per-host table of one workload, slow hosts marked, then the cluster totals."""
    slow = {s.host: s for s in w.slow_hosts}
    small = w.workload == "small"
    head = f"# {'host':<24} {'ranks':>5} {'read GB/s':>10}"
    head += f" {'MB/s':>9} {'files/s':>9}" if small else ""
    lines = ["#", f"# {w.workload} files, read by host:", head + f" {'write GB/s':>10}"]
    for h in w.hosts:
        row = f"  {h.host:<24} {len(h.ranks):>5} {h.read_gbps:>10.3f}"
        row += f" {h.read_mbps:>9.1f} {h.files_per_s:>9.0f}" if small else ""
        row += f" {h.write_gbps:>10.3f}"
        if h.host in slow:
            s = slow[h.host]
            row += f"  SLOW: {s.ratio:.0%} of the median {s.median_gbps:.3f} GB/s"
        lines.append(row)
    total = f"# {w.workload} total: read {w.read_gbps_total:.3f} GB/s"
    total += f", {w.files_per_s_total:.0f} files/s" if small else ""
    lines.append(total + f"; write {w.write_gbps_total:.3f} GB/s (fsync included)")
    return lines


def summary_lines(metrics: StorageMetrics, slow_fraction: float) -> list[str]:
    """The verdict on hosts, then the caveats."""
    lines = ["#"]
    for w in metrics.workloads:
        if w.slow_hosts:
            names = ", ".join(s.host for s in w.slow_hosts)
            lines.append(
                f"# SLOW {w.workload}: {names} below {slow_fraction:.0%} of the median host "
                f"({w.median_host_read_gbps:.3f} GB/s)"
            )
        else:
            lines.append(
                f"# {w.workload}: no host below {slow_fraction:.0%} of the median host "
                f"({w.median_host_read_gbps:.3f} GB/s)"
            )
    lines += [f"# note: {n}" for n in metrics.notes]
    return lines
