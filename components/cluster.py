"""Cluster: the whole stack as one component, and the outputs `pulumi up` exports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import manifests, versions
from components.certification import Certification, CertificationArgs
from components.kube import manifest_resource
from components.monitoring import Monitoring, MonitoringArgs
from components.nodepool import NodePool, NodePoolArgs
from components.platform import PlatformServices, PlatformServicesArgs
from components.provisioning import Provisioning, ProvisioningArgs, playbook_secrets
from components.storage import SharedStorage, SharedStorageArgs
from kiln import certify, config, keyfiles
from kiln.drift import digest
from kiln.errors import UsageError
from kiln.plays import DriverOwner
from kiln.provision import ROLES_DIR


@dataclass
class ClusterArgs:
    """Inputs of Cluster: the stack config and what the config model does not hold."""

    cluster: config.Cluster
    """The validated stack config (`kiln.stack.cluster_from_keys`)."""
    kubeconfig: pulumi.Input[str] | None = None
    """Kubernetes stacks: the kubeconfig of the cluster, a Pulumi secret (`kiln:kubeconfig`)."""
    driver_owner: DriverOwner = "roles"
    """Who installs the GPU driver: the `nvidia_driver` role or the GPU Operator, never both."""
    certifier: certify.Certifier = certify.certify
    """Runs the validation suite; `kiln.certify.certify` is the integration seam."""
    validation_image: str = versions.VALIDATION_IMAGE
    """Kubernetes stacks: the image the certification Job runs."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied (tests point it at a copy)."""


def check_args(args: ClusterArgs) -> None:
    """What the program cannot build, said before any resource is registered."""
    cluster = args.cluster
    lab_pools = [p.name for p in cluster.lab_pools]
    if len(lab_pools) > 1:
        raise UsageError(
            f"kiln:cluster.nodePools: {', '.join(lab_pools)} are all lab pools; a stack has one "
            "lab (one id, bridge and subnet), so `pulumi up` takes one lab pool: merge them"
        )
    if cluster.scheduler == "kubernetes" and args.kubeconfig is None:
        raise UsageError(
            "scheduler kubernetes needs the cluster's kubeconfig: "
            "pulumi config set --secret kiln:kubeconfig < kubeconfig.yaml"
        )
    if args.driver_owner not in ("roles", "operator"):
        raise UsageError(f"GPU driver owner {args.driver_owner!r}: expected roles or operator")
    if args.driver_owner == "operator" and cluster.scheduler != "kubernetes":
        raise UsageError("the GPU Operator can own the driver only with scheduler: kubernetes")


