"""Kubernetes objects besides the queues and the Job: namespaces, NIC policy, volume, dashboard."""

from __future__ import annotations

import json
from typing import Any

from kiln.config import Cluster
from kiln.kubernetes import versions
from kiln.kubernetes.pools import rdma_pools

KILN_NAMESPACE = "kiln"
"""Where the LocalQueue, the datasets claim and the certification Job live."""
MONITORING_NAMESPACE = "monitoring"
"""kube-prometheus-stack and its dashboards."""
RDMA_RESOURCE = "rdma/rdma_shared_device_a"
DASHBOARD_LABEL = "grafana_dashboard"
"""The label Grafana's sidecar loads dashboards by (set in kube-prometheus-stack's values)."""


def namespace(name: str, privileged: bool = False) -> dict[str, Any]:
    """A Namespace; `privileged` for operators whose pods load drivers or use host devices."""
    labels = {"app.kubernetes.io/managed-by": "kiln"}
    if privileged:
        # Pod Security Admission would reject the driver and device-plugin pods.
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def nic_cluster_policy(cluster: Cluster) -> dict[str, Any]:
    """RDMA shared device plugin on every Mellanox NIC of the stack's fabric types."""
    link_types = sorted(
        {"infiniband" if p.rdma.fabric == "infiniband" else "ether" for p in rdma_pools(cluster)}
    )
    config = {
        "configList": [
            {
                "resourceName": RDMA_RESOURCE.split("/", 1)[1],
                "rdmaHcaMax": 63,
                "selectors": {"vendors": ["15b3"], "linkTypes": link_types},
            }
        ]
    }
    return {
        "apiVersion": versions.NIC_CLUSTER_POLICY_API,
        "kind": "NicClusterPolicy",
        "metadata": {"name": "nic-cluster-policy"},
        "spec": {
            "rdmaSharedDevicePlugin": {
                **versions.RDMA_SHARED_DEVICE_PLUGIN,
                "imagePullSecrets": [],
                "config": json.dumps(config, indent=2),
            }
        },
    }


def datasets_volume(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The shared NFS export as a PersistentVolume and its claim (ReadWriteMany)."""
    storage = cluster.storage
    name = f"{cluster.name}-datasets"
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": "1Ti"},  # not enforced for NFS; required by the API
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "nfs": {"server": storage.server, "path": storage.export},
    }
    if storage.options:
        pv_spec["mountOptions"] = list(storage.options)
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": pv_spec,
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "datasets", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": name,  # bind to exactly this volume, never a dynamic one
                "resources": {"requests": {"storage": "1Ti"}},
            },
        },
    ]


def dcgm_dashboard(namespace: str) -> dict[str, Any]:
    """A Grafana dashboard of the DCGM exporter's GPU metrics, loaded by the sidecar."""
    panels = [
        ("GPU utilization (%)", "DCGM_FI_DEV_GPU_UTIL"),
        ("Tensor core activity", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
        ("Framebuffer used (MiB)", "DCGM_FI_DEV_FB_USED"),
        ("Power (W)", "DCGM_FI_DEV_POWER_USAGE"),
        ("Temperature (C)", "DCGM_FI_DEV_GPU_TEMP"),
        ("NVLink bandwidth (B/s)", "DCGM_FI_PROF_NVLINK_TX_BYTES + DCGM_FI_PROF_NVLINK_RX_BYTES"),
        ("PCIe bandwidth (B/s)", "DCGM_FI_PROF_PCIE_TX_BYTES + DCGM_FI_PROF_PCIE_RX_BYTES"),
        ("XID errors", "DCGM_FI_DEV_XID_ERRORS"),
    ]
    dashboard = {
        "title": "Kiln / GPUs (DCGM)",
        "uid": "kiln-dcgm",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
                "targets": [{"expr": expr, "legendFormat": "{{Hostname}} GPU{{gpu}}"}],
            }
            for i, (title, expr) in enumerate(panels)
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "kiln-dcgm-dashboard",
            "namespace": namespace,
            "labels": {DASHBOARD_LABEL: "1"},
        },
        "data": {"kiln-dcgm.json": json.dumps(dashboard, indent=1)},
    }
