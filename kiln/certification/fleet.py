"""`kiln baseline generate`: a site's own baseline from a fleet of certification results.

For every threshold rule of the baseline it extends, the generator collects the
rule's measurement from every result (and every subject in the rule's scope:
per-node values are a fleet of nodes) and drops outliers by iterated median /
MAD: values more than 3 robust standard deviations (1.4826 x MAD) from the
median go, and the median is taken again, until nothing more goes. The
expected value is the median of what stays; the tolerances come from the
site's own spread (fail 15% below the slowest run kept, warn below it, within
fixed bounds); absolute floors are kept from the extended baseline. A bad node in
the fleet is thereby excluded, not averaged in.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kiln.certification import baseline as baselines
from kiln.certification.verdict import CertificationResult, finite_number
from kiln.errors import UsageError

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its sigma
_CUT_SIGMAS = 3.0
_MIN_VALUES = 3
# The site's own runs set the tolerances, within bounds: a few very steady runs
# must not make the baseline fail on ordinary jitter, nor a noisy fleet accept
# anything.
FAIL_MIN, _FAIL_MAX, _WARN_MIN = 0.15, 0.6, 0.05
_MARGIN = 0.85


def read_results(paths: Sequence[Path]) -> list[CertificationResult]:
    """Every result.json named (a report directory or the file); UsageError naming a bad one."""
    if not paths:
        raise UsageError("--from: give at least one report directory")
    results = []
    for path in paths:
        file = path / "result.json" if path.is_dir() else path
        try:
            results.append(CertificationResult.from_dict(json.loads(file.read_text())))
        except FileNotFoundError:
            raise UsageError(f"--from {path}: no result.json there") from None
        except ValueError as exc:
            raise UsageError(f"--from {path}: {exc}") from None
    return results


def robust_centre(values: Sequence[float]) -> tuple[float, float, list[float]]:
    """(median, sigma, excluded) after iterated MAD exclusion."""
    kept = sorted(values)
    excluded: list[float] = []
    while True:
        centre = statistics.median(kept)
        sigma = _MAD_TO_SIGMA * statistics.median(abs(v - centre) for v in kept)
        out = [v for v in kept if sigma > 0 and abs(v - centre) > _CUT_SIGMAS * sigma]
        if not out or len(kept) - len(out) < _MIN_VALUES:
            return centre, sigma, excluded
        excluded += out
        kept = [v for v in kept if v not in out]


def _values(
    results: Sequence[CertificationResult], measurement: str, scope: str
) -> list[tuple[float, str]]:
    found = []
    for i, result in enumerate(results):
        for m in result.measurements:
            if m.get("name") != measurement:
                continue
            if (scope == "cluster") != (m.get("subject") == "cluster"):
                continue
            value = finite_number(m.get("value"))
            if value is not None:
                found.append((value, f"result {i + 1} ({result.started_at}) {m['subject']}"))
    return found


def generate(
    results: Sequence[CertificationResult],
    extends: str,
    name: str,
    min_fail: float = FAIL_MIN,
) -> tuple[dict[str, Any], list[str]]:
    """The new baseline document (extending `extends`) and notes on what was excluded.

    `min_fail` is the smallest fail fraction below the expected value: a fleet of
    a few steady runs under-states a noisy fabric's spread (the CPU lab's runs
    vary by +-20% over minutes), so a site that knows its noise raises it."""
    if not 0 < min_fail < _FAIL_MAX:
        raise UsageError(f"--min-tolerance {min_fail}: expected a fraction in (0, {_FAIL_MAX})")
    template, _ = baselines.load(extends)
    notes: list[str] = []
    rules = []
    for rule in template.rules:
        if rule.kind != "threshold" or not rule.higher_is_better or not rule.measurement:
            continue
        values = _values(results, rule.measurement, rule.scope)
        if len(values) < _MIN_VALUES:
            notes.append(
                f"{rule.id}: {len(values)} value(s) of {rule.measurement}, fewer than "
                f"{_MIN_VALUES}: kept as in {extends}"
            )
            continue
        centre, sigma, excluded = robust_centre([v for v, _ in values])
        for value, where in values:
            if value in excluded:
                notes.append(f"{rule.id}: excluded {value:.4g} from {where} (outlier)")
        # Fail 15% below the slowest run that stayed (it was healthy, and so is
        # anything near it), warn below it; MAD-based 4 sigma would let a
        # halved link pass on a fleet as noisy as the CPU lab.
        slowest = min(v for v, _ in values if v not in excluded)
        lowest = slowest / centre if centre > 0 else 1.0
        fail = min(_FAIL_MAX, max(min_fail, 1 - _MARGIN * lowest))
        warn = min(fail * 0.75, max(_WARN_MIN, 1 - lowest))
        doc = rule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        doc["baseline"] = {
            "value": round(centre, 6),
            "fail": round(fail, 4),
            "warn": round(warn, 4),
        }
        doc["description"] = (
            f"{rule.description} Generated from {len(values) - len(excluded)} of "
            f"{len(values)} values (median {centre:.4g}, robust sigma {sigma:.3g})."
        ).strip()
        rules.append(doc)
        notes.append(
            f"{rule.id}: expected {centre:.4g} {rule.unit} from {len(values)} value(s), "
            f"{len(excluded)} excluded; fail -{100 * fail:.0f}%, warn -{100 * warn:.0f}%"
        )
    document = {
        "schemaVersion": baselines.BASELINE_SCHEMA_VERSION,
        "class": name,
        "extends": extends,
        "description": f"Generated by kiln baseline generate from {len(results)} result(s).",
        "rules": rules,
    }
    try:
        baselines.Baseline.model_validate({**document, "extends": None})
    except ValueError as exc:
        raise UsageError(f"the generated baseline would not load: {exc}") from None
    return document, notes


def render(document: dict[str, Any], results: Sequence[CertificationResult]) -> str:
    """YAML with a header saying where it came from."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    clusters = sorted({r.cluster for r in results})
    header = (
        f"# Generated {stamp} by `kiln baseline generate` from {len(results)} certification "
        f"result(s) of {', '.join(clusters)}.\n# Review before use: it certifies against "
        "what these clusters measured.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)
