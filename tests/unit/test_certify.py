"""The certification seam: one record shape, whatever certifier runs behind it."""

from __future__ import annotations

import math

import pytest

from kiln.certify import (
    CertifyContext,
    certification_inputs,
    certify,
    recertify_reasons,
    record,
    run_from_props,
)
from kiln.cluster_spec import cluster_spec
from kiln.config import Cluster
from kiln.stack import load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_a_kubernetes_stack_is_not_run_from_here_never_a_pass():
    cluster = load_stack("prod", REPO / "stacks")
    result = record(certify(cluster, CertifyContext("h1")), "h1")
    assert result["status"] == "not-run" and result["busbwGbps"] is None
    assert "certification Job" in result["message"]
    assert result["provisioningHash"] == "h1"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"status": "passed"}, "status"),
        ({"status": "pass"}, "needs the measured busbwGbps"),
        ({"status": "pass", "busbwGbps": math.nan}, "finite"),
        ({"status": "warn", "busbwGbps": -1.0}, "negative"),
        ({"status": "fail", "busbwGbps": True}, "finite number"),
        ({"status": "fail", "verdict": ["x"]}, "verdict"),
    ],
)
def test_malformed_results_are_refused(raw, error):
    with pytest.raises(ValueError, match=error):
        record(raw, "h")


def test_a_full_verdict_passes_through_unchanged():
    verdict = {"rules": [{"name": "busbw", "result": "pass", "measured": 362.4, "threshold": 340}]}
    result = record(
        {"status": "pass", "busbwGbps": 362, "verdict": verdict, "report": "r.html"}, "h"
    )
    assert result["busbwGbps"] == 362.0 and isinstance(result["busbwGbps"], float)
    assert result["verdict"] == verdict and result["report"] == "r.html"


def test_certifier_gets_the_cluster_keys_and_hash_and_state_keeps_no_secret():
    cluster = load_stack("lab", REPO / "stacks")
    seen = {}

    def certifier(c: Cluster, context: CertifyContext) -> dict:
        seen.update(name=c.name, hash=context.provisioning_hash, job=context.job)
        seen.update(kubeconfig=context.kubeconfig)
        return {"status": "fail", "busbwGbps": 0.4, "message": "node2 slow"}

    props = {
        **certification_inputs(cluster),
        "provisioningHash": "abc",
        "job": None,
        "secrets": {"sshKeys": {}, "kubeconfig": "KUBECONFIG"},
    }
    state = run_from_props(props, certifier)
    assert seen == {"name": "kiln-lab", "hash": "abc", "job": None, "kubeconfig": "KUBECONFIG"}
    assert state["record"]["status"] == "fail" and state["record"]["busbwGbps"] == 0.4
    assert "secrets" not in state and "KUBECONFIG" not in str(state)
    assert state["cluster"] == cluster_spec(cluster)


def test_certification_reruns_when_what_it_certifies_changes():
    state = {
        "provisioningHash": "h1",
        "hosts": ["a"],
        "settings": {"timeoutSeconds": 60},
        "job": None,
    }
    assert recertify_reasons(state, dict(state)) == []
    assert recertify_reasons(state, {**state, "provisioningHash": "h2"}) == ["provisioningHash"]
    assert recertify_reasons(state, {**state, "hosts": ["a", "b"]}) == ["hosts"]
    assert recertify_reasons(state, {**state, "baselineDigest": "d2"}) == ["baselineDigest"]


def test_a_stack_certified_against_a_baseline_records_its_digest():
    inputs = certification_inputs(load_stack("lab", REPO / "stacks"))
    assert len(inputs["baselineDigest"]) == 16
