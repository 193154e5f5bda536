"""Typed result of ``python -m validation.gemm``, its JSON form and its measurements.

Standard library only: certification reads these documents on hosts without
torch. The document is ``{"name": "gemm", "schema_version": 1, "environ":
{...}, "metrics": {...}}`` with one record per rank (one GPU each) in
``metrics.gpus``, each naming its host and GPU index, so that a slow GPU can
be named, not only a slow host.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from validation.results import (
    Environ,
    Measurement,
    ResultSchemaError,
    _optional,
    _require,
    load_document,
    read_envelope,
)

NAME = "gemm"
#: Bump when a field is renamed or removed or changes meaning; adding one does not.
SCHEMA_VERSION = 1

_NUMBER = (int, float)


def matmul_flops(m: int, n: int, k: int) -> int:
    """Floating-point operations of one ``(m×k)·(k×n)`` matmul: a multiply and an
    add per term, ``2·m·n·k`` (the convention of NVIDIA's peak figures)."""
    return 2 * m * n * k


def _optional_number(doc: dict[str, Any], key: str, where: str) -> float | None:
    value = _optional(doc, key, _NUMBER, where)  # type: ignore[arg-type]
    return None if value is None else float(value)


@dataclass(frozen=True)
class DtypeRun:
    """One dtype on one GPU: time per matmul over the repeats and the TFLOPS of the median."""

    dtype: str
    tflops: float | None
    """From the median repeat; None when the matmul could not run (``reason``)."""
    time_ms_median: float | None = None
    time_ms_min: float | None = None
    time_ms_max: float | None = None
    peak_tflops: float | None = None
    """Dense peak of this GPU model and dtype (:mod:`validation.gemm.peaks`); None if unknown."""
    fraction_of_peak: float | None = None
    reason: str | None = None
    """Why ``tflops`` or ``fraction_of_peak`` is None."""

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> DtypeRun:
        """Parse one entry of ``metrics.gpus[i].results``."""
        if not isinstance(doc, dict):
            raise ResultSchemaError(f"{where}: expected an object")
        return cls(
            dtype=_require(doc, "dtype", str, where),
            tflops=_optional_number(doc, "tflops", where),
            time_ms_median=_optional_number(doc, "time_ms_median", where),
            time_ms_min=_optional_number(doc, "time_ms_min", where),
            time_ms_max=_optional_number(doc, "time_ms_max", where),
            peak_tflops=_optional_number(doc, "peak_tflops", where),
            fraction_of_peak=_optional_number(doc, "fraction_of_peak", where),
            reason=_optional(doc, "reason", str, where),
        )


@dataclass(frozen=True)
class GpuRun:
    """What one rank measured on its own device."""

    rank: int
    host: str
    """The host's inventory name (``KILN_HOST_NAME``), as in ``environ.hostnames``."""
    gpu_index: int | None
    """CUDA device index on its host (the rank's LOCAL_RANK, counted within
    CUDA_VISIBLE_DEVICES); None on CPU."""
    device: str
    """``torch.cuda.get_device_name()``, or ``cpu``."""
    results: list[DtypeRun]
    peak_model: str | None = None
    """The peak table's model for ``device``; None when the table does not know it."""
    gpus_on_host: int | None = None
    """GPUs this rank could see on its host; more than the ranks there means some
    went unmeasured."""
    pci_bus_id: str | None = None
    """``00000000:1B:00.0`` as nvidia-smi prints it: ``gpu_index`` counts within
    CUDA_VISIBLE_DEVICES, the bus id names the physical board."""

    @property
    def label(self) -> str:
        """``GPU 3 (rank 3) on node1``: how messages name this device."""
        what = "CPU" if self.gpu_index is None else f"GPU {self.gpu_index}"
        return f"{what} (rank {self.rank}) on {self.host}"

    def result(self, dtype: str) -> DtypeRun | None:
        """This device's run of ``dtype``, None when it has none."""
        return next((r for r in self.results if r.dtype == dtype), None)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> GpuRun:
        """Parse one entry of ``metrics.gpus``."""
        if not isinstance(doc, dict):
            raise ResultSchemaError(f"{where}: expected an object")
        results = _require(doc, "results", list, where)
        return cls(
            rank=_require(doc, "rank", int, where),
            host=_require(doc, "host", str, where),
            gpu_index=_optional(doc, "gpu_index", int, where),
            device=_require(doc, "device", str, where),
            results=[DtypeRun.from_dict(r, f"{where}.results[{i}]") for i, r in enumerate(results)],
            peak_model=_optional(doc, "peak_model", str, where),
            gpus_on_host=_optional(doc, "gpus_on_host", int, where),
            pci_bus_id=_optional(doc, "pci_bus_id", str, where),
        )


@dataclass(frozen=True)
class GemmMetrics:
    """Every rank's runs and the settings that produced them."""

    m: int
    n: int
    k: int
    dtypes: list[str]
    """Dtypes measured, in order."""
    gpus: list[GpuRun]
    """One record per rank, in rank order."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Warm-up and timed iterations, repeats, device, threads: what a reader needs
    to judge the numbers."""

    @property
    def flops_per_matmul(self) -> int:
        """``2·M·N·K``."""
        return matmul_flops(self.m, self.n, self.k)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GemmMetrics:
        """Parse the ``metrics`` object of a gemm result."""
        where = "metrics"
        dtypes = _require(doc, "dtypes", list, where)
        if not all(isinstance(d, str) for d in dtypes):
            raise ResultSchemaError(f"{where}.dtypes: expected a list of strings")
        gpus = _require(doc, "gpus", list, where)
        if not gpus:
            raise ResultSchemaError(f"{where}.gpus: empty; every rank reports one record")
        return cls(
            m=_require(doc, "m", int, where),
            n=_require(doc, "n", int, where),
            k=_require(doc, "k", int, where),
            dtypes=list(dtypes),
            gpus=[GpuRun.from_dict(g, f"{where}.gpus[{i}]") for i, g in enumerate(gpus)],
            settings=dict(_optional(doc, "settings", dict, where) or {}),
        )


@dataclass(frozen=True)
class GemmResult:
    """Result of ``validation.gemm``: ``{name, schema_version, environ, metrics}``."""

    environ: Environ
    metrics: GemmMetrics
    name: str = NAME
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the envelope keys first."""
        metrics = asdict(self.metrics)
        metrics["flops_per_matmul"] = self.metrics.flops_per_matmul
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "environ": self.environ.to_dict(),
            "metrics": metrics,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise; :meth:`from_json` reads it back to an equal object."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GemmResult:
        """Parse a result document; ResultSchemaError names the offending key."""
        environ, metrics, version = read_envelope(doc, NAME, SCHEMA_VERSION)
        return cls(environ, GemmMetrics.from_dict(metrics), schema_version=version)

    @classmethod
    def from_json(cls, text: str) -> GemmResult:
        """Parse the output of :meth:`to_json`."""
        return cls.from_dict(load_document(text))


def gpus_by_host(result: GemmResult) -> dict[str, list[GpuRun]]:
    """Each host's records in rank order; hosts in the order of their first rank."""
    hosts: dict[str, list[GpuRun]] = {}
    for gpu in sorted(result.metrics.gpus, key=lambda g: g.rank):
        hosts.setdefault(gpu.host, []).append(gpu)
    return hosts


def slowest(gpus: list[GpuRun], dtype: str) -> tuple[GpuRun, DtypeRun] | None:
    """The device with the lowest TFLOPS in ``dtype``; None if any of them has no value
    (a host is only as fast as its slowest GPU, and an unmeasured one may be slower)."""
    runs = [(g, g.result(dtype)) for g in gpus]
    if not runs or any(r is None or r.tflops is None for _, r in runs):
        return None
    return min(runs, key=lambda gr: gr[1].tflops)  # type: ignore[union-attr,return-value]


def missing_reason(gpus: list[GpuRun], dtype: str, value: str) -> str:
    """Why a host has no ``value`` for ``dtype``: the first device that lacks it."""
    for gpu in gpus:
        run = gpu.result(dtype)
        if run is None:
            return f"{gpu.label}: {dtype} was not measured"
        if getattr(run, value) is None:
            return f"{gpu.label}: {run.reason or f'no {value}'}"
    return f"no {value}"


def measurements(result: GemmResult) -> list[Measurement]:
    """Per host and dtype: ``gemm.tflops.<dtype>`` of the host's slowest GPU and
    ``gemm.fraction_of_peak.<dtype>``, the lowest fraction of any of its GPUs (the
    slowest GPU's, when they are all one model). ``subject`` is the host. A value
    is None, with the reason, when any GPU of the host lacks it: no peak is known
    for the model, or the matmul did not run."""
    out: list[Measurement] = []
    hosts = gpus_by_host(result)
    for dtype in result.metrics.dtypes:
        for host, gpus in hosts.items():
            worst = slowest(gpus, dtype)
            name = f"gemm.tflops.{dtype}"
            if worst is None:
                reason = missing_reason(gpus, dtype, "tflops")
                out.append(Measurement(name, None, "TFLOPS", reason, host))
            else:
                out.append(Measurement(name, worst[1].tflops, "TFLOPS", None, host))
            fractions = [run.fraction_of_peak for g in gpus if (run := g.result(dtype)) is not None]
            name = f"gemm.fraction_of_peak.{dtype}"
            if len(fractions) == len(gpus) and all(f is not None for f in fractions):
                out.append(Measurement(name, min(fractions), "fraction", None, host))  # type: ignore[type-var]
            else:
                reason = missing_reason(gpus, dtype, "fraction_of_peak")
                out.append(Measurement(name, None, "fraction", reason, host))
    return out
