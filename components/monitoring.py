"""Monitoring: exporters and Prometheus by the roles; on Kubernetes, kube-prometheus-stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import manifests, versions
from components.kube import helm_release, manifest_resource
from components.provisioning import Provisioning, stage_playbook
from kiln.config import Cluster
from kiln.plays import DriverOwner
from kiln.provision import ROLES_DIR

MONITORING_NAMESPACE = "monitoring"


@dataclass
class MonitoringArgs:
    """Inputs of Monitoring."""

    cluster: Cluster
    """The stack config; `monitoring` says what to run."""
    provisioning: Provisioning
    """Runs after the nodes are provisioned."""
    facts_digest: pulumi.Input[str]
    """Hash of every host's facts."""
    secrets: pulumi.Input[Mapping[str, Any]]
    """Playbook secrets (SSH keys), a Pulumi secret."""
    k8s_provider: k8s.Provider | None = None
    """Kubernetes stacks: the explicit provider for the chart."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied."""
    driver_owner: DriverOwner = "roles"
    """Who installs the GPU driver (decides which roles the plays exclude)."""


class Monitoring(pulumi.ComponentResource):
    """The monitoring roles on every host, plus kube-prometheus-stack on Kubernetes."""

    hosts: pulumi.Output[dict[str, Any]]
    """Ansible's recap per host."""
    hash: pulumi.Output[str]
    """The monitoring stage's applied hash."""
    release: k8s.helm.v3.Release | None
    """Kubernetes stacks: kube-prometheus-stack (its CRDs serve the GPU Operator's monitors)."""

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:monitoring:Monitoring", name, None, opts)
        cluster = args.cluster
        self.roles = stage_playbook(
            f"{name}-roles",
            cluster,
            "monitoring",
            roles_dir=args.roles_dir,
            driver_owner=args.driver_owner,
            facts_digest=args.facts_digest,
            secrets=args.secrets,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.provisioning]),
        )
        self.hosts = self.roles.summary
        self.hash = self.roles.hash
        self.release = None
        if args.k8s_provider is not None and cluster.monitoring.prometheus:
            k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
            namespace = manifest_resource(
                f"{name}-namespace", manifests.namespace(MONITORING_NAMESPACE), k8s_opts
            )
            self.release = helm_release(
                f"{name}-kube-prometheus-stack",
                versions.KUBE_PROMETHEUS_STACK,
                namespace.metadata.apply(lambda m: m["name"]),
                manifests.kube_prometheus_values(cluster),
                k8s_opts,
            )
            if cluster.monitoring.dcgm_exporter and manifests.gpu_pools(cluster):
                manifest_resource(
                    f"{name}-dcgm-dashboard",
                    manifests.dcgm_dashboard(MONITORING_NAMESPACE),
                    pulumi.ResourceOptions.merge(
                        k8s_opts, pulumi.ResourceOptions(depends_on=[namespace])
                    ),
                )
        self.register_outputs({"hosts": self.hosts, "hash": self.hash})
