"""Kueue: one flavor, one ClusterQueue whose quota is the stack's compute hosts, one LocalQueue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiln.config import Cluster
from kiln.kubernetes import versions
from kiln.kubernetes.objects import KILN_NAMESPACE

QUEUE = "kiln"
"""The ClusterQueue and LocalQueue the certification Job is queued in."""
FLAVOR = "default-flavor"


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
