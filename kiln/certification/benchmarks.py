"""The phases after allreduce (profile `full`): GEMM per GPU, shared-storage reads, and
the training-scaling ladder.

Each runs its `validation.<benchmark>` module through the stack's launcher
(`GroupRunner`), keeps the run's evidence and reads its measurements through
the same reader as every other document (`record.record_run`). GEMM and
storage measure every compute in one run and name each host in their
measurements, so pool-median rules can name a slow GPU node or a slow
filesystem client. The models phase runs its workloads at growing node counts
(1, 2, 4, ... and all computes, weak scaling: the per-rank batch stays fixed),
fits the ladder (`validation.scaling`) and records the efficiency at the
largest rung and the serial fraction as cluster measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kiln.certification.launch import CouldNotRun, GroupOutcome, GroupRunner
from kiln.certification.record import record_run
from kiln.certification.verdict import finite_number
from kiln.config import Cluster

if TYPE_CHECKING:  # the phases read the run's state; run.py imports this module
    from kiln.certification.run import Certification

#: Benchmark phases in run order, after preflight and allreduce.
PHASES = ("gemm", "storage", "models")


def gemm_args(cluster: Cluster) -> list[str]:
    """The `validation.gemm` command line from the stack's settings."""
    settings = cluster.certification.gemm
    args = ["--timeout", str(cluster.certification.timeout_seconds)]
    if settings.size:
        args += ["--size", str(settings.size)]
    if settings.dtypes:
        args += ["--dtype", ",".join(settings.dtypes)]
    return args


def storage_args(cluster: Cluster) -> list[str]:
    """The `validation.storage` command line: the shared mount point, the workloads."""
    s = cluster.certification.storage
    return [
        cluster.storage.mount_point,
        "--workload", ",".join(s.workloads),
        "--large-size", s.large_size,
        "--large-count", str(s.large_count),
        "--small-size", s.small_size,
        "--small-count", str(s.small_count),
        "--timeout", str(cluster.certification.timeout_seconds),
    ]  # fmt: skip


def models_preset(cluster: Cluster) -> str:
    """`full` models on GPU computes, `tiny` on CPU ones, unless the stack says."""
    chosen = cluster.certification.models.preset
    if chosen != "auto":
        return chosen
    gpu = any(p.gpu for p in cluster.node_pools if any("compute" in h.roles for h in p.hosts))
    return "full" if gpu else "tiny"


def models_args(cluster: Cluster) -> list[str]:
    """The `validation.models` command line from the stack's settings."""
    s = cluster.certification.models
    args = [
        "--preset",
        models_preset(cluster),
        "--timeout",
        str(cluster.certification.timeout_seconds),
    ]
    if s.workloads:
        args += ["--model", ",".join(s.workloads)]
    if s.batch:
        args += ["--batch", str(s.batch)]
    if s.steps:
        args += ["--steps", str(s.steps)]
    return args


def ladder(computes: int, configured: Sequence[int] = ()) -> list[int]:
    """Node counts to measure: the configured ones that fit, else 1, 2, 4, ... and all."""
    if configured:
        return sorted({n for n in configured if 1 <= n <= computes})
    rungs = [1 << k for k in range(computes.bit_length()) if 1 << k < computes]
    return [*rungs, computes]


def gemm_phase(run: Certification) -> None:
    """Every GPU (every CPU node without GPUs) at once, named per host."""
    _one_run(run, "gemm", "validation.gemm", gemm_args(run.cluster), "gemm.tflops")


def storage_phase(run: Certification) -> None:
    """Every compute reads the shared filesystem at once; a slow client is named."""
    if run.cluster.storage.kind == "none":
        run.phase("storage", time.monotonic(), "skipped", "the stack has no shared filesystem")
        return
    args = storage_args(run.cluster)
    workload = run.cluster.certification.storage.workloads[0]
    _one_run(run, "storage", "validation.storage", args, f"storage.read_gbps.{workload}")


def models_phase(run: Certification) -> None:
    """The training-scaling ladder: each rung a data-parallel run on the first N computes."""
    from validation.scaling import Ladder, fit_ladder

    started = time.monotonic()
    rungs = ladder(len(run.computes), run.cluster.certification.models.ladder)
    by_workload: dict[str, dict[int, float | None]] = {}
    units: dict[str, str] = {}
    for n in rungs:
        run.progress(f"models: {n} node(s)")
        outcome = _launch(run, "validation.models", models_args(run.cluster), run.computes[:n])
        kept = record_run(
            run.result, run.evidence, f"models-{n}", outcome, f"ladder-{n}", "models.samples_per_s"
        )
        for m in kept:
            workload, _, quantity = m["name"].removeprefix("models.").partition(".")
            if quantity == "samples_per_s":
                by_workload.setdefault(workload, {})[n] = finite_number(m["value"])
                units[workload] = m["unit"]
        if outcome.doc is None:
            run.phase("models", started, "error", outcome.error or "no result")
            raise CouldNotRun(outcome.error or "validation.models produced no result")
    for workload, points in by_workload.items():
        fit = fit_ladder(Ladder.from_points(points, unit=units[workload]))
        run.result.scaling.append({"workload": workload, **fit.to_dict()})
        run.result.measurements += _ladder_measurements(workload, fit, rungs[-1])
    run.phase("models", started, "ok", f"ladder {', '.join(map(str, rungs))} node(s)")


def _ladder_measurements(workload: str, fit: Any, top: int) -> list[dict[str, Any]]:
    """What rules read of a ladder: efficiency at the largest rung, the serial fraction."""
    efficiency = fit.efficiencies.get(top)
    why = fit.reason or (None if efficiency is not None else f"no measurement at {top} node(s)")
    if top == 1:
        why = "one compute: there is no ladder to scale along"
    base = {"subject": "cluster", "evidence": f"evidence/models-{top}.json"}
    return [
        {
            **base,
            "name": f"models.{workload}.efficiency",
            "value": efficiency if top > 1 else None,
            "unit": "fraction",
            "reason": None if top > 1 and efficiency is not None else why,
        },
        {
            **base,
            "name": f"models.{workload}.serial_fraction",
            "value": fit.serial_fraction,
            "unit": "fraction",
            "reason": fit.reason,
        },
    ]


def _one_run(run: Certification, phase: str, module: str, args: list[str], expected: str) -> None:
    started = time.monotonic()
    run.progress(f"{phase}: {len(run.computes)} hosts")
    outcome = _launch(run, module, args, run.computes)
    record_run(run.result, run.evidence, phase, outcome, "cluster", expected)
    if outcome.doc is None:
        run.phase(phase, started, "error", outcome.error or "no result", [f"evidence/{phase}.json"])
        raise CouldNotRun(outcome.error or f"{module} produced no result")
    run.phase(phase, started, "ok", f"{outcome.launcher}, {outcome.wall_s:.1f} s")


def _launch(run: Certification, module: str, args: list[str], hosts: Sequence[str]) -> GroupOutcome:
    with GroupRunner(run.cluster, run.access) as runner:
        return runner.run(module, args, hosts)


#: Phase name -> its function, for run.py.
RUNNERS: dict[str, Callable[[Certification], None]] = {
    "gemm": gemm_phase,
    "storage": storage_phase,
    "models": models_phase,
}
