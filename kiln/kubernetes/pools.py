"""Which pools need the GPU Operator (GPU pools) and the Network Operator (RDMA pools)."""

from __future__ import annotations

from kiln.config import Cluster, NodePool


def gpu_pools(cluster: Cluster) -> list[NodePool]:
    return [p for p in cluster.node_pools if p.gpu]


def rdma_pools(cluster: Cluster) -> list[NodePool]:
    return [p for p in cluster.node_pools if p.rdma.fabric != "none"]
