"""The resource graph of each example stack is what its config asks for."""

from __future__ import annotations

from collections import Counter

import pulumi
import pytest

from components.mocks import (
    CERTIFICATION_RUN,
    K8S_PROVIDER,
    LAB_MACHINES,
    MUNGE_KEY,
    PLAYBOOK,
    PREFLIGHT,
    RELEASE,
    RecordingMonitor,
    settled,
)
from tests.pulumi.harness import STACKS, build, stack_cluster

pytestmark = pytest.mark.pulumi

KUEUE = "kubernetes:kueue.x-k8s.io/v1beta1:"

# Written out from the stack files, not derived from the code under test.
EXPECTED_TYPES = {
    "lab": {
        "kiln:cluster:Cluster": 1,
        "kiln:nodepool:NodePool": 1,  # pool lab
        LAB_MACHINES: 1,  # ctl1, node1, node2 as one lab
        "kiln:provisioning:Provisioning": 1,
        PLAYBOOK: 3,  # node stage on pool lab + storage (glusterfs on ctl1) + monitoring
        MUNGE_KEY: 1,  # slurm
        "kiln:storage:SharedStorage": 1,
        "kiln:monitoring:Monitoring": 1,
        "kiln:certification:Certification": 1,
        CERTIFICATION_RUN: 1,
    },
    "staging": {
        "kiln:cluster:Cluster": 1,
        "kiln:nodepool:NodePool": 2,  # ctl, a100
        PREFLIGHT: 5,  # 1 controller + 4 A100 hosts
        "kiln:provisioning:Provisioning": 1,
        PLAYBOOK: 4,  # node stage x 2 pools + storage + monitoring
        MUNGE_KEY: 1,
        "kiln:storage:SharedStorage": 1,
        "kiln:monitoring:Monitoring": 1,
        "kiln:certification:Certification": 1,
        CERTIFICATION_RUN: 1,
    },
    "prod": {
        "kiln:cluster:Cluster": 1,
        "kiln:nodepool:NodePool": 2,  # ctl, h100
        PREFLIGHT: 9,
        "kiln:provisioning:Provisioning": 1,
        PLAYBOOK: 4,
        "kiln:storage:SharedStorage": 1,
        "kiln:monitoring:Monitoring": 1,
        "kiln:platform:PlatformServices": 1,
        "kiln:certification:Certification": 1,
        CERTIFICATION_RUN: 1,
        K8S_PROVIDER: 1,
        # NFD, GPU Operator, Network Operator (InfiniBand), Kueue, kube-prometheus-stack
        RELEASE: 5,
        # kiln, monitoring, node-feature-discovery, gpu-operator, network operator, kueue
        "kubernetes:core/v1:Namespace": 6,
        "kubernetes:core/v1:ConfigMap": 1,  # DCGM dashboard
        "kubernetes:core/v1:PersistentVolume": 1,  # NFS datasets
        "kubernetes:core/v1:PersistentVolumeClaim": 1,
        "kubernetes:core/v1:Service": 1,  # certification rendezvous
        "kubernetes:batch/v1:Job": 1,  # certification
        "kubernetes:kustomize/v2:Directory": 1,  # training operator
        KUEUE + "ResourceFlavor": 1,
        KUEUE + "ClusterQueue": 1,
        KUEUE + "LocalQueue": 1,
        "kubernetes:mellanox.com/v1alpha1:NicClusterPolicy": 1,
    },
}


