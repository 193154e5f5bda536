"""The human table rank 0 prints: one line per GPU and dtype, then each host's slowest GPU.

Standard library only. GPUs are shown in TFLOPS, CPUs in GFLOPS (a CPU's
figure in TFLOPS would read as 0.05).
"""

from __future__ import annotations

from validation.gemm.result import (
    DtypeRun,
    GemmResult,
    GpuRun,
    gpus_by_host,
    missing_reason,
    slowest,
)

_COLUMNS = "{:>7s}  {:<20.20s} {:>4s}  {:<5s} {:>14s} {:>10s} {:>9s} {:>9s}   {:>8s}"
_TIMES = ("median", "min", "max")
_HEADER = (
    "#"
    + _COLUMNS.format("rank", "host", "dev", "dtype", "throughput", *_TIMES, "of peak")[1:]
    + "\n#"
    + _COLUMNS.format("", "", "", "", "", "(ms)", "(ms)", "(ms)", "")[1:].rstrip()
)


def _throughput(run: DtypeRun, cpu: bool) -> str:
    if run.tflops is None:
        return "n/a"
    return f"{run.tflops * 1e3:.1f} GFLOPS" if cpu else f"{run.tflops:.1f} TFLOPS"


def _row(gpu: GpuRun, run: DtypeRun) -> str:
    cpu = gpu.gpu_index is None
    dev = "cpu" if cpu else str(gpu.gpu_index)
    spread = (run.time_ms_median, run.time_ms_min, run.time_ms_max)
    times = ["-" if t is None else f"{t:.3f}" for t in spread]
    peak = "-" if run.fraction_of_peak is None else f"{100 * run.fraction_of_peak:.1f} %"
    return _COLUMNS.format(
        str(gpu.rank), gpu.host, dev, run.dtype, _throughput(run, cpu), *times, peak
    )


def preamble_lines(result: GemmResult) -> list[str]:
    """What was run: the shape and FLOP count, the timing settings, the group."""
    m, env, s = result.metrics, result.environ, result.metrics.settings
    return [
        f"# Kiln GEMM: C = A·B, M = N = K = {m.m}, 2·M·N·K = {m.flops_per_matmul:.3e} FLOP "
        "per matmul",
        f"# warm-up {s.get('warmup_iters')}, iterations {s.get('iters')}, repeats "
        f"{s.get('repeat')}; throughput from the median repeat",
        f"# world size {env.world_size}, backend {env.backend}, torch {env.torch_version}, "
        f"device {env.device}",
        "#",
        _HEADER,
    ]


def table_lines(result: GemmResult) -> list[str]:
    """One line per rank and dtype, then notes on peaks and unmeasured GPUs."""
    lines = []
    for gpu in sorted(result.metrics.gpus, key=lambda g: g.rank):
        lines += [_row(gpu, run) for run in gpu.results]
    reasons = sorted({r.reason for g in result.metrics.gpus for r in g.results if r.reason})
    lines += [f"# note: {reason}" for reason in reasons]
    return lines


def summary_lines(result: GemmResult) -> list[str]:
    """Each host's slowest device per dtype, and hosts with GPUs no rank measured."""
    lines = ["#", "# slowest device per host:"]
    for host, gpus in gpus_by_host(result).items():
        for dtype in result.metrics.dtypes:
            worst = slowest(gpus, dtype)
            if worst is None:
                lines.append(f"#  {host} {dtype}: n/a ({missing_reason(gpus, dtype, 'tflops')})")
                continue
            gpu, run = worst
            peak = (
                f", {100 * run.fraction_of_peak:.1f} % of {run.peak_tflops:g} ({gpu.peak_model})"
                if run.fraction_of_peak is not None
                else ""
            )
            lines.append(
                f"#  {host} {dtype}: {_throughput(run, gpu.gpu_index is None)} on {gpu.label}{peak}"
            )
        seen = max((g.gpus_on_host or 0) for g in gpus)
        if seen > len(gpus):
            lines.append(
                f"#  WARNING: {host} has {seen} GPUs but only {len(gpus)} ranks ran there; "
                "start one rank per GPU to measure them all"
            )
    return [*lines, "#"]
