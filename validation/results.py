"""Typed benchmark results and their JSON form.

Every benchmark writes one JSON document shaped like pytorch/benchmark's
userbenchmark output: ``{"name": ..., "environ": {...}, "metrics": {...}}``,
plus ``schema_version`` so that the rules that read old result files can tell
what they are looking at. Only the standard library is used here, so results
can be read on a machine without torch; :func:`collect_environ` imports torch
lazily.
"""

from __future__ import annotations

import importlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Bump when a field is renamed or removed, or its meaning changes. Adding an
#: optional field does not need a bump: readers ignore keys they do not know.
SCHEMA_VERSION = 1


class ResultSchemaError(ValueError):
    """A result document is missing a key, has a wrong type or an unknown version."""


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """Return ``doc[key]`` if present and of type ``kind``, else raise with the key path."""
    if key not in doc:
        raise ResultSchemaError(f"{where}.{key}: missing")
    value = doc[key]
    # bool is an int subclass; a boolean where a number belongs is a broken file.
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ResultSchemaError(f"{where}.{key}: expected a number, got a boolean")
    if not isinstance(value, kind):
        raise ResultSchemaError(
            f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value


def _optional(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """Like :func:`_require` but a missing key or ``null`` reads as ``None``."""
    if doc.get(key) is None:
        return None
    return _require(doc, key, kind, where)


@dataclass(frozen=True)
class Environ:
    """Where a benchmark ran: hosts, group shape and software versions.

    Versions are those of rank 0; node homogeneity is checked by the health
    benchmark, not here.
    """

    hostnames: list[str]
    """Host name of every rank, indexed by rank."""
    world_size: int
    backend: str
    torch_version: str
    python_version: str
    nccl_version: str | None = None
    """NCCL that torch loaded, when CUDA is available."""
    cuda_runtime: str | None = None
    """CUDA version torch was built with (``torch.version.cuda``)."""
    cuda_driver: str | None = None
    """Kernel driver version from ``/proc/driver/nvidia/version``."""
    device: str = "cpu"
    """``cpu`` or the GPU model name."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Environ:
        """Parse the ``environ`` object of a result document."""
        where = "environ"
        hostnames = _require(doc, "hostnames", list, where)
        if not all(isinstance(h, str) for h in hostnames):
            raise ResultSchemaError(f"{where}.hostnames: expected a list of strings")
        return cls(
            hostnames=list(hostnames),
            world_size=_require(doc, "world_size", int, where),
            backend=_require(doc, "backend", str, where),
            torch_version=_require(doc, "torch_version", str, where),
            python_version=_require(doc, "python_version", str, where),
            nccl_version=_optional(doc, "nccl_version", str, where),
            cuda_runtime=_optional(doc, "cuda_runtime", str, where),
            cuda_driver=_optional(doc, "cuda_driver", str, where),
            device=doc.get("device") or "cpu",
        )


def read_envelope(doc: Any, name: str, schema_version: int) -> tuple[Environ, dict[str, Any], int]:
    """Check a result document's envelope ``{name, schema_version, environ, metrics}``.

    Returns (environ, the metrics object, the document's version); rejects other
    benchmarks' documents and versions newer than this reader knows.
    """
    if not isinstance(doc, dict):
        raise ResultSchemaError("result: expected a JSON object")
    found = _require(doc, "name", str, "result")
    if found != name:
        raise ResultSchemaError(f"result.name: expected {name!r}, got {found!r}")
    version = _require(doc, "schema_version", int, "result")
    if not 1 <= version <= schema_version:
        raise ResultSchemaError(
            f"result.schema_version: {version} is not supported "
            f"(this reader knows 1..{schema_version})"
        )
    environ = Environ.from_dict(_require(doc, "environ", dict, "result"))
    return environ, _require(doc, "metrics", dict, "result"), version


def load_document(text: str) -> Any:
    """The JSON of a result file; ResultSchemaError when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultSchemaError(f"result: not JSON ({exc})") from exc


def _nvidia_driver_version() -> str | None:
    """Driver version from the kernel module, or None where there is no NVIDIA driver."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def collect_environ(hostnames: list[str], backend: str) -> Environ:
    """Describe this process's software and the group it ran in."""
    import torch  # lazily: reading result files must not need torch

    nccl_version = None
    device = "cpu"
    if torch.cuda.is_available():
        version = torch.cuda.nccl.version()
        nccl_version = ".".join(str(part) for part in version)
        device = torch.cuda.get_device_name(torch.cuda.current_device())
    return Environ(
        hostnames=list(hostnames),
        world_size=len(hostnames),
        backend=backend,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        nccl_version=nccl_version,
        cuda_runtime=torch.version.cuda,
        cuda_driver=_nvidia_driver_version(),
        device=device,
    )


@dataclass(frozen=True)
class AllreduceMeasurement:
    """One row of the allreduce table: one dtype at one message size.

    A repeat is one timed loop of ``iters`` collectives; its time is the mean
    over iterations of the slowest rank's time. min/median/max are over
    repeats, and bandwidths use the median.
    """

    dtype: str
    size_bytes: int
    count: int
    time_us_min: float
    time_us_median: float
    time_us_max: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None
    """Elements that differed from the expected sum, summed over ranks, in the
    worst checked repeat; ``None`` when the check was switched off."""
    repeat_time_us: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> AllreduceMeasurement:
        """Parse one entry of ``metrics.sizes``."""
        number = (int, float)
        return cls(
            dtype=_require(doc, "dtype", str, where),
            size_bytes=_require(doc, "size_bytes", int, where),
            count=_require(doc, "count", int, where),
            time_us_min=float(_require(doc, "time_us_min", number, where)),
            time_us_median=float(_require(doc, "time_us_median", number, where)),
            time_us_max=float(_require(doc, "time_us_max", number, where)),
            algbw_gbps=float(_require(doc, "algbw_gbps", number, where)),
            busbw_gbps=float(_require(doc, "busbw_gbps", number, where)),
            wrong=_optional(doc, "wrong", int, where),
            repeat_time_us=[float(t) for t in doc.get("repeat_time_us", [])],
        )


@dataclass(frozen=True)
class AllreduceMetrics:
    """All measurements of one allreduce run and the settings that produced them."""

    sizes: list[AllreduceMeasurement]
    avg_busbw_gbps: float
    """Mean bus bandwidth over all rows, as nccl-tests' "Avg bus bandwidth"."""
    bus_factor: float
    """``2*(n-1)/n`` for this world size."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Warm-up/timed iterations, repeats, timeout, check: what a reader needs to
    judge the numbers."""
    peak_rss_bytes: int | None = None
    """Largest peak resident memory of any rank (None in older results)."""
    baseline_rss_bytes: int | None = None
    """Largest resident memory of any rank before the buffers were allocated
    (torch itself); peak minus baseline is what the benchmark costs."""

    @property
    def wrong_total(self) -> int:
        """Wrong elements over all checked rows (0 when nothing was checked)."""
        return sum(m.wrong or 0 for m in self.sizes)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AllreduceMetrics:
        """Parse the ``metrics`` object of an allreduce result."""
        sizes = _require(doc, "sizes", list, "metrics")
        return cls(
            sizes=[
                AllreduceMeasurement.from_dict(row, f"metrics.sizes[{i}]")
                for i, row in enumerate(sizes)
            ],
            avg_busbw_gbps=float(_require(doc, "avg_busbw_gbps", (int, float), "metrics")),
            bus_factor=float(_require(doc, "bus_factor", (int, float), "metrics")),
            settings=dict(doc.get("settings", {})),
            peak_rss_bytes=doc.get("peak_rss_bytes"),
            baseline_rss_bytes=doc.get("baseline_rss_bytes"),
        )


@dataclass(frozen=True)
class AllreduceResult:
    """Result of ``validation.allreduce``: ``{name, schema_version, environ, metrics}``."""

    environ: Environ
    metrics: AllreduceMetrics
    name: str = "allreduce"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the envelope keys first."""
        metrics = asdict(self.metrics)
        metrics["wrong_total"] = self.metrics.wrong_total
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "environ": self.environ.to_dict(),
            "metrics": metrics,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise; :meth:`from_json` reads it back to an equal object."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AllreduceResult:
        """Parse a result document, rejecting other benchmarks and newer schemas."""
        environ, metrics, version = read_envelope(doc, "allreduce", SCHEMA_VERSION)
        return cls(environ, AllreduceMetrics.from_dict(metrics), schema_version=version)

    @classmethod
    def from_json(cls, text: str) -> AllreduceResult:
        """Parse the output of :meth:`to_json`."""
        return cls.from_dict(load_document(text))


# -- measurements: the flat view certification rules read ------------------------
#
# Every benchmark document (allreduce today; models, storage and GEMM as they
# land) is `{name, schema_version, environ, metrics}`. Rules never dig into
# `metrics`: each benchmark says here, once, which named numbers it measured,
# and certification attaches the subject (the hosts the run covered).


@dataclass(frozen=True)
class Measurement:
    """One named value a certification rule can read."""

    name: str
    """Dotted, ``<benchmark>.<quantity>_<unit>``, e.g. ``allreduce.busbw_gbps``."""
    value: float | int | str | bool | None
    """None when it could not be measured; ``reason`` then says why."""
    unit: str = ""
    reason: str | None = None
    subject: str | None = None
    """The host it is about, when the benchmark measured each host on its own
    (storage reads, GEMM); None: the whole group the run covered."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def headline_busbw(metrics: AllreduceMetrics, dtype: str | None = None) -> float | None:
    """THE allreduce figure: bus bandwidth at the largest message size of `dtype`
    (default: the first dtype measured). Never the average over sizes, which small
    latency-bound messages drag down (nccl-tests' "Avg bus bandwidth" is not a
    certification figure). The SSH, Slurm and Kubernetes paths all read this."""
    if not metrics.sizes:
        return None
    dtype = dtype or metrics.sizes[0].dtype
    rows = [m for m in metrics.sizes if m.dtype == dtype]
    return max(rows, key=lambda m: m.size_bytes).busbw_gbps if rows else None


def allreduce_measurements(result: AllreduceResult) -> list[Measurement]:
    """``allreduce.busbw_gbps`` (headline, first dtype), one ``allreduce.busbw_gbps.<dtype>``
    per further dtype, and ``allreduce.wrong_total`` (None when the check was off: a
    certification that did not check the sums has not shown them right)."""
    metrics = result.metrics
    dtypes = list(dict.fromkeys(m.dtype for m in metrics.sizes))
    out = [Measurement("allreduce.busbw_gbps", headline_busbw(metrics), "GB/s")]
    out += [
        Measurement(f"allreduce.busbw_gbps.{d}", headline_busbw(metrics, d), "GB/s")
        for d in dtypes[1:]
    ]
    checked = bool(metrics.sizes) and all(m.wrong is not None for m in metrics.sizes)
    out.append(
        Measurement(
            "allreduce.wrong_total",
            metrics.wrong_total if checked else None,
            "elements",
            None if checked else "the correctness check was off",
        )
    )
    return out


#: Benchmark name -> where its documents are read: ``module:ResultClass``; the
#: class parses (``from_dict``) and the module's ``measurements(result)`` names
#: what was measured. Imported on demand: those modules import this one.
READERS = {
    "allreduce": "validation.results:AllreduceResult",
    "gemm": "validation.gemm.result:GemmResult",
    "storage": "validation.storage.result:StorageResult",
    "models": "validation.models.result:ModelsResult",
}


def measurements(result: AllreduceResult) -> list[Measurement]:
    """This module's reader entry for allreduce documents."""
    return allreduce_measurements(result)


def measurements_of(doc: dict[str, Any]) -> list[Measurement]:
    """The measurements of any benchmark document; ResultSchemaError if it is malformed
    or of a benchmark this reader does not know."""
    name = doc.get("name") if isinstance(doc, dict) else None
    if name not in READERS:
        raise ResultSchemaError(f"result.name: unknown benchmark {name!r}")
    module_name, class_name = READERS[name].split(":")
    module = importlib.import_module(module_name)
    return module.measurements(getattr(module, class_name).from_dict(doc))
