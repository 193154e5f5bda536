"""The storage result document, its per-host aggregates and the measurements rules read.

Standard library only, so results can be read where torch is not installed.
The document is ``{"name": "storage", "schema_version": 1, "environ", "metrics"}``;
``metrics.workloads`` holds, per workload, every rank's figures, the per-host
aggregates (what certification judges: the slow node is a host), the
cluster-wide totals and the hosts flagged slow.

Aggregates, and why: ranks start reading together (after a barrier), so a
host's figure is its bytes divided by the time its *slowest* rank took, and
the cluster's is all bytes over the slowest rank's time. Summing per-rank rates
would overstate a host whose ranks finish at different times. GB/s are 1e9
bytes per second, MB/s 1e6.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
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

NAME = "storage"
#: This document's own schema version; bump when a field is renamed or removed.
SCHEMA_VERSION = 1

_NUMBER = (int, float)


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def _list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    return _require(doc, key, list, where)


def _dicts(doc: dict[str, Any], key: str, where: str) -> list[tuple[dict[str, Any], str]]:
    items = []
    for i, item in enumerate(_list(doc, key, where)):
        if not isinstance(item, dict):
            raise ResultSchemaError(f"{where}.{key}[{i}]: expected an object")
        items.append((item, f"{where}.{key}[{i}]"))
    return items


@dataclass(frozen=True)
class RankIo:
    """One rank in one workload: what it wrote, and what it read from whose files."""

    rank: int
    host: str
    source_rank: int
    """The rank whose files this rank read."""
    source_host: str
    write_files: int
    write_bytes: int
    write_s: float
    read_files: int
    read_bytes: int
    read_s: float

    @property
    def read_gbps(self) -> float:
        """This rank's read throughput in GB/s."""
        return _rate(self.read_bytes, self.read_s) / 1e9

    @property
    def write_gbps(self) -> float:
        """This rank's write throughput (fsync included) in GB/s."""
        return _rate(self.write_bytes, self.write_s) / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the rates spelled out for a person reading the file."""
        return {**asdict(self), "read_gbps": self.read_gbps, "write_gbps": self.write_gbps}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> RankIo:
        """Parse one entry of ``ranks``; the rates are recomputed, not read."""
        return cls(
            rank=_require(doc, "rank", int, where),
            host=_require(doc, "host", str, where),
            source_rank=_require(doc, "source_rank", int, where),
            source_host=_require(doc, "source_host", str, where),
            write_files=_require(doc, "write_files", int, where),
            write_bytes=_require(doc, "write_bytes", int, where),
            write_s=float(_require(doc, "write_s", _NUMBER, where)),
            read_files=_require(doc, "read_files", int, where),
            read_bytes=_require(doc, "read_bytes", int, where),
            read_s=float(_require(doc, "read_s", _NUMBER, where)),
        )


@dataclass(frozen=True)
class HostIo:
    """One host's aggregate in one workload: the figure certification judges."""

    host: str
    ranks: tuple[int, ...]
    read_bytes: int
    read_files: int
    read_s: float
    """Time of the host's slowest rank."""
    read_gbps: float
    files_per_s: float
    write_gbps: float

    @property
    def read_mbps(self) -> float:
        """Read throughput in MB/s, the unit small-file figures are usually quoted in."""
        return self.read_gbps * 1e3

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> HostIo:
        """Parse one entry of ``hosts``."""
        ranks = _list(doc, "ranks", where)
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            raise ResultSchemaError(f"{where}.ranks: expected a list of integers")
        return cls(
            host=_require(doc, "host", str, where),
            ranks=tuple(ranks),
            read_bytes=_require(doc, "read_bytes", int, where),
            read_files=_require(doc, "read_files", int, where),
            read_s=float(_require(doc, "read_s", _NUMBER, where)),
            read_gbps=float(_require(doc, "read_gbps", _NUMBER, where)),
            files_per_s=float(_require(doc, "files_per_s", _NUMBER, where)),
            write_gbps=float(_require(doc, "write_gbps", _NUMBER, where)),
        )


