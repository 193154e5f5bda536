"""The values Kiln installs each Helm chart with (the charts are pinned in `versions`)."""

from __future__ import annotations

from typing import Any

from kiln import role_defaults
from kiln.config import Cluster
from kiln.kubernetes.objects import DASHBOARD_LABEL
from kiln.kubernetes.pools import gpu_pools, rdma_pools


def gpu_operator_values(cluster: Cluster) -> dict[str, Any]:
    """GPU Operator values; the driver is the roles' or the operator's, never both."""
    operator_driver = cluster.gpu_driver_owner == "operator"
    driver: dict[str, Any] = {"enabled": operator_driver}
    if operator_driver:
        pinned = {p.gpu.driver for p in gpu_pools(cluster) if p.gpu}
        if len(pinned) == 1:
            driver["version"] = pinned.pop()
        # GPUDirect RDMA: with the driver in a container, nvidia-peermem comes from it too.
        driver["rdma"] = {"enabled": bool(rdma_pools(cluster)), "useHostMofed": True}
    monitoring = cluster.monitoring
    return {
        "nfd": {"enabled": False},  # node-feature-discovery is its own release
        "driver": driver,
        # The container toolkit goes with the driver: the operator's containers or the
        # roles' host packages (container_toolkit), never both on one node.
        "toolkit": {"enabled": operator_driver},
        "devicePlugin": {"enabled": True},
        "dcgmExporter": {
            "enabled": monitoring.dcgm_exporter,
            "serviceMonitor": {"enabled": monitoring.dcgm_exporter and monitoring.prometheus},
        },
    }


def network_operator_values() -> dict[str, Any]:
    """Network Operator values: NFD is shared, the NicClusterPolicy is a resource of ours."""
    return {"nfd": {"enabled": False}, "deployCR": False}


def nfd_values() -> dict[str, Any]:
    return {"worker": {"tolerations": [{"operator": "Exists"}]}}


def kueue_values() -> dict[str, Any]:
    return {"enablePrometheus": False}


def kube_prometheus_values(cluster: Cluster) -> dict[str, Any]:
    """kube-prometheus-stack values; scrapes the node_exporter the roles run on each host."""
    host_exporters = cluster.monitoring.node_exporter
    spec: dict[str, Any] = {
        "retention": cluster.monitoring.retention,
        # Pick up ServiceMonitors of other releases (the GPU Operator's DCGM exporter).
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
    }
    if host_exporters:
        port = role_defaults.node_exporter_port()
        spec["additionalScrapeConfigs"] = [
            {
                "job_name": "kiln-node-exporter",
                "static_configs": [
                    {
                        "targets": [f"{h.address}:{port}" for h in cluster.hosts],
                        "labels": {"cluster": cluster.name},
                    }
                ],
            }
        ]
    return {
        "prometheus": {"prometheusSpec": spec},
        # The node_exporter role already listens on every host's network (its
        # node_exporter_listen_address); the chart's DaemonSet would collide with it.
        "nodeExporter": {"enabled": not host_exporters},
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL}}},
    }
