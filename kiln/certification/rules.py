"""Apply a baseline's rules to measurements and facts: pass / warn / fail per subject.

Fail closed: a measurement that is missing, None, NaN, infinite, a boolean where a
number belongs, or of the wrong type fails its rule with the reason, never
passes. The same inputs always give the same results in the same order (rules
in file order, subjects in scope order), so a re-run of the evaluation on a
stored result.json gives the same verdict.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.certification.baseline import Baseline, Rule
from kiln.certification.verdict import RuleResult, finite_number

#: Fault code of a rule whose measurement is missing or unusable: "we could not
#: tell" is its own finding, apart from "it measured out of bounds".
MISSING_FAULT = "KILN-MEAS-001"
# A median needs company: with one value there is nothing to compare it with. With two
# the median is their mean, so a host is judged against the midpoint of the pair (one
# far below the other fails; the faster of a pair never does, when higher is better).
_MEDIAN_MIN_VALUES = 2


@dataclass(frozen=True)
class Context:
    """What rules are evaluated against besides the measurements."""

    subjects: Mapping[str, Sequence[str]]
    """Scope -> subjects: ``cluster`` -> ["cluster"], ``hosts``, ``computes``."""
    pool_of: Mapping[str, str]
    """Host -> its pool (median and homogeneity compare within a pool)."""
    features: frozenset[str]
    """What the stack has (slurm, storage, prometheus, gpu, multi-gpu, rdma)."""
    phases: frozenset[str]
    """Phases that ran (or were meant to): rules of other phases do not apply."""
    facts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Preflight facts by host (homogeneity rules)."""


def phase_of(rule: Rule) -> str:
    """The phase whose measurements a rule reads: the first part of the name."""
    if rule.kind == "homogeneity":
        return "preflight"
    return (rule.measurement or "").split(".", 1)[0]


def applicable(rule: Rule, context: Context) -> bool:
    return set(rule.requires) <= context.features and phase_of(rule) in context.phases


def evaluate(
    baseline: Baseline, measurements: Iterable[Mapping[str, Any]], context: Context
) -> tuple[list[RuleResult], list[str]]:
    """Every applicable rule's result per subject, and the ids of rules that do not apply."""
    index: dict[tuple[str, str], Mapping[str, Any]] = {}
    for m in measurements:
        index[(m["name"], m["subject"])] = m
    results: list[RuleResult] = []
    skipped: list[str] = []
    for rule in baseline.rules:
        if not applicable(rule, context):
            skipped.append(rule.id)
            continue
        subjects = list(context.subjects.get(rule.scope, ()))
        if rule.kind == "homogeneity":
            results += _homogeneity(rule, subjects, context)
            continue
        for subject in subjects:
            found = index.get((rule.measurement or "", subject))
            if rule.kind == "equals":
                results.append(_equals(rule, subject, found))
            else:
                pool = _pool_values(rule, subject, subjects, index, context)
                results.append(_threshold(rule, subject, found, pool))
    return results, skipped


def _missing(rule: Rule, subject: str, found: Mapping[str, Any] | None, why: str) -> RuleResult:
    detail = (found or {}).get("reason")
    return RuleResult(
        rule=rule.id,
        subject=subject,
        status="fail",
        measurement=rule.measurement or "",
        value=(found or {}).get("value"),
        unit=rule.unit,
        threshold=describe_bounds(rule),
        fault_code=MISSING_FAULT,
        evidence=(found or {}).get("evidence"),
        reason=f"{rule.measurement} for {subject} {why}" + (f": {detail}" if detail else ""),
    )


def _pool_values(
    rule: Rule,
    subject: str,
    subjects: Sequence[str],
    index: Mapping[tuple[str, str], Mapping[str, Any]],
    context: Context,
) -> list[float]:
    if rule.median is None:
        return []
    pool = context.pool_of.get(subject)
    values = []
    for other in subjects:
        if context.pool_of.get(other) != pool:
            continue
        number = finite_number((index.get((rule.measurement or "", other)) or {}).get("value"))
        if number is not None:
            values.append(number)
    return values


@dataclass(frozen=True)
class _Bound:
    label: str
    fail: float
    warn: float | None
    lower_is_worse: bool  # True: below `fail` fails (a floor); False: above fails


def bounds(rule: Rule, pool_values: Sequence[float] = ()) -> list[_Bound]:
    """The numeric bounds a threshold rule applies (median only with enough pool values)."""
    out = []
    higher = rule.higher_is_better
    if rule.floor:
        out.append(_Bound("floor", rule.floor.fail, rule.floor.warn, True))
    if rule.ceiling:
        out.append(_Bound("ceiling", rule.ceiling.fail, rule.ceiling.warn, False))
    for label, centre, rel in (
        ("baseline", rule.baseline.value if rule.baseline else None, rule.baseline),
        (
            "pool median",
            statistics.median(pool_values) if len(pool_values) >= _MEDIAN_MIN_VALUES else None,
            rule.median,
        ),
    ):
        if centre is None or rel is None:
            continue
        sign = -1 if higher else 1
        warn = centre * (1 + sign * rel.warn) if rel.warn is not None else None
        out.append(_Bound(f"{label} {centre:.4g}", centre * (1 + sign * rel.fail), warn, higher))
    return out


