"""Cluster: the whole stack as one component, and the outputs `pulumi up` exports."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from components.certification import Certification, CertificationArgs
from components.kube import KubernetesTarget, kubernetes_target
from components.monitoring import Monitoring
from components.nodepool import NodePool, NodePoolArgs
from components.platform import PlatformServices, PlatformServicesArgs
from components.provisioning import Provisioning, ProvisioningArgs, playbook_secrets
from components.stage import StageArgs
from components.storage import SharedStorage
from kiln import certify, config, keyfiles, monitoring_web
from kiln.deployment import DeploymentPlan, PlannedStage, StageKey, plan_deployment
from kiln.drift import digest
from kiln.kubernetes import versions
from kiln.provision import ROLES_DIR


@dataclass
class ClusterArgs:
    """Inputs of Cluster: the stack config and what the config model does not hold."""

    cluster: config.Cluster
    """The validated stack config (`kiln.stack.cluster_from_keys`)."""
    kubeconfig: pulumi.Input[str] | None = None
    """Kubernetes stacks: the kubeconfig of the cluster, a Pulumi secret (`kiln:kubeconfig`)."""
    certifier: certify.Certifier = certify.certify
    """Runs the validation suite; `kiln.certify.certify` is the integration seam."""
    validation_image: str = versions.VALIDATION_IMAGE
    """Kubernetes stacks: the image the certification Job runs."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied (tests point it at a copy)."""

    def plan(self) -> DeploymentPlan:
        """The stages to build; UsageError for what cannot be built (before any resource)."""
        return plan_deployment(
            self.cluster,
            has_kubeconfig=self.kubeconfig is not None,
            roles_dir=self.roles_dir,
            validation_image=self.validation_image,
        )


class Cluster(pulumi.ComponentResource):
    """Node pools, then one component per stage of `kiln.deployment.plan_deployment`."""

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
    provisioning: Provisioning
    storage: SharedStorage | None
    monitoring: Monitoring | None
    platform: PlatformServices | None
    certification_component: Certification

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:cluster:Cluster", name, None, opts)
        plan = args.plan()
        keys = keyfiles.private_keys(plan.cluster)
        self.node_pools = _node_pools(self, name, plan.cluster, keys)
        self.nodes = pulumi.Output.all(*[p.hosts for p in self.node_pools.values()]).apply(
            lambda by_pool: {host: node for hosts in by_pool for host, node in hosts.items()}
        )
        self.kubeconfig = pulumi.Output.secret(args.kubeconfig) if plan.kubernetes else None
        stages = _Stages(
            self, name, plan, self.node_pools, self.nodes, keys, self.kubeconfig, args.certifier
        )
        for stage in plan.stages:
            stages.build(stage)
        self.provisioning = stages.built["node"]
        self.storage = stages.built.get("storage")
        self.monitoring = stages.built.get("monitoring")
        self.platform = stages.built.get("platform")
        self.certification_component = stages.built["certification"]
        self.provisioning_hash = stages.provisioning_hash
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


def _node_pools(
    parent: Cluster, name: str, cluster: config.Cluster, keys: Mapping[str, str]
) -> dict[str, NodePool]:
    """One NodePool per pool, `<name>-<pool>`, with its SSH key as a Pulumi secret."""
    return {
        pool.name: NodePool(
            f"{name}-{pool.name}",
            NodePoolArgs(
                cluster,
                pool,
                pulumi.Output.secret(keys[pool.name]) if pool.name in keys else None,
            ),
            pulumi.ResourceOptions(parent=parent),
        )
        for pool in cluster.node_pools
    }


