"""Result documents of the GEMM, storage and models benchmarks for simulated clusters,
built with each benchmark's own result types (so they are what the readers accept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from validation.gemm.result import DtypeRun, GemmMetrics, GemmResult, GpuRun
from validation.models.result import BucketRun, ModelRun, ModelsMetrics, ModelsResult
from validation.results import Environ
from validation.storage.result import (
    RankIo,
    StorageMetrics,
    StorageResult,
    summarize_workload,
)


def environ(hosts: Sequence[str]) -> Environ:
    return Environ(list(hosts), len(hosts), "gloo", "2.13.0", "3.11.2")


def gemm_doc(tflops: Mapping[str, float]) -> dict:
    """One CPU rank per host, fp32, at the given TFLOPS."""
    gpus = [
        GpuRun(rank, host, None, "cpu", [DtypeRun("fp32", value, reason="no peak for CPUs")])
        for rank, (host, value) in enumerate(tflops.items())
    ]
    metrics = GemmMetrics(1024, 1024, 1024, ["fp32"], gpus)
    return GemmResult(environ(list(tflops)), metrics).to_dict()


def storage_doc(read_gbps: Mapping[str, float], size: int = 1 << 26) -> dict:
    """One rank per host reading its neighbour's large file at the given GB/s."""
    hosts = list(read_gbps)
    ranks = [
        RankIo(i, h, (i + 1) % len(hosts), hosts[(i + 1) % len(hosts)], 1, size, 1.0, 1, size,
               size / (read_gbps[h] * 1e9))
        for i, h in enumerate(hosts)
    ]  # fmt: skip
    workload = summarize_workload("large", size, 1, ranks, 0.7)
    return StorageResult(environ(hosts), StorageMetrics((workload,), True)).to_dict()


def models_doc(hosts: Sequence[str], per_rank: Mapping[str, float]) -> dict:
    """One rank per host; each workload at `per_rank` samples/s on every rank."""
    n = len(hosts)
    runs = []
    for name, rate in per_rank.items():
        step = 16 / rate
        bucket = BucketRun(25.0, step, rate * n, rate, [rate] * n, 0.0, 0.0, 0.0)
        runs.append(
            ModelRun(name, "ResNetForImageClassification", 1000, [3, 32, 32], 16, 2, 5, False,
                     "synthetic", 25.0, rate * n, rate, step, step, 0.0, 0.0, 0.0, [bucket])
        )  # fmt: skip
    return ModelsResult(environ(hosts), ModelsMetrics("tiny", n, runs)).to_dict()
