"""From measurements to the verdict: rule results, culprits as failed rules, the one-line reason.

Kept apart from the run itself so that a stored result can be judged again
with the same answer (the rules are deterministic) and so the run's phases
stay about running things.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kiln.certification.baseline import Baseline
from kiln.certification.compare import regressions
from kiln.certification.rules import MISSING_FAULT, Context, evaluate
from kiln.certification.verdict import CertificationResult, PhaseRecord, RuleResult, worst

#: The rule id under which isolation's culprits are reported.
ISOLATION_RULE = "allreduce.isolation"


def now() -> str:
    """UTC, ISO 8601, as result.json records times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def isolation_trigger(baseline: Baseline, rules: list[RuleResult]) -> RuleResult | None:
    """The cluster-wide failure of the baseline's isolation rule, if it measured out of
    bounds (a missing measurement has nobody to isolate: the run already names who died)."""
    return next(
        (
            r
            for r in rules
            if r.rule == baseline.isolation.rule
            and r.subject == "cluster"
            and r.status == "fail"
            and r.fault_code != MISSING_FAULT
        ),
        None,
    )


def culprit_rules(result: CertificationResult) -> list[RuleResult]:
    """One failed rule result per culprit, so every report lists who is to blame."""
    threshold = f"group runs >= {result.isolation.threshold_gbps:.4g}" if result.isolation else ""
    busbw = {r.id: r.busbw_gbps for r in result.isolation.runs} if result.isolation else {}

    def shown(evidence: tuple[str, ...]) -> float | None:
        # The slowest run that shows the culprit: what a person compares with the bound.
        values = [v for v in (busbw.get(e) for e in evidence) if v is not None]
        return min(values) if values else None

    return [
        RuleResult(
            rule=ISOLATION_RULE,
            subject="+".join(c.hosts),
            status="fail",
            measurement="allreduce.busbw_gbps",
            value=shown(c.evidence),
            unit="GB/s",
            threshold=threshold,
            fault_code=c.fault_code,
            evidence=", ".join(c.evidence),
            reason=c.reason,
        )
        for c in result.culprits
    ]


def _reason(result: CertificationResult, error: str | None) -> str:
    failed = result.failed_rules
    if error:
        return error
    if failed:
        named = ", ".join(f"{c.kind} {'+'.join(c.hosts)} ({c.fault_code})" for c in result.culprits)
        first = next((r for r in failed if r.rule != ISOLATION_RULE), failed[0])
        reason = f"{len(failed)} rule result(s) fail: {first.rule} on {first.subject}: "
        return reason + first.reason + (f"; culprit: {named}" if named else "")
    warns = sum(r.status == "warn" for r in result.rules)
    reason = f"{len(result.rules)} rule result(s) pass" + (f", {warns} warn" if warns else "")
    if result.regressions:
        reason += f"; {len(result.regressions)} regression(s) against the comparison"
    return reason


def judge(
    result: CertificationResult,
    baseline: Baseline,
    context: Context,
    error: str | None,
    previous: CertificationResult | None = None,
    compared_with: str | None = None,
) -> None:
    """Fill in `result`'s rules, regressions, status and reason (error wins: exit 2)."""
    rules, skipped = evaluate(baseline, result.measurements, context)
    result.rules = rules + culprit_rules(result)
    result.regressions = regressions(previous, result, baseline) if previous else []
    result.compared_with = compared_with if previous else None
    statuses = [r.status for r in result.rules] + (["warn"] if result.regressions else [])
    result.status = "error" if error else worst(statuses)  # type: ignore[assignment]
    if skipped:
        result.phases.append(
            PhaseRecord("rules", "ok", 0.0, f"not applicable here: {', '.join(skipped)}")
        )
    result.reason = _reason(result, error)
    result.finished_at = now()
