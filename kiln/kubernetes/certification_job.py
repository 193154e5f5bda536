"""The certification Job: a headless Service and an indexed Job running the allreduce sweep.

Rendered by the validation suite's own Kubernetes launcher, so this Job and
the one `validation` documents are the same. Neither the launcher nor
`kiln.certification.launch` imports torch (tests/unit/test_control_plane_imports.py):
the Pulumi program renders the Job at preview without it.
"""

from __future__ import annotations

from typing import Any

from kiln.certification.launch import allreduce_args
from kiln.config import Cluster
from kiln.kubernetes.kueue import QUEUE
from kiln.kubernetes.objects import KILN_NAMESPACE
from kiln.kubernetes.pools import gpu_pools
from validation.launch import HostSpec
from validation.launch.kubernetes import KubernetesLauncher


def certification_run_name(provisioning_hash: str) -> str:
    """The certification Job of a provisioning: a new hash, a new Job (a new run)."""
    return f"kiln-cert-{provisioning_hash[:10]}"


def certification_job(cluster: Cluster, image: str, provisioning_hash: str) -> list[dict[str, Any]]:
    """The Service and Job of one provisioning's certification, on the compute hosts."""
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
