"""The deployment plan: which stages a stack gets, in which order, after which, and what is hashed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kiln.config import Cluster
from kiln.deployment import DeploymentPlan, plan_deployment
from kiln.errors import UsageError
from kiln.stack import ConfigError, cluster_from_document, cluster_from_keys, load_stack
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
    plan = plan_deployment(_stack("prod", gpuDriverOwner="operator"), has_kubeconfig=True)
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


def _document(stack: str, **changes: Any) -> dict[str, Any]:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    document["config"]["kiln:cluster"].update(copy.deepcopy(changes))
    return document


LAB_POOLS = yaml.safe_load((STACKS / "Pulumi.lab.yaml").read_text())["config"]["kiln:cluster"][
    "nodePools"
]
SECOND_LAB = {"name": "lab2", "provider": "lab", "hosts": [{"name": "node3", "roles": ["compute"]}]}


@pytest.mark.parametrize(
    ("stack", "changes", "key", "says"),
    [
        (
            "lab",
            {"nodePools": [*LAB_POOLS, SECOND_LAB]},
            "kiln:cluster.nodePools",
            "lab, lab2 are all lab pools",
        ),
        (
            "staging",
            {"gpuDriverOwner": "operator"},
            "kiln:cluster.gpuDriverOwner",
            "only with scheduler: kubernetes",
        ),
        (
            "staging",
            {"gpuDriverOwner": "nobody"},
            "kiln:cluster.gpuDriverOwner",
            "Input should be 'roles' or 'operator'",
        ),
    ],
)
def test_every_front_door_refuses_an_impossible_stack_with_one_message(stack, changes, key, says):
    """`kiln config check` (the file), the Pulumi program (its keys) and the plan built from
    a model that skipped the checks all refuse it, naming the same key path."""
    document = _document(stack, **changes)
    with pytest.raises(ConfigError) as from_file:
        cluster_from_document(document, stack)
    assert [str(p) for p in from_file.value.problems if p.path == key], from_file.value.problems
    assert says in str(from_file.value)
    keys = {"cluster": document["config"]["kiln:cluster"]}
    with pytest.raises(ConfigError) as from_program:
        cluster_from_keys(keys, stack)
    assert from_program.value.problems == from_file.value.problems
    try:
        unchecked = Cluster.model_validate(document["config"]["kiln:cluster"])
    except ValidationError:
        return  # the model itself refuses it: no plan can be made from it at all
    with pytest.raises(UsageError, match=says):
        plan_deployment(unchecked)


def test_the_moved_driver_owner_key_says_where_it_went():
    document = _document("staging")
    document["config"]["kiln:gpuDriverOwner"] = "roles"
    with pytest.raises(ConfigError, match="moved: set kiln:cluster.gpuDriverOwner instead"):
        cluster_from_document(document, "staging")