def describe_bounds(rule: Rule, pool_values: Sequence[float] = ()) -> str:
    """The bounds in words, e.g. ``fail < 0.42, warn < 0.5 (baseline 0.75)``."""
    if rule.kind == "equals":
        return f"= {json.dumps(rule.equals)}"
    if rule.kind == "homogeneity":
        return "same as the pool: " + ", ".join(rule.facts)
    parts = []
    for b in bounds(rule, pool_values):
        op = "<" if b.lower_is_worse else ">"
        text = f"fail {op} {b.fail:.4g}"
        if b.warn is not None:
            text += f", warn {op} {b.warn:.4g}"
        parts.append(f"{text} ({b.label})")
    if rule.median and len(pool_values) < _MEDIAN_MIN_VALUES:
        parts.append(f"pool median needs {_MEDIAN_MIN_VALUES}+ values")
    return "; ".join(parts)


def _strictest(bs: Sequence[_Bound], attr: str, lower_is_worse: bool) -> float | None:
    values = [getattr(b, attr) for b in bs if b.lower_is_worse == lower_is_worse]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return max(values) if lower_is_worse else min(values)


def _threshold(
    rule: Rule, subject: str, found: Mapping[str, Any] | None, pool_values: Sequence[float]
) -> RuleResult:
    if found is None:
        return _missing(rule, subject, None, "was not measured")
    value = finite_number(found.get("value"))
    if value is None:
        raw = found.get("value")
        why = "was not measured" if raw is None else f"is not a finite number ({raw!r})"
        return _missing(rule, subject, found, why)
    bs = bounds(rule, pool_values)
    status, broken = "pass", ""
    for b in bs:
        bad = value < b.fail if b.lower_is_worse else value > b.fail
        warn = b.warn is not None and (value < b.warn if b.lower_is_worse else value > b.warn)
        op = "<" if b.lower_is_worse else ">"
        if bad:
            status, broken = "fail", f"{value:.4g} {op} {b.fail:.4g} ({b.label})"
            break
        if warn and status == "pass":
            status, broken = "warn", f"{value:.4g} {op} {b.warn:.4g} ({b.label}, warn band)"
    unit = f" {rule.unit}" if rule.unit else ""
    if status == "pass":
        reason = f"{value:.4g}{unit} within bounds"
    else:
        reason = f"{rule.measurement} {broken}{unit}"
    # fail_at / warn_at report the rule's main direction: a rule with only a
    # ceiling is lower-is-better whatever `higherIsBetter` says.
    lower = False if rule.ceiling and not rule.floor else rule.higher_is_better
    return RuleResult(
        rule=rule.id,
        subject=subject,
        status=status,  # type: ignore[arg-type]
        measurement=rule.measurement or "",
        value=found.get("value"),
        unit=rule.unit,
        threshold=describe_bounds(rule, pool_values),
        fail_at=_strictest(bs, "fail", lower),
        warn_at=_strictest(bs, "warn", lower),
        fault_code=rule.fault if status != "pass" else None,
        evidence=found.get("evidence"),
        reason=reason,
    )


def _equals(rule: Rule, subject: str, found: Mapping[str, Any] | None) -> RuleResult:
    if found is None or found.get("value") is None:
        return _missing(rule, subject, found, "was not measured")
    value = found["value"]
    # True == 1 in Python; a check for `true` must not pass on the number 1.
    same = type(value) is type(rule.equals) and value == rule.equals
    detail = found.get("detail")
    return RuleResult(
        rule=rule.id,
        subject=subject,
        status="pass" if same else "fail",
        measurement=rule.measurement or "",
        value=value,
        unit=rule.unit,
        threshold=describe_bounds(rule),
        fault_code=None if same else rule.fault,
        evidence=found.get("evidence"),
        reason=(
            f"{rule.measurement} = {json.dumps(value)}"
            + ("" if same else f", expected {json.dumps(rule.equals)}")
            + (f" ({detail})" if detail else "")
        ),
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _homogeneity(rule: Rule, subjects: Sequence[str], context: Context) -> list[RuleResult]:
    by_pool: dict[str, list[str]] = {}
    for host in subjects:
        by_pool.setdefault(context.pool_of.get(host, ""), []).append(host)
    results = []
    for host in subjects:
        facts = context.facts.get(host)
        base = {
            "rule": rule.id,
            "subject": host,
            "measurement": "preflight.facts",
            "threshold": describe_bounds(rule),
            "evidence": "evidence/preflight.json",
        }
        if not facts:
            results.append(
                RuleResult(
                    **base,
                    status="fail",
                    value=None,
                    fault_code=MISSING_FAULT,
                    reason=f"no preflight facts for {host}",
                )
            )
            continue
        pool = context.pool_of.get(host, "")
        peers = [h for h in by_pool[pool] if context.facts.get(h)]
        differs = []
        for fact in rule.facts:
            counts = Counter(_key(context.facts[h].get(fact)) for h in peers)
            (top, n), *rest = counts.most_common()
            tie = bool(rest) and rest[0][1] == n
            mine = _key(facts.get(fact))
            if tie or mine != top:
                majority = "no majority" if tie else f"{top} on {n} of {len(peers)}"
                differs.append(f"{fact} {mine} (pool {pool}: {majority})")
        results.append(
            RuleResult(
                **base,
                status="fail" if differs else "pass",
                # Compact, for tables: the facts this host has (None ones left out).
                value="; ".join(
                    f"{f}={_key(facts[f]).strip(chr(34))}" for f in rule.facts if facts.get(f)
                ),
                fault_code=rule.fault if differs else None,
                reason=("differs from its pool: " + "; ".join(differs))
                if differs
                else f"same {', '.join(rule.facts)} as pool {pool}",
            )
        )
    return results
