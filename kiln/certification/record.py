"""Turn one benchmark run into what certification keeps: evidence, measurements, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.certification.launch import GroupOutcome, write_evidence
from kiln.certification.verdict import CertificationResult, Sweep

HEADLINE = "allreduce.busbw_gbps"


def record_run(
    result: CertificationResult,
    evidence_dir: Path,
    run_id: str,
    outcome: GroupOutcome,
    subject: str,
    expected: str,
) -> list[dict[str, Any]]:
    """Keep the run's evidence file and its measurements (under `subject`, or the host a
    measurement names); return them. A run that measured nothing usable records
    `expected` as missing, with the reason, so rules that read it fail closed."""
    from validation.results import ResultSchemaError, measurements_of

    evidence = write_evidence(evidence_dir, run_id, outcome)
    missing = {"name": expected, "subject": subject, "value": None, "unit": ""}
    reason = outcome.error
    if outcome.doc is not None:
        try:
            # The same reader every benchmark's document goes through.
            found = measurements_of(outcome.doc)
        except ResultSchemaError as exc:
            reason = f"unreadable result document: {exc}"
        else:
            kept = [
                {**m.to_dict(), "subject": m.subject or subject, "evidence": evidence}
                for m in found
            ]
            result.measurements += kept
            return kept
    result.measurements.append({**missing, "reason": reason, "evidence": evidence})
    return []


def record_allreduce(
    result: CertificationResult,
    evidence_dir: Path,
    run_id: str,
    outcome: GroupOutcome,
    subject: str,
) -> float | None:
    """Record an allreduce run and its sweeps (the report's plots); return the headline
    busbw, None when the run measured nothing usable."""
    from validation.results import AllreduceResult

    kept = record_run(result, evidence_dir, run_id, outcome, subject, HEADLINE)
    if not kept:
        return None
    parsed = AllreduceResult.from_dict(outcome.doc or {})
    for dtype in dict.fromkeys(row.dtype for row in parsed.metrics.sizes):
        rows = [r for r in parsed.metrics.sizes if r.dtype == dtype]
        sizes, busbw = [r.size_bytes for r in rows], [r.busbw_gbps for r in rows]
        result.sweeps.append(Sweep(run_id, tuple(outcome.hosts), dtype, sizes, busbw))
    value = next((m["value"] for m in kept if m["name"] == HEADLINE), None)
    return value if isinstance(value, float) else None
