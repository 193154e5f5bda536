"""The result document of ``python -m validation.models`` and its flat measurements.

``{"name": "models", "schema_version": 1, "environ": {...}, "metrics": {...}}``
like every benchmark (:mod:`validation.results`). Standard library only: the
control plane reads these documents without torch.

How the numbers are defined (also in the field docstrings):

* A rank's time for a phase is its wall time for the timed steps, started
  after a barrier; the phase time is the slowest rank's, because a DDP step
  waits for it. ``step_s`` is that time divided by the steps.
* ``samples_per_s`` counts every rank's samples over the slowest rank's time
  (``world_size * batch * steps / slowest``), never flattering; per rank it is
  that divided by the world size, and ``rank_samples_per_s`` is each rank's
  own samples over its own time.
* ``compute_s`` is the slowest rank's step time with DDP's gradient allreduce
  switched off (``no_sync``) on an input already on the device;
  ``comm_wait_s = max(0, step_s - compute_s - data_wait_s)`` is the
  communication the overlap with backward did not hide, and ``comm_fraction``
  its share of ``step_s``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from validation.results import (
    SCHEMA_VERSION,
    Environ,
    Measurement,
    ResultSchemaError,
    _optional,
    _require,
    load_document,
    read_envelope,
)

NAME = "models"
_NUMBER = (int, float)


@dataclass(frozen=True)
class BucketRun:
    """One timed DDP phase at one gradient bucket size."""

    bucket_mb: float
    """DDP ``bucket_cap_mb``."""
    step_s: float
    """Slowest rank's wall time per step."""
    samples_per_s: float
    """Samples of all ranks per second of the slowest rank."""
    samples_per_s_per_rank: float
    """``samples_per_s / world_size``."""
    rank_samples_per_s: list[float]
    """Each rank's own samples per second of its own time, by rank."""
    data_wait_s: float
    """Slowest rank's time per step blocked on the data loader (0 for synthetic data)."""
    comm_wait_s: float | None
    """Communication not hidden behind compute per step; None without the split."""
    comm_fraction: float | None
    """``comm_wait_s / step_s``; None without the split."""

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> BucketRun:
        """Parse one entry of ``runs[i].buckets``."""
        if not isinstance(doc, dict):
            raise ResultSchemaError(f"{where}: expected an object")
        rates = _require(doc, "rank_samples_per_s", list, where)
        if not all(isinstance(r, _NUMBER) and not isinstance(r, bool) for r in rates):
            raise ResultSchemaError(f"{where}.rank_samples_per_s: expected a list of numbers")
        return cls(
            bucket_mb=float(_require(doc, "bucket_mb", _NUMBER, where)),
            step_s=float(_require(doc, "step_s", _NUMBER, where)),
            samples_per_s=float(_require(doc, "samples_per_s", _NUMBER, where)),
            samples_per_s_per_rank=float(_require(doc, "samples_per_s_per_rank", _NUMBER, where)),
            rank_samples_per_s=[float(r) for r in rates],
            data_wait_s=float(_require(doc, "data_wait_s", _NUMBER, where)),
            comm_wait_s=_float_or_none(doc, "comm_wait_s", where),
            comm_fraction=_float_or_none(doc, "comm_fraction", where),
        )


def _float_or_none(doc: dict[str, Any], key: str, where: str) -> float | None:
    value = _optional(doc, key, _NUMBER, where)
    return None if value is None else float(value)


