"""Monitoring: exporters and Prometheus by the roles; on Kubernetes, kube-prometheus-stack."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kube import helm_release, manifest_resource
from components.stage import StageArgs, stage_playbook
from kiln.kubernetes import versions
from kiln.kubernetes.helm_values import kube_prometheus_values
from kiln.kubernetes.objects import MONITORING_NAMESPACE, dcgm_dashboard, namespace
from kiln.kubernetes.pools import gpu_pools


class Monitoring(pulumi.ComponentResource):
    """The monitoring roles on every host, plus kube-prometheus-stack on Kubernetes."""

    hosts: pulumi.Output[dict[str, Any]]
    """Ansible's recap per host."""
    hash: pulumi.Output[str]
    """The monitoring stage's applied hash."""
    release: k8s.helm.v3.Release | None
    """Kubernetes stacks: kube-prometheus-stack (its CRDs serve the GPU Operator's monitors)."""

    def __init__(
        self, name: str, args: StageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:monitoring:Monitoring", name, None, opts)
        cluster = args.cluster
        self.roles = stage_playbook(self, f"{name}-roles", args, "monitoring")
        self.hosts = self.roles.summary
        self.hash = self.roles.hash
        self.release = None
        if args.kubernetes is not None and cluster.monitoring.prometheus:
            k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.kubernetes.provider)
            monitoring_namespace = manifest_resource(
                f"{name}-namespace", namespace(MONITORING_NAMESPACE), k8s_opts
            )
            self.release = helm_release(
                f"{name}-kube-prometheus-stack",
                versions.KUBE_PROMETHEUS_STACK,
                monitoring_namespace.metadata.apply(lambda m: m["name"]),
                kube_prometheus_values(cluster),
                k8s_opts,
            )
            if cluster.monitoring.dcgm_exporter and gpu_pools(cluster):
                manifest_resource(
                    f"{name}-dcgm-dashboard",
                    dcgm_dashboard(MONITORING_NAMESPACE),
                    pulumi.ResourceOptions.merge(
                        k8s_opts, pulumi.ResourceOptions(depends_on=[monitoring_namespace])
                    ),
                )
        self.register_outputs({"hosts": self.hosts, "hash": self.hash})