class Cluster(pulumi.ComponentResource):
    """Node pools, provisioning, storage, monitoring, platform services and certification."""

    nodes: pulumi.Output[dict[str, Any]]
    """Every host: pool, address, node roles, preflight facts."""
    provisioning_hash: pulumi.Output[str]
    """Hash over every applied stage (node roles, storage, monitoring)."""
    certification: pulumi.Output[dict[str, Any]]
    """The certification record (`kiln.certify.record`)."""
    busbw_gbps: pulumi.Output[float | None]
    """Measured allreduce bus bandwidth (GB/s); None until certification measures it."""
    kubeconfig: pulumi.Output[str] | None
    """Kubernetes stacks: the kubeconfig, secret."""

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:cluster:Cluster", name, None, opts)
        check_args(args)
        cluster = args.cluster
        child = pulumi.ResourceOptions(parent=self)
        keys = keyfiles.private_keys(cluster)
        ssh_keys = pulumi.Output.secret(keys)

        self.node_pools = {
            pool.name: NodePool(
                f"{name}-{pool.name}",
                NodePoolArgs(
                    cluster,
                    pool,
                    pulumi.Output.secret(keys[pool.name]) if pool.name in keys else None,
                ),
                child,
            )
            for pool in cluster.node_pools
        }
        pools = list(self.node_pools.values())
        self.nodes = pulumi.Output.all(*[p.hosts for p in pools]).apply(
            lambda by_pool: {host: node for hosts in by_pool for host, node in hosts.items()}
        )
        facts_digest = pulumi.Output.all(*[p.facts_digest for p in pools]).apply(digest)

        self.provisioning = Provisioning(
            f"{name}-provisioning",
            ProvisioningArgs(cluster, self.node_pools, ssh_keys, args.roles_dir, args.driver_owner),
            child,
        )
        secrets = playbook_secrets(ssh_keys)
        stage = {
            "facts_digest": facts_digest,
            "secrets": secrets,
            "roles_dir": args.roles_dir,
            "driver_owner": args.driver_owner,
        }

        provider: k8s.Provider | None = None
        namespace: pulumi.Output[str] | None = None
        self.kubeconfig = None
        if cluster.scheduler == "kubernetes":
            self.kubeconfig = pulumi.Output.secret(args.kubeconfig)
            provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
            kiln_namespace = manifest_resource(
                f"{name}-namespace",
                manifests.namespace(manifests.KILN_NAMESPACE),
                pulumi.ResourceOptions(parent=self, provider=provider),
            )
            namespace = kiln_namespace.metadata.apply(lambda m: m["name"])

        hashes = {"node": self.provisioning.hash}
        after_nodes: list[pulumi.Resource] = [self.provisioning]
        self.storage = None
        if cluster.storage.kind != "none":
            self.storage = SharedStorage(
                f"{name}-storage",
                SharedStorageArgs(
                    cluster,
                    self.provisioning,
                    k8s_provider=provider,
                    namespace=namespace,
                    **stage,
                ),
                child,
            )
            hashes["storage"] = self.storage.hash
            after_nodes.append(self.storage)
        monitoring = cluster.monitoring
        self.monitoring = None
        if monitoring.prometheus or monitoring.node_exporter or monitoring.dcgm_exporter:
            self.monitoring = Monitoring(
                f"{name}-monitoring",
                MonitoringArgs(cluster, self.provisioning, k8s_provider=provider, **stage),
                child,
            )
            hashes["monitoring"] = self.monitoring.hash
            after_nodes.append(self.monitoring)
        self.provisioning_hash = pulumi.Output.all(**hashes).apply(digest)

        self.platform = None
        job = None
        if provider is not None and namespace is not None:
            self.platform = PlatformServices(
                f"{name}-platform",
                PlatformServicesArgs(
                    cluster,
                    provider,
                    namespace,
                    self.provisioning_hash,
                    self.nodes.apply(lambda nodes: {h: n["facts"] for h, n in nodes.items()}),
                    depends_on=list(after_nodes),
                    driver_owner=args.driver_owner,
                    validation_image=args.validation_image,
                ),
                child,
            )
            job = self.platform.job
            after_nodes.append(self.platform)

        self.certification_component = Certification(
            f"{name}-certification",
            CertificationArgs(
                cluster,
                self.provisioning_hash,
                depends_on=after_nodes,
                secrets=pulumi.Output.secret({"sshKeys": ssh_keys, "kubeconfig": self.kubeconfig}),
                job=job,
                certifier=args.certifier,
            ),
            child,
        )
        self.certification = self.certification_component.record
        self.busbw_gbps = self.certification_component.busbw_gbps
        self.register_outputs(
            {
                "nodes": self.nodes,
                "provisioningHash": self.provisioning_hash,
                "certification": self.certification,
                "busbwGbps": self.busbw_gbps,
            }
        )


def stack_outputs(cluster: Cluster) -> dict[str, Any]:
    """What `pulumi stack output` shows; the kubeconfig only on Kubernetes, and secret."""
    outputs: dict[str, Any] = {
        "nodes": cluster.nodes,
        "provisioning": cluster.provisioning.hosts,
        "provisioningHash": cluster.provisioning_hash,
        "allreduceBusbwGbps": cluster.busbw_gbps,
        "certification": cluster.certification,
    }
    if cluster.kubeconfig is not None:
        outputs["kubeconfig"] = cluster.kubeconfig
    return outputs
