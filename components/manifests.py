"""Kubernetes objects and Helm values of a stack, as plain dicts.

The components create resources from exactly these dicts, and the tests
validate the same dicts against the Kubernetes schemas: what is checked is
what is deployed. Nothing here imports Pulumi.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from components import versions
from kiln.config import Cluster, NodePool
from kiln.plays import DriverOwner

KILN_NAMESPACE = "kiln"
QUEUE = "kiln"
FLAVOR = "default-flavor"
RDMA_RESOURCE = "rdma/rdma_shared_device_a"
DASHBOARD_LABEL = "grafana_dashboard"
NODE_EXPORTER_PORT = 9100


def namespace(name: str, privileged: bool = False) -> dict[str, Any]:
    """A Namespace; `privileged` for operators whose pods load drivers or use host devices."""
    labels = {"app.kubernetes.io/managed-by": "kiln"}
    if privileged:
        # Pod Security Admission would reject the driver and device-plugin pods.
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def gpu_pools(cluster: Cluster) -> list[NodePool]:
    return [p for p in cluster.node_pools if p.gpu]


def rdma_pools(cluster: Cluster) -> list[NodePool]:
    return [p for p in cluster.node_pools if p.rdma.fabric != "none"]


# -- Helm values -----------------------------------------------------------------


def gpu_operator_values(cluster: Cluster, driver_owner: DriverOwner) -> dict[str, Any]:
    """GPU Operator values; the driver is the roles' or the operator's, never both."""
    operator_driver = driver_owner == "operator"
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
        "toolkit": {"enabled": True},
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
        spec["additionalScrapeConfigs"] = [
            {
                "job_name": "kiln-node-exporter",
                "static_configs": [
                    {
                        "targets": [f"{h.address}:{NODE_EXPORTER_PORT}" for h in cluster.hosts],
                        "labels": {"cluster": cluster.name},
                    }
                ],
            }
        ]
    return {
        "prometheus": {"prometheusSpec": spec},
        # The node_exporter role already listens on :9100 of every host; the
        # chart's DaemonSet would collide with it on the host network.
        "nodeExporter": {"enabled": not host_exporters},
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL}}},
    }


# -- objects ---------------------------------------------------------------------


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


def kueue_objects(cluster: Cluster, facts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """ResourceFlavor, ClusterQueue (quota = the stack's compute hosts) and LocalQueue.

    `facts` are the hosts' preflight facts; CPU and memory quotas come from them.
    """
    compute = [(p, h) for p in cluster.node_pools for h in p.hosts if "compute" in h.roles]
    # int(): facts cross Pulumi's wire as JSON numbers, which arrive as floats.
    cpus = sum(int((facts.get(h.name) or {}).get("cpus") or 0) for _, h in compute)
    memory = sum(int((facts.get(h.name) or {}).get("memory_gib") or 0) for _, h in compute)
    gpus = sum(p.gpu.per_node for p, _ in compute if p.gpu)
    resources = [
        {"name": "cpu", "nominalQuota": str(cpus)},
        {"name": "memory", "nominalQuota": f"{memory}Gi"},
    ]
    if gpus:
        resources.append({"name": "nvidia.com/gpu", "nominalQuota": str(gpus)})
    return [
        {
            "apiVersion": versions.KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": FLAVOR},
            "spec": {},  # one flavor for all nodes: no node labels to match
        },
        {
            "apiVersion": versions.KUEUE_API,
            "kind": "ClusterQueue",
            "metadata": {"name": QUEUE},
            "spec": {
                "namespaceSelector": {},
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": [r["name"] for r in resources],
                        "flavors": [{"name": FLAVOR, "resources": resources}],
                    }
                ],
            },
        },
        {
            "apiVersion": versions.KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": KILN_NAMESPACE},
            "spec": {"clusterQueue": QUEUE},
        },
    ]


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


def certification_run_name(provisioning_hash: str) -> str:
    """The certification Job of a provisioning: a new hash, a new Job (a new run)."""
    return f"kiln-cert-{provisioning_hash[:10]}"


def certification_job(cluster: Cluster, image: str, provisioning_hash: str) -> list[dict[str, Any]]:
    """Headless Service and indexed Job running the allreduce sweep on the compute hosts.

    Rendered by the validation suite's own Kubernetes launcher, so this Job
    and the one `validation` documents are the same.
    """
    # validation.launch imports torch; only Kubernetes stacks pay for it.
    from kiln.certification.launch import allreduce_args
    from validation.launch import HostSpec, KubernetesLauncher

    pools = gpu_pools(cluster) or cluster.node_pools
    hosts = [h for p in pools for h in p.hosts if "compute" in h.roles]
    per_node = min((p.gpu.per_node for p in pools if p.gpu), default=0)
    hcas = sorted({hca for p in pools for hca in p.rdma.hcas})
    env = {"NCCL_IB_HCA": ",".join(hcas)} if hcas else {}
    timeout = cluster.certification.timeout_seconds
    launcher = KubernetesLauncher(
        image,
        namespace=KILN_NAMESPACE,
        gpus_per_node=per_node,
        active_deadline_s=timeout,
        labels={"kueue.x-k8s.io/queue-name": QUEUE},
    )
    # The same sweep as `kiln certify` runs through srun or SSH (the stack's
    # certification.allreduce, first dtype), so the headline means the same;
    # CPU-only pools use gloo.
    settings = cluster.certification
    args = allreduce_args(settings.allreduce, settings.allreduce.dtypes[:1], timeout)
    if not per_node:
        args += ["--backend", "gloo"]
    service, job = launcher.render(
        certification_run_name(provisioning_hash),
        "validation.allreduce",
        args,
        [HostSpec(h.name) for h in hosts],
        env,
    )
    # pulumi-kubernetes waits for the Job; bound the wait by the run's own deadline.
    job["metadata"].setdefault("annotations", {})["pulumi.com/timeoutSeconds"] = str(timeout + 600)
    return [service, job]