@dataclass(frozen=True)
class SlowHost:
    """A host whose read throughput is below ``slow_fraction`` of the hosts' median."""

    host: str
    read_gbps: float
    median_gbps: float
    ratio: float
    """``read_gbps / median_gbps``."""

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> SlowHost:
        """Parse one entry of ``slow_hosts``."""
        return cls(
            host=_require(doc, "host", str, where),
            read_gbps=float(_require(doc, "read_gbps", _NUMBER, where)),
            median_gbps=float(_require(doc, "median_gbps", _NUMBER, where)),
            ratio=float(_require(doc, "ratio", _NUMBER, where)),
        )


def flag_slow_hosts(
    per_host_gbps: Mapping[str, float], fraction: float
) -> tuple[float, tuple[SlowHost, ...]]:
    """(median over hosts, hosts strictly below ``fraction`` of it, in the given order).

    The median, not the mean: one slow host must not drag the yardstick down
    far enough to hide itself. With one host nothing can be compared; none is flagged.
    """
    if not per_host_gbps:
        return 0.0, ()
    median = statistics.median(per_host_gbps.values())
    if len(per_host_gbps) < 2 or median <= 0:
        return median, ()
    slow = tuple(
        SlowHost(host, value, median, value / median)
        for host, value in per_host_gbps.items()
        if value < fraction * median
    )
    return median, slow