@dataclass(frozen=True)
class ModelRun:
    """One workload (model at an input shape): what ran and its best bucket's numbers."""

    model: str
    """Workload name, e.g. ``resnet50`` or ``bert-large-seq128``."""
    hf_class: str
    """The transformers class trained, e.g. ``BertForPreTraining``."""
    params: int
    input_shape: list[int]
    """One sample: ``[3, H, W]`` or ``[seq_len]``."""
    batch_per_rank: int
    warmup_steps: int
    steps: int
    """Timed steps per phase."""
    amp: bool
    """bf16 autocast."""
    data: str
    """``synthetic`` or ``files``."""
    bucket_mb: float
    """The bucket size of the figures below: the best of ``buckets``."""
    samples_per_s: float
    samples_per_s_per_rank: float
    step_s: float
    compute_s: float | None
    """Step time without gradient allreduce; None when the split was off."""
    data_wait_s: float
    comm_wait_s: float | None
    comm_fraction: float | None
    buckets: list[BucketRun] = field(default_factory=list)
    """Every bucket size measured, in order."""

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ModelRun:
        """Parse one entry of ``metrics.runs``."""
        if not isinstance(doc, dict):
            raise ResultSchemaError(f"{where}: expected an object")
        shape = _require(doc, "input_shape", list, where)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
            raise ResultSchemaError(f"{where}.input_shape: expected a list of integers")
        buckets = _require(doc, "buckets", list, where)
        return cls(
            model=_require(doc, "model", str, where),
            hf_class=_require(doc, "hf_class", str, where),
            params=_require(doc, "params", int, where),
            input_shape=list(shape),
            batch_per_rank=_require(doc, "batch_per_rank", int, where),
            warmup_steps=_require(doc, "warmup_steps", int, where),
            steps=_require(doc, "steps", int, where),
            amp=_require(doc, "amp", bool, where),
            data=_require(doc, "data", str, where),
            bucket_mb=float(_require(doc, "bucket_mb", _NUMBER, where)),
            samples_per_s=float(_require(doc, "samples_per_s", _NUMBER, where)),
            samples_per_s_per_rank=float(_require(doc, "samples_per_s_per_rank", _NUMBER, where)),
            step_s=float(_require(doc, "step_s", _NUMBER, where)),
            compute_s=_float_or_none(doc, "compute_s", where),
            data_wait_s=float(_require(doc, "data_wait_s", _NUMBER, where)),
            comm_wait_s=_float_or_none(doc, "comm_wait_s", where),
            comm_fraction=_float_or_none(doc, "comm_fraction", where),
            buckets=[
                BucketRun.from_dict(b, f"{where}.buckets[{i}]") for i, b in enumerate(buckets)
            ],
        )


@dataclass(frozen=True)
class ModelsMetrics:
    """All workloads of one run."""

    preset: str
    world_size: int
    runs: list[ModelRun]
    settings: dict[str, Any] = field(default_factory=dict)
    """Backend, timeout, data directory, loader workers: what a reader needs to judge."""

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelsMetrics:
        """Parse the ``metrics`` object."""
        runs = _require(doc, "runs", list, "metrics")
        return cls(
            preset=_require(doc, "preset", str, "metrics"),
            world_size=_require(doc, "world_size", int, "metrics"),
            runs=[ModelRun.from_dict(r, f"metrics.runs[{i}]") for i, r in enumerate(runs)],
            settings=dict(_optional(doc, "settings", dict, "metrics") or {}),
        )


@dataclass(frozen=True)
class ModelsResult:
    """Result of ``validation.models``: ``{name, schema_version, environ, metrics}``."""

    environ: Environ
    metrics: ModelsMetrics
    name: str = NAME
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the envelope keys first."""
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "environ": self.environ.to_dict(),
            "metrics": asdict(self.metrics),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise; :meth:`from_json` reads it back to an equal object."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, doc: Any) -> ModelsResult:
        """Parse a document, rejecting other benchmarks and unknown schema versions."""
        environ, metrics, version = read_envelope(doc, NAME, SCHEMA_VERSION)
        return cls(environ, ModelsMetrics.from_dict(metrics), schema_version=version)

    @classmethod
    def from_json(cls, text: str) -> ModelsResult:
        """Parse the output of :meth:`to_json`."""
        return cls.from_dict(load_document(text))


def measurements(result: ModelsResult) -> list[Measurement]:
    """Per workload: ``models.<model>.samples_per_s`` (all ranks), ``.samples_per_s_per_rank``,
    ``.step_s`` and ``.comm_fraction`` (None when the compute/communication split was off),
    all at the best bucket size measured."""
    out = []
    for run in result.metrics.runs:
        key = f"{NAME}.{run.model}"
        out += [
            Measurement(f"{key}.samples_per_s", run.samples_per_s, "samples/s"),
            Measurement(f"{key}.samples_per_s_per_rank", run.samples_per_s_per_rank, "samples/s"),
            Measurement(f"{key}.step_s", run.step_s, "s"),
            Measurement(
                f"{key}.comm_fraction",
                run.comm_fraction,
                "",
                None if run.comm_fraction is not None else "not measured (--no-split)",
            ),
        ]
    return out
