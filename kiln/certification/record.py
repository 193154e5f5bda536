"""Turn one benchmark run into what certification keeps: evidence, measurements, sweeps."""

from __future__ import annotations

from pathlib import Path

from kiln.certification.launch import GroupOutcome, write_evidence
from kiln.certification.verdict import CertificationResult, Sweep

HEADLINE = "allreduce.busbw_gbps"


def record_allreduce(
    result: CertificationResult,
    evidence_dir: Path,
    run_id: str,
    outcome: GroupOutcome,
    subject: str,
) -> float | None:
    """Keep the run's evidence file, its measurements (under `subject`) and its sweeps;
    return the headline busbw, None when the run measured nothing usable (the
    measurement is then recorded as missing, with the reason)."""
    from validation.results import AllreduceResult, ResultSchemaError, measurements_of

    evidence = write_evidence(evidence_dir, run_id, outcome)
    missing = {"name": HEADLINE, "subject": subject, "value": None, "unit": "GB/s"}
    if outcome.doc is None:
        result.measurements.append({**missing, "reason": outcome.error, "evidence": evidence})
        return None
    try:
        # The same reader every benchmark's document goes through; the sweeps
        # (for the report's plots) are allreduce's own.
        measurements = measurements_of(outcome.doc)
        parsed = AllreduceResult.from_dict(outcome.doc)
    except ResultSchemaError as exc:
        reason = f"unreadable result document: {exc}"
        result.measurements.append({**missing, "reason": reason, "evidence": evidence})
        return None
    headline = None
    for m in measurements:
        result.measurements.append(
            {**m.to_dict(), "subject": m.subject or subject, "evidence": evidence}
        )
        if m.name == HEADLINE and isinstance(m.value, float):
            headline = m.value
    for dtype in dict.fromkeys(row.dtype for row in parsed.metrics.sizes):
        rows = [r for r in parsed.metrics.sizes if r.dtype == dtype]
        sizes, busbw = [r.size_bytes for r in rows], [r.busbw_gbps for r in rows]
        result.sweeps.append(Sweep(run_id, tuple(outcome.hosts), dtype, sizes, busbw))
    return headline
