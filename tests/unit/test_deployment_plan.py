"""The deployment plan: which stages a stack gets, in which order, after which, and what is hashed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kiln.config import Cluster
from kiln.deployment import DeploymentPlan, plan_deployment
from kiln.errors import UsageError
from kiln.stack import cluster_from_document, load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit

STACKS = REPO / "stacks"
MONITORING_OFF = {"prometheus": False, "nodeExporter": False, "dcgmExporter": False}


def _stack(stack: str, **changes: Any) -> Cluster:
    """An example stack with `changes` merged into its `kiln:cluster`."""
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    document["config"]["kiln:cluster"].update(copy.deepcopy(changes))
    return cluster_from_document(document, stack)


def _edges(plan: DeploymentPlan) -> dict[str, tuple[str, ...]]:
    return {s.key: s.after for s in plan.stages}


def test_lab_stack_provisions_then_storage_and_monitoring_then_certifies():
    plan = plan_deployment(load_stack("lab", STACKS))
    # Written out from stacks/Pulumi.lab.yaml (glusterfs, Prometheus, Slurm).
    assert _edges(plan) == {
        "node": (),
        "storage": ("node",),
        "monitoring": ("node",),
        "certification": ("node", "storage", "monitoring"),
    }
    assert [s.name for s in plan.stages] == [
        "provisioning",
        "storage",
        "monitoring",
        "certification",
    ]
    assert [s.roles for s in plan.stages] == ["node", "storage", "monitoring", None]
    assert plan.hashed == ("node", "storage", "monitoring")
    assert not plan.kubernetes


def test_kubernetes_platform_waits_for_every_host_stage_and_certification_for_it():
    plan = plan_deployment(load_stack("prod", STACKS), "operator", has_kubeconfig=True)
    edges = _edges(plan)
    assert list(edges) == ["node", "storage", "monitoring", "platform", "certification"]
    assert edges["platform"] == ("node", "storage", "monitoring")
    assert edges["certification"] == ("node", "storage", "monitoring", "platform")
    # The platform changes no host: certification certifies the roles, not the charts.
    assert plan.hashed == ("node", "storage", "monitoring")
    assert plan.kubernetes and plan.driver_owner == "operator"


def test_every_stage_depends_only_on_earlier_stages():
    for stack in ("lab", "staging", "prod"):
        plan = plan_deployment(load_stack(stack, STACKS), has_kubeconfig=True)
        seen: set[str] = set()
        for stage in plan.stages:
            assert set(stage.after) <= seen, (stack, stage.key)
            seen.add(stage.key)


def test_no_shared_storage_means_no_storage_stage_and_no_storage_hash():
    plan = plan_deployment(_stack("prod", storage={"kind": "none"}), has_kubeconfig=True)
    edges = _edges(plan)
    assert "storage" not in edges
    assert edges["platform"] == ("node", "monitoring")
    assert edges["certification"] == ("node", "monitoring", "platform")
    assert plan.hashed == ("node", "monitoring")


def test_no_exporter_and_no_prometheus_means_no_monitoring_stage():
    plan = plan_deployment(_stack("staging", monitoring=MONITORING_OFF))
    assert _edges(plan) == {
        "node": (),
        "storage": ("node",),
        "certification": ("node", "storage"),
    }
    assert plan.hashed == ("node", "storage")


def test_one_exporter_is_enough_for_a_monitoring_stage():
    plan = plan_deployment(_stack("staging", monitoring={**MONITORING_OFF, "dcgmExporter": True}))
    assert "monitoring" in _edges(plan)


def test_the_plan_carries_the_components_plain_inputs(tmp_path):
    plan = plan_deployment(
        load_stack("lab", STACKS), roles_dir=tmp_path, validation_image="registry.local/v:1"
    )
    assert (plan.roles_dir, plan.validation_image, plan.driver_owner) == (
        tmp_path,
        "registry.local/v:1",
        "roles",
    )


def test_kubernetes_without_kubeconfig_says_which_key_to_set():
    with pytest.raises(UsageError, match="pulumi config set --secret kiln:kubeconfig"):
        plan_deployment(load_stack("prod", STACKS))


def test_two_lab_pools_are_refused():
    lab = yaml.safe_load((STACKS / "Pulumi.lab.yaml").read_text())["config"]["kiln:cluster"]
    second = {"name": "lab2", "provider": "lab", "hosts": [{"name": "node3", "roles": ["compute"]}]}
    cluster = _stack("lab", nodePools=[*lab["nodePools"], second])
    with pytest.raises(UsageError, match="lab, lab2 are all lab pools"):
        plan_deployment(cluster)


def test_an_unknown_driver_owner_is_refused():
    with pytest.raises(UsageError, match="GPU driver owner 'nobody': expected roles or operator"):
        plan_deployment(load_stack("lab", STACKS), "nobody")  # type: ignore[arg-type]


def test_the_gpu_operator_owns_the_driver_only_on_kubernetes():
    with pytest.raises(UsageError, match="only with scheduler: kubernetes"):
        plan_deployment(load_stack("staging", STACKS), "operator")
