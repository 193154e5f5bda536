"""Baseline rules: fail closed, warn bands, pool medians, homogeneity, bad baseline files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from kiln.certification import baseline as baselines
from kiln.certification.baseline import Baseline
from kiln.certification.rules import MISSING_FAULT, Context, evaluate
from kiln.errors import UsageError
from tests.conftest import REPO

pytestmark = pytest.mark.unit

BUSBW = {
    "id": "allreduce.busbw",
    "measurement": "allreduce.busbw_gbps",
    "unit": "GB/s",
    "floor": {"fail": 0.2},
    "baseline": {"value": 1.0, "fail": 0.3, "warn": 0.1},
    "fault": "KILN-AR-001",
}


def make(*rules: dict) -> Baseline:
    return Baseline.model_validate({"class": "t", "rules": list(rules)})


def context(hosts=("a", "b", "c"), pools=None, facts=None, features=(), phases=None) -> Context:
    return Context(
        subjects={"cluster": ["cluster"], "hosts": list(hosts), "computes": list(hosts)},
        pool_of=pools or dict.fromkeys(hosts, "p"),
        features=frozenset(features),
        phases=frozenset(phases or ("preflight", "allreduce")),
        facts=facts or {},
    )


def busbw(value, subject="cluster") -> dict:
    return {"name": "allreduce.busbw_gbps", "subject": subject, "value": value, "unit": "GB/s"}


def only(results):
    assert len(results) == 1, results
    return results[0]


@pytest.mark.parametrize(
    ("measurements", "why"),
    [
        ([], "was not measured"),
        ([busbw(None)], "was not measured"),
        ([busbw(math.nan)], "not a finite number"),
        ([busbw(math.inf)], "not a finite number"),
        ([busbw(True)], "not a finite number"),
        ([busbw("0.9")], "not a finite number"),
    ],
)
def test_a_missing_or_unusable_measurement_fails_with_its_reason(measurements, why):
    results, _ = evaluate(make(BUSBW), measurements, context())
    r = only(results)
    assert r.status == "fail" and r.fault_code == MISSING_FAULT
    assert why in r.reason and "allreduce.busbw_gbps" in r.reason


def test_a_measurement_missing_with_a_reason_carries_it():
    m = {**busbw(None), "reason": "rank 1 on node2 exited 3"}
    r = only(evaluate(make(BUSBW), [m], context())[0])
    assert r.status == "fail" and "rank 1 on node2 exited 3" in r.reason


@pytest.mark.parametrize(
    ("value", "status"),
    [(1.2, "pass"), (0.95, "pass"), (0.85, "warn"), (0.71, "warn"), (0.69, "fail"), (0.1, "fail")],
)
def test_warn_band_before_fail(value, status):
    r = only(evaluate(make(BUSBW), [busbw(value)], context())[0])
    assert r.status == status, r.reason
    assert r.fail_at == pytest.approx(0.7) and r.warn_at == pytest.approx(0.9)
    assert (r.fault_code == "KILN-AR-001") == (status != "pass")


def test_ceiling_rule_for_lower_is_better():
    rule = {
        "id": "allreduce.correct",
        "measurement": "allreduce.wrong_total",
        "higherIsBetter": False,
        "ceiling": {"fail": 0},
        "fault": "KILN-AR-002",
    }
    ok = {"name": "allreduce.wrong_total", "subject": "cluster", "value": 0}
    bad = {**ok, "value": 3}
    assert only(evaluate(make(rule), [ok], context())[0]).status == "pass"
    r = only(evaluate(make(rule), [bad], context())[0])
    assert r.status == "fail" and r.fault_code == "KILN-AR-002" and r.fail_at == 0


def test_pool_median_names_the_one_slow_node_of_a_pool():
    rule = {
        "id": "allreduce.node-busbw",
        "measurement": "allreduce.busbw_gbps",
        "scope": "hosts",
        "median": {"fail": 0.1, "warn": 0.05},
        "fault": "KILN-AR-010",
    }
    hosts = ("a", "b", "c", "d", "e")
    values = {"a": 460.0, "b": 455.0, "c": 470.0, "d": 380.0, "e": 430.0}
    results, _ = evaluate(
        make(rule), [busbw(v, h) for h, v in values.items()], context(hosts=hosts)
    )
    status = {r.subject: r.status for r in results}
    assert status == {"a": "pass", "b": "pass", "c": "pass", "d": "fail", "e": "warn"}
    assert "pool median 455" in results[3].reason


def test_a_pool_of_two_names_the_one_far_below_the_other_and_a_lone_host_is_not_judged():
    rule = {
        "id": "storage.read-balance",
        "measurement": "allreduce.busbw_gbps",
        "scope": "hosts",
        "median": {"fail": 0.5, "warn": 0.3},
        "fault": "KILN-STO-001",
    }
    pair, _ = evaluate(make(rule), [busbw(0.02, "a"), busbw(0.16, "b")], context(("a", "b")))
    assert {r.subject: r.status for r in pair} == {"a": "fail", "b": "pass"}
    even, _ = evaluate(make(rule), [busbw(0.14, "a"), busbw(0.16, "b")], context(("a", "b")))
    assert {r.status for r in even} == {"pass"}
    alone, _ = evaluate(make(rule), [busbw(0.02, "a")], context(("a",)))
    assert only(alone).status == "pass" and "needs 2+ values" in only(alone).threshold


def test_pool_median_compares_within_a_pool_only():
    rule = {
        "id": "x",
        "measurement": "allreduce.busbw_gbps",
        "scope": "hosts",
        "median": {"fail": 0.1},
        "fault": "KILN-AR-010",
    }
    hosts = ("a1", "a2", "a3", "b1", "b2", "b3")
    pools = {h: h[0] for h in hosts}
    values = {"a1": 100, "a2": 101, "a3": 99, "b1": 50, "b2": 51, "b3": 49}
    results, _ = evaluate(
        make(rule), [busbw(v, h) for h, v in values.items()], context(hosts, pools)
    )
    assert all(r.status == "pass" for r in results), [r.reason for r in results]


def test_equals_is_strict_about_types():
    rule = {
        "id": "preflight.shared-fs",
        "kind": "equals",
        "measurement": "preflight.shared_fs_mounted",
        "scope": "hosts",
        "equals": True,
        "fault": "KILN-PRE-020",
    }
    ms = [
        {"name": "preflight.shared_fs_mounted", "subject": "a", "value": True},
        {"name": "preflight.shared_fs_mounted", "subject": "b", "value": 1},
        {"name": "preflight.shared_fs_mounted", "subject": "c", "value": False, "detail": "none"},
    ]
    results, _ = evaluate(make(rule), ms, context())
    assert [r.status for r in results] == ["pass", "fail", "fail"]
    assert "(none)" in results[2].reason


def test_homogeneity_names_the_odd_node_and_only_it():
    rule = {
        "id": "preflight.homogeneous",
        "kind": "homogeneity",
        "scope": "hosts",
        "facts": ["kernel", "nccl", "rdma_devices"],
        "fault": "KILN-PRE-010",
    }
    same = {"kernel": "6.1.0-17", "nccl": "2.21.5", "rdma_devices": ["mlx5_0"]}
    facts = {"a": same, "b": {**same, "nccl": "2.19.3"}, "c": same}
    results, _ = evaluate(make(rule), [], context(facts=facts))
    status = {r.subject: r.status for r in results}
    assert status == {"a": "pass", "b": "fail", "c": "pass"}
    bad = results[1]
    assert bad.fault_code == "KILN-PRE-010" and "nccl" in bad.reason and "2.19.3" in bad.reason
    assert "kernel" not in bad.reason


def test_homogeneity_without_a_majority_blames_both_and_missing_facts_fail():
    rule = {
        "id": "h",
        "kind": "homogeneity",
        "scope": "hosts",
        "facts": ["kernel"],
        "fault": "KILN-PRE-010",
    }
    facts = {"a": {"kernel": "1"}, "b": {"kernel": "2"}}
    results, _ = evaluate(make(rule), [], context(facts=facts))
    assert [r.status for r in results] == ["fail", "fail", "fail"]
    assert "no majority" in results[0].reason
    assert (
        results[2].fault_code == MISSING_FAULT and "no preflight facts for c" in results[2].reason
    )


def test_rules_of_phases_not_run_or_features_absent_do_not_apply():
    gpu = {
        "id": "preflight.gpus",
        "kind": "equals",
        "measurement": "preflight.gpus_as_configured",
        "equals": True,
        "requires": ["gpu"],
        "fault": "KILN-PRE-030",
    }
    results, skipped = evaluate(make(BUSBW, gpu), [busbw(1.0)], context(phases=["preflight"]))
    assert results == [] and skipped == ["allreduce.busbw", "preflight.gpus"]
    results, skipped = evaluate(make(gpu), [], context(features=["gpu"]))
    assert skipped == [] and only(results).status == "fail"  # applies, and is missing


def test_the_same_inputs_always_give_the_same_results():
    ms = [busbw(0.8)]
    assert evaluate(make(BUSBW), ms, context()) == evaluate(make(BUSBW), ms, context())


# -- baseline files --------------------------------------------------------------


def test_every_shipped_baseline_loads_and_shares_the_common_rules():
    paths = sorted((REPO / "stacks" / "baselines").glob("*.yaml"))
    # Layers others extend (common, gpu) need not carry a bandwidth rule themselves.
    layers = {yaml.safe_load(p.read_text()).get("extends") for p in paths}
    for path in paths:
        baseline, info = baselines.load(path.stem)
        ids = [r.id for r in baseline.rules]
        assert "preflight.homogeneous" in ids and "allreduce.correct" in ids, path
        assert info["class"] == baseline.hardware_class and len(info["digest"]) == 16
        if path.stem not in layers:
            assert baseline.rule(baseline.isolation.rule) is not None, path
    assert {"common", "gpu"} <= layers


def test_gpu_baselines_carry_the_single_node_floors_published_for_their_sku():
    floors = {"h100-sxm-ib": 460, "h200-sxm-ib": 431, "a100-sxm-roce": 228}
    for name, floor in floors.items():
        baseline, _ = baselines.load(name)
        assert baseline.rule("allreduce.node-busbw").floor.fail == floor


def write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"class": "x", "rules": [{**BUSBW, "fault": "AR1"}]}, "rules.0.fault"),
        ({"class": "x", "rules": [{**BUSBW, "baseline": {"value": 1, "fail": 1.5}}]}, "fail"),
        (
            {
                "class": "x",
                "rules": [{**BUSBW, "baseline": {"value": 1, "fail": 0.1, "warn": 0.2}}],
            },
            "warn (0.2) must be a smaller fraction",
        ),
        (
            {"class": "x", "rules": [{"id": "a", "measurement": "m", "fault": "KILN-X-001"}]},
            "needs",
        ),
        ({"class": "x", "rules": [{**BUSBW, "criteria": "lambda x: x"}]}, "criteria"),
        ({"class": "x", "rules": [{"measurement": "m"}]}, "needs an `id`"),
        ("[1, 2", "not YAML"),
        ({"class": "x", "extends": "x"}, "loops back"),
    ],
)
def test_a_bad_baseline_is_refused_naming_the_key(tmp_path, doc, message):
    path = write(tmp_path, "x", doc)
    with pytest.raises(UsageError, match="baseline") as exc:
        baselines.load(str(path))
    assert message in str(exc.value)
    assert "Value error" not in str(exc.value)  # pydantic's prefix says nothing to a user


def test_an_unknown_baseline_lists_the_shipped_ones():
    with pytest.raises(UsageError) as exc:
        baselines.load("h900-imaginary")
    assert "lab-cpu" in str(exc.value) and "h100-sxm-ib" in str(exc.value)


def test_extends_replaces_rules_by_id_and_keeps_the_rest(tmp_path):
    path = write(
        tmp_path,
        "site",
        {"class": "site", "extends": "lab-cpu", "rules": [{**BUSBW, "floor": {"fail": 0.5}}]},
    )
    baseline, info = baselines.load(str(path))
    assert baseline.hardware_class == "site" and info["path"] == str(path)
    assert baseline.rule("allreduce.busbw").floor.fail == 0.5
    assert baseline.rule("preflight.homogeneous") is not None  # from common, via lab-cpu
