"""PlatformServices: what a Kubernetes GPU cluster needs to run and certify training jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kube import KubernetesTarget, helm_release, manifest_resource
from kiln.config import Cluster
from kiln.kubernetes import helm_values, objects, versions
from kiln.kubernetes.certification_job import certification_job
from kiln.kubernetes.kueue import kueue_objects
from kiln.kubernetes.pools import gpu_pools, rdma_pools


@dataclass
class PlatformServicesArgs:
    """Inputs of PlatformServices."""

    cluster: Cluster
    """The stack config (scheduler: kubernetes)."""
    kubernetes: KubernetesTarget
    """The stack's explicit provider, and the Kiln namespace (its LocalQueue and the Job)."""
    provisioning_hash: pulumi.Input[str]
    """What the nodes were provisioned with; a new hash runs a new certification Job."""
    node_facts: pulumi.Input[Mapping[str, Any]]
    """Preflight facts by host name (Kueue's CPU and memory quota)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)
    """What must be in place first: provisioning, and monitoring (its CRDs)."""
    validation_image: str = versions.VALIDATION_IMAGE
    """Image of the certification Job (validation/ with torch)."""


class PlatformServices(pulumi.ComponentResource):
    """NFD, GPU and Network Operators, Kueue, the training operator and the certification Job."""

    job: pulumi.Output[dict[str, str]]
    """`{namespace, name}` of this provisioning's certification Job."""
    releases: dict[str, k8s.helm.v3.Release]
    """Helm releases by chart name."""

    def __init__(
        self, name: str, args: PlatformServicesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:platform:PlatformServices", name, None, opts)
        cluster = args.cluster
        base = pulumi.ResourceOptions(
            parent=self, provider=args.kubernetes.provider, depends_on=list(args.depends_on)
        )

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=resources))

        def namespace(short: str, ns: str, privileged: bool = False) -> pulumi.Output[str]:
            resource = manifest_resource(
                f"{name}-ns-{short}", objects.namespace(ns, privileged), base
            )
            return resource.metadata.apply(lambda m: m["name"])

        self.releases = {}
        nfd = helm_release(
            f"{name}-node-feature-discovery",
            versions.NODE_FEATURE_DISCOVERY,
            namespace("nfd", "node-feature-discovery"),
            helm_values.nfd_values(),
            base,
        )
        self.releases["node-feature-discovery"] = nfd
        operators: list[pulumi.Resource] = [nfd]
        if gpu_pools(cluster):
            gpu = helm_release(
                f"{name}-gpu-operator",
                versions.GPU_OPERATOR,
                namespace("gpu", "gpu-operator", privileged=True),
                helm_values.gpu_operator_values(cluster),
                after(nfd),
                # An operator-owned driver is compiled on every node before it is ready.
                timeout_s=1800,
            )
            self.releases["gpu-operator"] = gpu
            operators.append(gpu)
        if rdma_pools(cluster):
            network = helm_release(
                f"{name}-network-operator",
                versions.NETWORK_OPERATOR,
                namespace("network", "nvidia-network-operator", privileged=True),
                helm_values.network_operator_values(),
                after(nfd),
            )
            self.releases["network-operator"] = network
            operators.append(
                manifest_resource(
                    f"{name}-nic-cluster-policy",
                    objects.nic_cluster_policy(cluster),
                    after(network),
                )
            )

        kueue = helm_release(
            f"{name}-kueue",
            versions.KUEUE,
            namespace("kueue", "kueue-system"),
            helm_values.kueue_values(),
            base,
        )
        self.releases["kueue"] = kueue
        queue_objects = pulumi.Output.all(args.node_facts, args.kubernetes.namespace).apply(
            lambda values: kueue_objects(cluster, values[0])
        )
        queues = []
        for index, kind in enumerate(("ResourceFlavor", "ClusterQueue", "LocalQueue")):
            queues.append(
                manifest_resource(
                    f"{name}-{kind.lower()}",
                    queue_objects.apply(lambda objs, i=index: objs[i]),
                    after(kueue, *queues),
                    kind=kind,
                    api_version=versions.KUEUE_API,
                )
            )
        training = k8s.kustomize.v2.Directory(
            f"{name}-training-operator", directory=versions.TRAINING_OPERATOR, opts=base
        )

        # The namespace is an input too, so the Job waits for it.
        run = pulumi.Output.all(args.provisioning_hash, args.kubernetes.namespace).apply(
            lambda values: certification_job(cluster, args.validation_image, values[0])
        )
        ready = [*operators, *queues, training]
        service = manifest_resource(
            f"{name}-certification-service",
            run.apply(lambda objs: objs[0]),
            after(*ready),
            kind="Service",
            api_version="v1",
        )
        job = manifest_resource(
            f"{name}-certification-job",
            run.apply(lambda objs: objs[1]),
            after(*ready, service),
            kind="Job",
            api_version="batch/v1",
        )
        self.job = job.metadata.apply(lambda m: {"namespace": m["namespace"], "name": m["name"]})
        self.register_outputs({"job": self.job})
