"""What a certification run concludes: rule results, culprits, isolation runs, the verdict.

These are plain dataclasses with a JSON form (`to_dict` / `from_dict`): the
report writers, `--compare`, `kiln baseline generate` and the Pulumi
Certification resource all read the same objects, so `result.json` is the one
record of a run. Nothing here imports torch or Pulumi.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Bump when a field of result.json is renamed or removed or changes meaning;
#: adding an optional field does not need a bump (readers ignore unknown keys).
RESULT_SCHEMA_VERSION = 1

RuleStatus = Literal["pass", "warn", "fail"]
#: `error`: the run could not finish (exit 2). It is never a pass.
VerdictStatus = Literal["pass", "warn", "fail", "error"]

#: Exit code of `kiln certify` for each verdict status.
EXIT_CODES: dict[str, int] = {"pass": 0, "warn": 0, "fail": 1, "error": 2}

_RANK = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


def finite_number(value: Any) -> float | None:
    """`value` as a float when it is a finite number; None for anything else (None, NaN,
    infinities, strings, and booleans, which Python counts as ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def worst(statuses: list[str]) -> str:
    """The most severe status of `statuses` (pass when empty)."""
    return max(statuses, key=_RANK.__getitem__, default="pass")


@dataclass(frozen=True)
class RuleResult:
    """One rule applied to one subject (the cluster, a host, or a group of hosts)."""

    rule: str
    """Rule id from the baseline, e.g. ``allreduce.busbw``."""
    subject: str
    """``cluster``, a host name, or hosts joined by ``+`` (a pair or group run)."""
    status: RuleStatus
    measurement: str
    """Measurement name the rule read, e.g. ``allreduce.busbw_gbps``."""
    value: float | int | str | bool | list | None
    """What was measured; None when the measurement is missing (then status is fail)."""
    unit: str = ""
    threshold: str = ""
    """The bounds in words, e.g. ``>= 0.42 fail, >= 0.50 warn (baseline 0.75 -44%/-33%)``."""
    fail_at: float | None = None
    """The numeric bound below (or above, for lower-is-better) which the rule fails."""
    warn_at: float | None = None
    fault_code: str | None = None
    """Stable code when the status is warn or fail (e.g. ``KILN-AR-001``)."""
    evidence: str | None = None
    """File (relative to the report directory) holding the raw data behind the value."""
    reason: str = ""
    """One line a person reads: why this status."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RuleResult:
        return cls(**{k: doc.get(k) for k in cls.__dataclass_fields__ if k in doc})


@dataclass(frozen=True)
class Culprit:
    """A node or link that isolation (or a per-node rule) found responsible."""

    kind: Literal["node", "link", "suspects"]
    """``node``: slow with every partner; ``link``: one pair slow between nodes good
    elsewhere; ``suspects``: could not be told apart (no known-good partner)."""
    hosts: tuple[str, ...]
    fault_code: str
    reason: str
    evidence: tuple[str, ...] = ()
    """Ids of the isolation runs (or evidence files) that show it."""

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["hosts"] = list(self.hosts)
        doc["evidence"] = list(self.evidence)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Culprit:
        return cls(
            kind=doc["kind"],
            hosts=tuple(doc["hosts"]),
            fault_code=doc["fault_code"],
            reason=doc.get("reason", ""),
            evidence=tuple(doc.get("evidence", ())),
        )


@dataclass(frozen=True)
class GroupRun:
    """One benchmark run over a group of hosts during isolation."""

    id: str
    """``iso-<round>-<n>``: unique within a certification run."""
    hosts: tuple[str, ...]
    """In rank (ring) order."""
    round: int
    """Runs of the same round are disjoint and may run at the same time."""
    busbw_gbps: float | None
    """Headline bus bandwidth; None when the run failed (then ``error`` says why)."""
    slow: bool
    """Judged slow (or failed) against the isolation threshold."""
    purpose: str = ""
    """``half``, ``boundary``, ``confirm`` … : why isolation ran it."""
    error: str | None = None
    evidence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["hosts"] = list(self.hosts)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GroupRun:
        return cls(**{**doc, "hosts": tuple(doc["hosts"])})


@dataclass(frozen=True)
class Isolation:
    """What isolation did and found."""

    trigger: str
    """The failed rule (and subject) that started it."""
    threshold_gbps: float
    """A group run below this busbw is slow."""
    runs: list[GroupRun] = field(default_factory=list)
    culprits: list[Culprit] = field(default_factory=list)
    rounds: int = 0
    conclusive: bool = True
    """False when no subset reproduced the failure (then nobody is blamed)."""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "threshold_gbps": self.threshold_gbps,
            "runs": [r.to_dict() for r in self.runs],
            "culprits": [c.to_dict() for c in self.culprits],
            "rounds": self.rounds,
            "conclusive": self.conclusive,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Isolation:
        return cls(
            trigger=doc["trigger"],
            threshold_gbps=float(doc["threshold_gbps"]),
            runs=[GroupRun.from_dict(r) for r in doc.get("runs", [])],
            culprits=[Culprit.from_dict(c) for c in doc.get("culprits", [])],
            rounds=int(doc.get("rounds", 0)),
            conclusive=bool(doc.get("conclusive", True)),
            note=doc.get("note", ""),
        )


@dataclass(frozen=True)
class PhaseRecord:
    """One phase of the run (preflight, allreduce, isolation …)."""

    name: str
    status: Literal["ok", "failed", "skipped", "error"]
    wall_s: float
    message: str = ""
    evidence: list[str] = field(default_factory=list)
    """Files in the report directory this phase wrote (raw result documents, logs)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PhaseRecord:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


@dataclass(frozen=True)
class Sweep:
    """busbw against message size of one allreduce run, for plots and --compare."""

    id: str
    """``cluster`` for the cluster-wide run, else the isolation run id."""
    hosts: tuple[str, ...]
    dtype: str
    sizes_bytes: list[int]
    busbw_gbps: list[float]

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["hosts"] = list(self.hosts)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Sweep:
        return cls(**{**doc, "hosts": tuple(doc["hosts"])})


@dataclass
class CertificationResult:
    """Everything `result.json` holds; built up phase by phase, written after each."""

    stack: str
    cluster: str
    profile: str
    provisioning_hash: str | None
    baseline: dict[str, Any]
    """``{"class", "path", "digest"}`` of the baseline the rules came from."""
    started_at: str
    """UTC, ISO 8601."""
    finished_at: str | None = None
    status: VerdictStatus = "error"
    reason: str = "not finished"
    """One line: why this status (the first failed rule, or what stopped the run)."""
    hosts: list[str] = field(default_factory=list)
    """Hosts certified (the computes), in rank order."""
    phases: list[PhaseRecord] = field(default_factory=list)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    """Every measurement rules could read: ``{name, subject, value, unit, evidence}``."""
    rules: list[RuleResult] = field(default_factory=list)
    culprits: list[Culprit] = field(default_factory=list)
    isolation: Isolation | None = None
    sweeps: list[Sweep] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Preflight facts by host."""
    regressions: list[dict[str, Any]] = field(default_factory=list)
    """With --compare: measurements that regressed beyond tolerance."""
    scaling: list[dict[str, Any]] = field(default_factory=list)
    """Training-scaling ladders: per workload, `validation.scaling.LadderFit.to_dict()`
    plus `workload` (rungs with throughput, efficiency and the fitted law's value)."""
    compared_with: str | None = None
    schema_version: int = RESULT_SCHEMA_VERSION

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def failed_rules(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "stack": self.stack,
            "cluster": self.cluster,
            "profile": self.profile,
            "provisioning_hash": self.provisioning_hash,
            "baseline": dict(self.baseline),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "hosts": list(self.hosts),
            "phases": [p.to_dict() for p in self.phases],
            "measurements": [dict(m) for m in self.measurements],
            "rules": [r.to_dict() for r in self.rules],
            "culprits": [c.to_dict() for c in self.culprits],
            "isolation": self.isolation.to_dict() if self.isolation else None,
            "sweeps": [s.to_dict() for s in self.sweeps],
            "facts": {h: dict(f) for h, f in self.facts.items()},
            "regressions": [dict(r) for r in self.regressions],
            "compared_with": self.compared_with,
            "scaling": [dict(s) for s in self.scaling],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CertificationResult:
        """Read a result.json; ValueError naming the problem for other files."""
        if not isinstance(doc, dict):
            raise ValueError("result.json: expected a JSON object")
        version = doc.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= RESULT_SCHEMA_VERSION:
            raise ValueError(
                f"result.json: schema_version {version!r} is not supported "
                f"(this Kiln reads 1..{RESULT_SCHEMA_VERSION})"
            )
        try:
            return cls(
                stack=doc["stack"],
                cluster=doc["cluster"],
                profile=doc["profile"],
                provisioning_hash=doc.get("provisioning_hash"),
                baseline=dict(doc.get("baseline") or {}),
                started_at=doc["started_at"],
                finished_at=doc.get("finished_at"),
                status=doc["status"],
                reason=doc.get("reason", ""),
                hosts=list(doc.get("hosts", [])),
                phases=[PhaseRecord.from_dict(p) for p in doc.get("phases", [])],
                measurements=[dict(m) for m in doc.get("measurements", [])],
                rules=[RuleResult.from_dict(r) for r in doc.get("rules", [])],
                culprits=[Culprit.from_dict(c) for c in doc.get("culprits", [])],
                isolation=Isolation.from_dict(doc["isolation"]) if doc.get("isolation") else None,
                sweeps=[Sweep.from_dict(s) for s in doc.get("sweeps", [])],
                facts={h: dict(f) for h, f in (doc.get("facts") or {}).items()},
                regressions=[dict(r) for r in doc.get("regressions", [])],
                compared_with=doc.get("compared_with"),
                scaling=[dict(s) for s in doc.get("scaling", [])],
                schema_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"result.json: missing or malformed field {exc}") from None
