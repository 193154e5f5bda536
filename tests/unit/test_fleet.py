"""`kiln baseline generate` and `--compare`: robust to a bad node in the fleet, regressions named."""

from __future__ import annotations

import json

import pytest
import yaml

from kiln.certification import baseline as baselines
from kiln.certification.compare import regressions
from kiln.certification.fleet import generate, read_results, render, robust_centre
from kiln.certification.verdict import CertificationResult, RuleResult
from kiln.errors import UsageError

pytestmark = pytest.mark.unit


def result(busbw: float, rules=()) -> CertificationResult:
    r = CertificationResult(
        "lab", "kiln-lab", "quick", "h", {"class": "lab-cpu"}, "2026-12-01T00:00:00Z"
    )
    r.measurements = [
        {"name": "allreduce.busbw_gbps", "subject": "cluster", "value": busbw, "unit": "GB/s"}
    ]
    r.rules = list(rules)
    return r


def test_robust_centre_drops_the_outlier_and_keeps_the_rest():
    centre, sigma, excluded = robust_centre([0.74, 0.76, 0.75, 0.73, 0.77, 0.21])
    assert excluded == [0.21]
    assert centre == pytest.approx(0.75) and 0 < sigma < 0.05


def test_a_generated_baseline_excludes_a_bad_run_and_loads(tmp_path):
    fleet = [result(v) for v in (0.74, 0.76, 0.75, 0.73, 0.77, 0.21)]
    document, notes = generate(fleet, "lab-cpu", "site-lab")
    rule = next(r for r in document["rules"] if r["id"] == "allreduce.busbw")
    assert rule["baseline"]["value"] == pytest.approx(0.75)
    assert 0 < rule["baseline"]["warn"] < rule["baseline"]["fail"] < 1
    assert any("excluded 0.21" in n for n in notes)
    path = tmp_path / "site.yaml"
    path.write_text(render(document, fleet))
    loaded, info = baselines.load(str(path))  # extends lab-cpu from outside stacks/baselines
    assert loaded.hardware_class == "site-lab" and loaded.rule("preflight.homogeneous")
    assert loaded.rule("allreduce.busbw").baseline.value == pytest.approx(0.75)
    assert yaml.safe_load(path.read_text())["extends"] == "lab-cpu"


def test_too_few_results_keep_the_extended_rule_and_say_so():
    document, notes = generate([result(0.7), result(0.8)], "lab-cpu", "site")
    assert document["rules"] == [] and any("fewer than 3" in n for n in notes)


def test_unreadable_results_are_named(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UsageError, match="schema_version 99"):
        read_results([tmp_path])
    with pytest.raises(UsageError, match="no result.json"):
        read_results([tmp_path / "missing"])


def test_a_drop_beyond_the_warn_band_is_a_regression_and_noise_is_not():
    baseline, _ = baselines.load("lab-cpu")  # busbw warn band: 20% below the expected value
    assert regressions(result(0.75), result(0.70), baseline) == []
    found = regressions(result(0.75), result(0.5), baseline)
    assert [(r["name"], r["subject"], r["change_pct"]) for r in found] == [
        ("allreduce.busbw_gbps", "cluster", -33.3)
    ]


def test_a_rule_that_passed_and_now_fails_is_a_regression():
    baseline, _ = baselines.load("lab-cpu")
    ok = RuleResult("preflight.shared-fs", "n1", "pass", "preflight.shared_fs_mounted", True)
    bad = RuleResult("preflight.shared-fs", "n1", "fail", "preflight.shared_fs_mounted", False)
    found = regressions(result(0.75, [ok]), result(0.75, [bad]), baseline)
    assert found == [
        {
            "name": "rule preflight.shared-fs",
            "subject": "n1",
            "old": "pass",
            "new": "fail",
            "change_pct": None,
            "tolerance_pct": None,
        }
    ]