def _parent_name(monitor: RecordingMonitor, urn: str) -> str:
    return next(r.name for r in monitor.registrations if r.urn == urn)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_resource_types_and_counts_match_the_stack(monitor: RecordingMonitor, stack: str):
    cluster = stack_cluster(stack)
    component = build(monitor, cluster)

    def check(_):
        counts = Counter(r.type for r in monitor.registrations if not r.type.startswith("test:"))
        assert dict(counts) == EXPECTED_TYPES[stack], f"stack {stack}: {component._name}"

    return settled(component).apply(check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_names_and_parents_follow_the_pools_and_hosts(monitor: RecordingMonitor, stack: str):
    cluster = stack_cluster(stack)
    component = build(monitor, cluster)

    def check(_):
        root = monitor.named(cluster.name)
        for pool in cluster.node_pools:
            node_pool = monitor.named(f"{cluster.name}-{pool.name}")
            assert node_pool.parent == root.urn, node_pool.urn
            if pool.provider == "static":
                for host in pool.hosts:
                    preflight = monitor.named(f"{cluster.name}-{pool.name}-{host.name}")
                    assert preflight.type == PREFLIGHT, preflight.urn
                    assert preflight.parent == node_pool.urn, preflight.urn
                    assert preflight.inputs["address"] == str(host.address), preflight.urn
            else:
                machines = monitor.named(f"{cluster.name}-{pool.name}-machines")
                assert machines.parent == node_pool.urn, machines.urn
                assert [h["name"] for h in machines.inputs["hosts"]] == [h.name for h in pool.hosts]
            run = monitor.named(f"{cluster.name}-provisioning-{pool.name}")
            assert _parent_name(monitor, run.parent) == f"{cluster.name}-provisioning", run.urn
            assert run.inputs["limit"] == [h.name for h in pool.hosts], run.urn
        # Every resource lives inside the Cluster component's tree.
        for r in monitor.registrations:
            if r.type.startswith("test:") or r.urn == root.urn:
                continue
            assert r.name.startswith(f"{cluster.name}-"), r.urn
            assert r.parent, f"{r.urn} has no parent"

    return settled(component).apply(check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_certification_runs_after_every_provisioning_step(monitor: RecordingMonitor, stack: str):
    cluster = stack_cluster(stack)
    component = build(monitor, cluster)

    def check(_):
        (run,) = monitor.of_type(CERTIFICATION_RUN)
        playbooks = {r.urn for r in monitor.of_type(PLAYBOOK)}
        missing = playbooks - set(run.dependencies)
        assert not missing, f"{run.urn} does not wait for {sorted(missing)}"
        if cluster.scheduler == "kubernetes":
            (job,) = monitor.of_type("kubernetes:batch/v1:Job")
            assert job.urn in run.dependencies, run.urn

    return settled(component).apply(check)


@pulumi.runtime.test
def test_pools_with_servers_are_provisioned_before_the_others(monitor: RecordingMonitor):
    # slurmctld (pool ctl) must be up before any slurmd (pool a100) registers.
    cluster = stack_cluster("staging")
    component = build(monitor, cluster)

    def check(_):
        ctl = monitor.named(f"{cluster.name}-provisioning-ctl")
        gpu = monitor.named(f"{cluster.name}-provisioning-a100")
        assert ctl.urn in gpu.dependencies, gpu.urn
        assert gpu.urn not in ctl.dependencies, ctl.urn

    return settled(component).apply(check)


@pulumi.runtime.test
def test_kubernetes_resources_use_the_stacks_explicit_provider(monitor: RecordingMonitor):
    cluster = stack_cluster("prod")
    component = build(monitor, cluster)

    def check(_):
        (provider,) = monitor.of_type(K8S_PROVIDER)
        assert provider.wire["kubeconfig"], provider.urn
        kube = [r for r in monitor.registrations if r.type.startswith("kubernetes:")]
        expected = sum(n for t, n in EXPECTED_TYPES["prod"].items() if t.startswith("kubernetes:"))
        assert len(kube) == expected, [r.urn for r in kube]
        for r in kube:
            assert r.provider.startswith(provider.urn + "::"), f"{r.urn} uses {r.provider!r}"

    return settled(component).apply(check)


@pytest.mark.parametrize("stack", ["lab", "staging"])
@pulumi.runtime.test
def test_slurm_stacks_create_no_kubernetes_resources(monitor: RecordingMonitor, stack: str):
    component = build(monitor, stack_cluster(stack))

    def check(_):
        kube = [r.urn for r in monitor.registrations if "kubernetes" in r.type]
        assert kube == [], kube

    return settled(component).apply(check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_outputs_list_every_host_and_the_measured_busbw(monitor: RecordingMonitor, stack: str):
    cluster = stack_cluster(stack)
    component = build(monitor, cluster)

    def check(args):
        nodes, busbw, record = args
        assert sorted(nodes) == sorted(h.name for h in cluster.hosts), component._name
        for host in cluster.hosts:
            node = nodes[host.name]
            assert node["address"] == str(host.address), host.name
            assert node["facts"]["hostname"] == host.name, host.name
        assert isinstance(busbw, float) and busbw > 0, busbw
        assert record["status"] == "pass" and record["busbwGbps"] == busbw, record

    return pulumi.Output.all(component.nodes, component.busbw_gbps, component.certification).apply(
        check
    )
