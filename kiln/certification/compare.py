"""`kiln certify --compare DIR`: what got worse since an earlier result, beyond tolerance.

A measurement regresses when the same name and subject moved the wrong way by
more than its tolerance: the warn fraction of the baseline rule that reads it
(the noise the baseline already allows), or 10% when no rule gives one. A rule
that passed before and fails now is a regression too, whatever its numbers.
"""

from __future__ import annotations

from typing import Any

from kiln.certification.baseline import Baseline, Rule
from kiln.certification.verdict import CertificationResult, finite_number

DEFAULT_TOLERANCE = 0.10


def _rule_for(baseline: Baseline, name: str) -> Rule | None:
    return next((r for r in baseline.rules if r.measurement == name), None)


def tolerance(rule: Rule | None) -> float:
    """The fraction a measurement may move the wrong way before it is a regression."""
    for rel in (rule.baseline, rule.median) if rule else ():
        if rel is not None:
            return rel.warn if rel.warn is not None else rel.fail
    return DEFAULT_TOLERANCE


def regressions(
    old: CertificationResult, new: CertificationResult, baseline: Baseline
) -> list[dict[str, Any]]:
    """Each regression as `{name, subject, old, new, change_pct, tolerance_pct}` (or a rule)."""
    before = {(m["name"], m["subject"]): m.get("value") for m in old.measurements}
    out: list[dict[str, Any]] = []
    for m in new.measurements:
        key = (m["name"], m["subject"])
        was, now = finite_number(before.get(key)), finite_number(m.get("value"))
        if was is None or now is None or was == 0:
            continue
        rule = _rule_for(baseline, m["name"])
        higher = rule.higher_is_better if rule else True
        change = (now - was) / abs(was)
        allowed = tolerance(rule)
        if (-change if higher else change) > allowed:
            out.append(
                {
                    "name": m["name"],
                    "subject": m["subject"],
                    "old": was,
                    "new": now,
                    "change_pct": round(100 * change, 1),
                    "tolerance_pct": round(100 * allowed, 1),
                }
            )
    passed = {(r.rule, r.subject) for r in old.rules if r.status != "fail"}
    for r in new.rules:
        if r.status == "fail" and (r.rule, r.subject) in passed:
            out.append(
                {
                    "name": f"rule {r.rule}",
                    "subject": r.subject,
                    "old": "pass",
                    "new": "fail",
                    "change_pct": None,
                    "tolerance_pct": None,
                }
            )
    return out