@dataclass
class _Stages:
    """Builds the plan's stages in its order: a component each, after the stages it names."""

    parent: Cluster
    name: str
    plan: DeploymentPlan
    node_pools: Mapping[str, NodePool]
    nodes: pulumi.Output[dict[str, Any]]
    ssh_keys: Mapping[str, str]
    """Static pools' SSH private keys by pool name (made Pulumi secrets here)."""
    kubeconfig: pulumi.Output[str] | None
    certifier: certify.Certifier
    built: dict[StageKey, Any] = field(default_factory=dict)
    """The component of each stage built so far (Provisioning, SharedStorage, ...)."""

    def __post_init__(self) -> None:
        pools = self.node_pools.values()
        self.facts_digest = pulumi.Output.all(*[p.facts_digest for p in pools]).apply(digest)
        self.secret_keys = pulumi.Output.secret(self.ssh_keys)
        # The storage and monitoring stages' secrets: SSH keys, and the monitoring's
        # basic auth and TLS (kiln.monitoring_web) for the exporters and Prometheus.
        web = monitoring_web.provision_vars(self.plan.cluster)
        self.playbook_secrets = playbook_secrets(
            self.secret_keys, pulumi.Output.secret(web) if web else None
        )
        self.child = pulumi.ResourceOptions(parent=self.parent)
        # The explicit provider and the Kiln namespace, for every stage's Kubernetes side.
        self.kubernetes: KubernetesTarget | None = None
        if self.kubeconfig is not None:
            self.kubernetes = kubernetes_target(self.name, self.kubeconfig, self.parent)

    def build(self, stage: PlannedStage) -> None:
        builders: dict[StageKey, Callable[[str, PlannedStage], Any]] = {
            "node": self._provisioning,
            "storage": self._storage,
            "monitoring": self._monitoring,
            "platform": self._platform,
            "certification": self._certification,
        }
        self.built[stage.key] = builders[stage.key](f"{self.name}-{stage.name}", stage)

    def after(self, stage: PlannedStage) -> list[pulumi.Resource]:
        return [self.built[key] for key in stage.after]

    @functools.cached_property
    def provisioning_hash(self) -> pulumi.Output[str]:
        """Over the hashed stages; the plan builds them all before a stage that reads this."""
        hashes = {key: self.built[key].hash for key in self.plan.hashed}
        return pulumi.Output.all(**hashes).apply(digest)

    def _provisioning(self, name: str, stage: PlannedStage) -> Provisioning:
        plan = self.plan
        return Provisioning(
            name,
            ProvisioningArgs(plan.cluster, self.node_pools, self.secret_keys, plan.roles_dir),
            self.child,
        )

    def _storage(self, name: str, stage: PlannedStage) -> SharedStorage:
        return SharedStorage(name, self._stage_args(stage), self.child)

    def _monitoring(self, name: str, stage: PlannedStage) -> Monitoring:
        return Monitoring(name, self._stage_args(stage), self.child)

    def _stage_args(self, stage: PlannedStage) -> StageArgs:
        return StageArgs(
            self.plan.cluster,
            depends_on=self.after(stage),
            facts_digest=self.facts_digest,
            secrets=self.playbook_secrets,
            kubernetes=self.kubernetes,
            roles_dir=self.plan.roles_dir,
        )

    def _platform(self, name: str, stage: PlannedStage) -> PlatformServices:
        if self.kubernetes is None:
            raise ValueError(f"{name}: the platform stage needs the stack's kubeconfig")
        return PlatformServices(
            name,
            PlatformServicesArgs(
                self.plan.cluster,
                self.kubernetes,
                self.provisioning_hash,
                self.nodes.apply(lambda nodes: {h: n["facts"] for h, n in nodes.items()}),
                depends_on=self.after(stage),
                validation_image=self.plan.validation_image,
            ),
            self.child,
        )

    def _certification(self, name: str, stage: PlannedStage) -> Certification:
        platform: PlatformServices | None = self.built.get("platform")
        return Certification(
            name,
            CertificationArgs(
                self.plan.cluster,
                self.provisioning_hash,
                depends_on=self.after(stage),
                secrets=pulumi.Output.secret(
                    {"sshKeys": self.secret_keys, "kubeconfig": self.kubeconfig}
                ),
                job=platform.job if platform else None,
                certifier=self.certifier,
            ),
            self.child,
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