@dataclass(frozen=True)
class WorkloadResult:
    """One workload across the cluster: per rank, per host, totals, slow hosts."""

    workload: str
    file_size_bytes: int
    files_per_rank: int
    ranks: tuple[RankIo, ...]
    hosts: tuple[HostIo, ...]
    read_gbps_total: float
    files_per_s_total: float
    write_gbps_total: float
    median_host_read_gbps: float
    slow_hosts: tuple[SlowHost, ...] = ()

    def host(self, name: str) -> HostIo | None:
        """The aggregate of host ``name``, None when it took no part."""
        return next((h for h in self.hosts if h.host == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        doc = asdict(self)
        doc["ranks"] = [r.to_dict() for r in self.ranks]
        doc["hosts"] = [
            {**asdict(h), "ranks": list(h.ranks), "read_mbps": h.read_mbps} for h in self.hosts
        ]
        doc["slow_hosts"] = [asdict(s) for s in self.slow_hosts]
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> WorkloadResult:
        """Parse one entry of ``metrics.workloads``."""
        return cls(
            workload=_require(doc, "workload", str, where),
            file_size_bytes=_require(doc, "file_size_bytes", int, where),
            files_per_rank=_require(doc, "files_per_rank", int, where),
            ranks=tuple(RankIo.from_dict(d, w) for d, w in _dicts(doc, "ranks", where)),
            hosts=tuple(HostIo.from_dict(d, w) for d, w in _dicts(doc, "hosts", where)),
            read_gbps_total=float(_require(doc, "read_gbps_total", _NUMBER, where)),
            files_per_s_total=float(_require(doc, "files_per_s_total", _NUMBER, where)),
            write_gbps_total=float(_require(doc, "write_gbps_total", _NUMBER, where)),
            median_host_read_gbps=float(_require(doc, "median_host_read_gbps", _NUMBER, where)),
            slow_hosts=tuple(SlowHost.from_dict(d, w) for d, w in _dicts(doc, "slow_hosts", where)),
        )


def summarize_workload(
    workload: str,
    file_size: int,
    files_per_rank: int,
    ranks: Sequence[RankIo],
    slow_fraction: float,
) -> WorkloadResult:
    """Per-host and cluster aggregates of the rank figures (see the module docstring)."""
    hosts = []
    for name in dict.fromkeys(r.host for r in ranks):
        mine = [r for r in ranks if r.host == name]
        read_s = max(r.read_s for r in mine)
        write_s = max(r.write_s for r in mine)
        read_bytes = sum(r.read_bytes for r in mine)
        read_files = sum(r.read_files for r in mine)
        hosts.append(
            HostIo(
                host=name,
                ranks=tuple(r.rank for r in mine),
                read_bytes=read_bytes,
                read_files=read_files,
                read_s=read_s,
                read_gbps=_rate(read_bytes, read_s) / 1e9,
                files_per_s=_rate(read_files, read_s),
                write_gbps=_rate(sum(r.write_bytes for r in mine), write_s) / 1e9,
            )
        )
    slowest_read = max((r.read_s for r in ranks), default=0.0)
    slowest_write = max((r.write_s for r in ranks), default=0.0)
    median, slow = flag_slow_hosts({h.host: h.read_gbps for h in hosts}, slow_fraction)
    return WorkloadResult(
        workload=workload,
        file_size_bytes=file_size,
        files_per_rank=files_per_rank,
        ranks=tuple(ranks),
        hosts=tuple(hosts),
        read_gbps_total=_rate(sum(r.read_bytes for r in ranks), slowest_read) / 1e9,
        files_per_s_total=_rate(sum(r.read_files for r in ranks), slowest_read),
        write_gbps_total=_rate(sum(r.write_bytes for r in ranks), slowest_write) / 1e9,
        median_host_read_gbps=median,
        slow_hosts=slow,
    )


@dataclass(frozen=True)
class StorageMetrics:
    """Every workload of one run, and what a reader needs to judge the numbers."""

    workloads: tuple[WorkloadResult, ...]
    cross_host_reads: bool
    """Every rank read files written on another host: the page cache of the
    reading host cannot have held them."""
    notes: tuple[str, ...] = ()
    """Caveats about this run's figures, e.g. a single host."""
    settings: dict[str, Any] = field(default_factory=dict)

    def workload(self, name: str) -> WorkloadResult | None:
        """The workload called ``name``, None when it did not run."""
        return next((w for w in self.workloads if w.workload == name), None)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StorageMetrics:
        """Parse the ``metrics`` object of a storage result."""
        where = "metrics"
        notes = _optional(doc, "notes", list, where) or []
        if not all(isinstance(n, str) for n in notes):
            raise ResultSchemaError(f"{where}.notes: expected a list of strings")
        return cls(
            workloads=tuple(
                WorkloadResult.from_dict(d, w) for d, w in _dicts(doc, "workloads", where)
            ),
            cross_host_reads=_require(doc, "cross_host_reads", bool, where),
            notes=tuple(notes),
            settings=dict(_optional(doc, "settings", dict, where) or {}),
        )


@dataclass(frozen=True)
class StorageResult:
    """Result of ``validation.storage``: ``{name, schema_version, environ, metrics}``."""

    environ: Environ
    metrics: StorageMetrics
    name: str = NAME
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the envelope keys first."""
        m = self.metrics
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "environ": self.environ.to_dict(),
            "metrics": {
                "workloads": [w.to_dict() for w in m.workloads],
                "cross_host_reads": m.cross_host_reads,
                "notes": list(m.notes),
                "settings": dict(m.settings),
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise; :meth:`from_json` reads it back to an equal object."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StorageResult:
        """Parse a result document, rejecting other benchmarks and newer schemas."""
        environ, metrics, version = read_envelope(doc, NAME, SCHEMA_VERSION)
        return cls(environ, StorageMetrics.from_dict(metrics), schema_version=version)

    @classmethod
    def from_json(cls, text: str) -> StorageResult:
        """Parse the output of :meth:`to_json`."""
        return cls.from_dict(load_document(text))


def measurements(result: StorageResult) -> list[Measurement]:
    """The named values certification reads.

    Per workload ``w``: ``storage.read_gbps.<w>`` for every host (``subject`` the
    host), ``storage.read_gbps_total.<w>`` and ``storage.write_gbps_total.<w>``
    for the cluster; for ``small`` also ``storage.files_per_s.small`` per host.
    ``storage.cross_host_reads`` says whether every read was of another host's
    files (False on a single host: its own cache cannot be ruled out).
    """
    out: list[Measurement] = []
    for w in result.metrics.workloads:
        out += [
            Measurement(f"storage.read_gbps.{w.workload}", h.read_gbps, "GB/s", subject=h.host)
            for h in w.hosts
        ]
        if w.workload == "small":
            out += [
                Measurement("storage.files_per_s.small", h.files_per_s, "files/s", subject=h.host)
                for h in w.hosts
            ]
        out.append(Measurement(f"storage.read_gbps_total.{w.workload}", w.read_gbps_total, "GB/s"))
        out.append(
            Measurement(f"storage.write_gbps_total.{w.workload}", w.write_gbps_total, "GB/s")
        )
    out.append(Measurement("storage.cross_host_reads", result.metrics.cross_host_reads))
    return out
