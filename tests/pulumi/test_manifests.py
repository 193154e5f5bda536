"""Every Kubernetes object the program creates is valid, and the platform is configured sanely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pulumi
import pytest

from components.mocks import PLAYBOOK, RELEASE, RecordingMonitor, Registration, settled
from kiln.kubernetes import versions
from kiln.kubernetes.certification_job import certification_run_name
from kiln.kubernetes.kueue import QUEUE
from tests.pulumi.crd_schemas import SCHEMAS
from tests.pulumi.harness import build, stack_cluster

pytestmark = pytest.mark.pulumi

KUBERNETES_VERSIONS = (versions.KUBERNETES_MIN, kubernetes_validate.utils.latest_version())
# Resources that are not Kubernetes objects themselves (a Helm release, a kustomization).
NOT_OBJECTS = {RELEASE, "kubernetes:kustomize/v2:Directory"}


def _manifest(r: Registration) -> dict[str, Any]:
    return {
        k: v for k, v in r.inputs.items() if k in ("apiVersion", "kind", "metadata", "spec", "data")
    }


def _objects(monitor: RecordingMonitor) -> list[Registration]:
    return [
        r
        for r in monitor.registrations
        if r.type.startswith("kubernetes:") and r.type not in NOT_OBJECTS
    ]


def _validate(r: Registration) -> None:
    manifest = _manifest(r)
    schema = SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if schema is not None:
        try:
            jsonschema.validate(manifest, schema)
        except jsonschema.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{r.urn}: invalid at {path}: {exc.message}")
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            # A jsonschema error carrying the attributes of the one it caught.
            path = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{r.urn}: invalid for Kubernetes {version} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(
                f"{r.urn}: {manifest['kind']} has no schema for {version} and no CRD subset"
            )


@pytest.mark.parametrize("driver_owner", ["roles", "operator"])
@pulumi.runtime.test
def test_every_kubernetes_object_validates(monitor: RecordingMonitor, driver_owner: str):
    cluster = stack_cluster("prod").model_copy(update={"gpu_driver_owner": driver_owner})
    component = build(monitor, cluster)

    def check(_):
        objects = _objects(monitor)
        # 6 namespaces, dashboard, volume + claim, rendezvous Service + Job, 3 Kueue, NIC policy
        assert len(objects) == 15, [r.urn for r in objects]
        for r in objects:
            _validate(r)

    return settled(component).apply(check)


@pulumi.runtime.test
def test_a_misspelt_field_is_caught(monitor: RecordingMonitor):
    # The checker itself must reject what the API server would prune or refuse.
    component = build(monitor, stack_cluster("prod"))

    def check(_):
        (queue,) = [r for r in _objects(monitor) if r.inputs["kind"] == "ClusterQueue"]
        queue.inputs["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalquota"] = 1
        with pytest.raises(pytest.fail.Exception):
            _validate(queue)
        (job,) = [r for r in _objects(monitor) if r.inputs["kind"] == "Job"]
        job.inputs["spec"]["backofLimit"] = 0
        with pytest.raises(pytest.fail.Exception):
            _validate(job)

    return settled(component).apply(check)


@pulumi.runtime.test
def test_helm_charts_come_pinned_from_versions_py(monitor: RecordingMonitor):
    component = build(monitor, stack_cluster("prod"))
    pinned = {
        (c.chart, c.version) for c in vars(versions).values() if isinstance(c, versions.Chart)
    }

    def check(_):
        releases = monitor.of_type(RELEASE)
        assert {r.name.rsplit("-", 1)[0] for r in releases}  # there are releases at all
        for r in releases:
            assert (r.inputs["chart"], r.inputs.get("version")) in pinned, r.urn
        (directory,) = monitor.of_type("kubernetes:kustomize/v2:Directory")
        assert directory.inputs["directory"] == versions.TRAINING_OPERATOR, directory.urn

    return settled(component).apply(check)


@pytest.mark.parametrize("owner", ["roles", "operator"])
@pulumi.runtime.test
def test_the_gpu_driver_has_exactly_one_owner(
    monitor: RecordingMonitor, tmp_path: Path, owner: str
):
    cluster = stack_cluster("prod").model_copy(update={"gpu_driver_owner": owner})
    component = build(monitor, cluster)

    def check(_):
        (operator,) = [r for r in monitor.of_type(RELEASE) if r.inputs["chart"] == "gpu-operator"]
        operator_installs = operator.inputs["values"]["driver"]["enabled"]
        (node_stage,) = [
            r
            for r in monitor.of_type(PLAYBOOK)
            if r.inputs["stage"] == "node" and r.inputs["pool"] == "h100"
        ]
        roles_install = "nvidia_driver" in node_stage.inputs["roles"]
        assert operator_installs != roles_install, (operator.urn, node_stage.inputs["roles"])
        assert operator_installs == (owner == "operator"), operator.urn
        # The container toolkit follows the driver: the operator's or the roles', not both.
        operator_toolkit = operator.inputs["values"]["toolkit"]["enabled"]
        assert operator_toolkit == operator_installs, operator.urn
        assert ("container_toolkit" in node_stage.inputs["roles"]) != operator_toolkit
        if owner == "operator":
            assert operator.inputs["values"]["driver"]["version"] == "550.127.08", operator.urn

    return settled(component).apply(check)


@pulumi.runtime.test
def test_prometheus_scrapes_the_hosts_exporters_instead_of_running_its_own(
    monitor: RecordingMonitor,
):
    # node_exporter (a role) already listens on :9100 of every host.
    cluster = stack_cluster("prod")
    component = build(monitor, cluster)

    def check(_):
        (stack,) = [
            r for r in monitor.of_type(RELEASE) if r.inputs["chart"] == "kube-prometheus-stack"
        ]
        values = stack.inputs["values"]
        assert values["nodeExporter"]["enabled"] is False, stack.urn
        (scrape,) = values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
        targets = scrape["static_configs"][0]["targets"]
        assert sorted(targets) == sorted(f"{h.address}:9100" for h in cluster.hosts), stack.urn
        assert values["prometheus"]["prometheusSpec"]["retention"] == "30d", stack.urn
        # Prometheus and DCGM exporter roles stay off the hosts: the charts run them.
        monitoring = [r for r in monitor.of_type(PLAYBOOK) if r.inputs["stage"] == "monitoring"]
        assert {"prometheus", "dcgm_exporter"}.isdisjoint(monitoring[0].inputs["roles"])

    return settled(component).apply(check)


@pulumi.runtime.test
def test_certification_job_is_pinned_to_the_gpu_hosts_and_queued(monitor: RecordingMonitor):
    cluster = stack_cluster("prod")
    component = build(monitor, cluster)

    def check(provisioning_hash: str):
        (job,) = [r for r in _objects(monitor) if r.inputs["kind"] == "Job"]
        spec = job.inputs["spec"]
        assert job.inputs["metadata"]["name"] == certification_run_name(provisioning_hash)
        assert job.inputs["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == QUEUE
        assert spec["completions"] == 8, job.urn
        pod = spec["template"]["spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        pinned = terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
        assert pinned == [f"gpu00{i}" for i in range(1, 9)], job.urn
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "8", job.urn
        (queue,) = [r for r in _objects(monitor) if r.inputs["kind"] == "ClusterQueue"]
        quota = {
            q["name"]: q["nominalQuota"]
            for q in queue.inputs["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
        }
        # 8 GPU hosts x 8 GPUs, 224 CPUs and 2015 GiB each (preflight facts).
        assert quota == {"cpu": "1792", "memory": "16120Gi", "nvidia.com/gpu": "64"}, queue.urn
        (policy,) = [r for r in _objects(monitor) if r.inputs["kind"] == "NicClusterPolicy"]
        config = json.loads(policy.inputs["spec"]["rdmaSharedDevicePlugin"]["config"])
        assert config["configList"][0]["selectors"]["linkTypes"] == ["infiniband"], policy.urn

    return pulumi.Output.all(component.provisioning_hash, settled(component)).apply(
        lambda args: check(args[0])
    )
