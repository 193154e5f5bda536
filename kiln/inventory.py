"""The Ansible inventory of a stack, generated from the config model.

Groups: one per pool (`pool_<name>`), one per node role (`controller`,
`compute`, `storage`), the scheduler (`slurm` or `kubernetes`) and the
provider (`lab`, `static`), and `gpu` for every pool with a `gpu` block.
Role variables that come from the stack (GPU, RDMA, storage) are group vars
of the pool, so `site.yml` never reads raw config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kiln import host_trust, monitoring_web, secrets
from kiln.config import Cluster, NodePool
from kiln.errors import UsageError
from kiln.runtime_bundle import REQUIREMENTS, bundle_path
from kiln.ssh import SshTarget


@dataclass(frozen=True)
class Access:
    """How to reach every host of a stack."""

    targets: dict[str, SshTarget]


def access_for(cluster: Cluster) -> Access:
    """SSH targets of all hosts: the lab's own key for lab pools, the config for static ones."""
    targets: dict[str, SshTarget] = {}
    if cluster.lab_pools:
        from kiln.lab.lifecycle import Lab  # lab tooling only where a lab pool exists

        targets.update({t.name: t for t in Lab(cluster).targets()})
    for pool in cluster.node_pools:
        if pool.provider != "static":
            continue
        key_file = _cli_key_file(cluster, pool)
        known = host_trust.known_hosts_file(cluster, pool)
        for host in pool.hosts:
            targets[host.name] = SshTarget(
                host.name, str(host.address), pool.ssh.user, key_file, known, pool.ssh.port
            )
    return Access(targets)


def _cli_key_file(cluster: Cluster, pool: NodePool) -> Path:
    """The key file this machine logs in to `pool` with: `privateKeyPath`, or a clear
    `privateKey` kept in the cluster's secret store (0600 under a 0700 directory)."""
    if pool.ssh.private_key_path is not None:
        return Path(pool.ssh.private_key_path).expanduser()
    if isinstance(pool.ssh.private_key, SecretStr):
        return secrets.ssh_key_file(cluster.name, pool.name, pool.ssh.private_key)
    raise UsageError(
        f"pool {pool.name}: the CLI needs ssh.privateKeyPath, the key file "
        "(ssh.privateKey is a Pulumi secret only `pulumi up` can decrypt); both may be "
        "set, each tool uses its own"
    )


def pool_vars(cluster: Cluster, pool: NodePool) -> dict[str, Any]:
    """Role variables a pool's settings imply (prefixed by the role that reads them)."""
    variables: dict[str, Any] = {
        "kiln_cluster_name": cluster.name,
        "kiln_pool": pool.name,
        "kiln_lab_node": pool.provider == "lab",
        "rdma_fabric": pool.rdma.fabric,
        "rdma_required": pool.rdma.required,
        "rdma_mtu": pool.rdma.mtu,
        "rdma_hcas": list(pool.rdma.hcas),
        "node_exporter_enabled": cluster.monitoring.node_exporter,
    }
    if pool.provider == "lab":
        from kiln.lab.lifecycle import role_overrides

        variables.update(role_overrides())
    if pool.gpu:
        variables.update(gpu_vars(cluster, pool))
    return variables


def gpu_vars(cluster: Cluster, pool: NodePool) -> dict[str, Any]:
    """What the GPU roles install on a pool with a `gpu` block: the pinned versions, and
    which optional parts the pool's fabric, scheduler and monitoring call for."""
    gpu = pool.gpu
    assert gpu is not None
    return {
        "kiln_gpu_model": gpu.model,
        "kiln_gpus_per_node": gpu.per_node,
        "nvidia_driver_version": gpu.driver,
        "fabricmanager_enabled": gpu.fabric_manager,
        "cuda_toolkit_version": gpu.cuda or "",
        "nccl_version": gpu.nccl,
        "nccl_cuda_version": gpu.cuda or "",
        # Without the peer-memory module NCCL silently stages RDMA through host memory.
        "gpudirect_enabled": pool.rdma.fabric != "none",
        # Containers run GPU work on Kubernetes; Slurm jobs run on the host.
        "container_toolkit_enabled": cluster.scheduler == "kubernetes",
        "dcgm_exporter_enabled": cluster.monitoring.dcgm_exporter,
        # Empty: NVIDIA's own repository and key (the nvidia role's defaults).
        "nvidia_repo_url": gpu.repository or "",
        "nvidia_repo_key_url": gpu.repository_key or "",
    }


def cluster_vars(cluster: Cluster) -> dict[str, Any]:
    """Variables every host sees: shared storage (and where its server is), monitoring."""
    storage = cluster.storage
    server = storage.server
    if storage.kind == "glusterfs" and server is None:
        servers = [h for h in cluster.hosts if "storage" in h.roles]
        server = str(servers[0].address) if servers else None
    return {
        "shared_storage_kind": storage.kind,
        "shared_storage_server": server,
        "shared_storage_export": storage.export or "kiln",
        "shared_storage_mount_point": storage.mount_point,
        "shared_storage_options": list(storage.options),
        # Monitoring: the Prometheus server on the controller and what it keeps.
        "prometheus_enabled": cluster.monitoring.prometheus,
        "prometheus_retention": cluster.monitoring.retention,
        "prometheus_dcgm_enabled": cluster.monitoring.dcgm_exporter,
        # Where the exporters and Prometheus listen, and how Prometheus reaches them
        # (the secrets of TLS and basic auth are extra vars: kiln.monitoring_web).
        **monitoring_web.inventory_vars(cluster),
        # Where the runtime's packages come from; lab pools override these (role_overrides).
        **runtime_source_vars(cluster),
    }


def runtime_source_vars(cluster: Cluster) -> dict[str, Any]:
    """The validation_runtime role's package source, from `provisioning.runtime`."""
    source = cluster.provisioning.runtime
    return {
        "validation_runtime_wheelhouse": source.wheelhouse or "",
        "validation_runtime_index_url": source.index_url or "",
        "validation_runtime_venv_archives": source.venv_archives or "",
    }


def runtime_vars() -> dict[str, Any]:
    """What the validation_runtime role ships and installs: this checkout's suite.

    The archive's path names its content (`kiln.runtime_bundle`); `provision`
    builds it before Ansible starts.
    """
    requirements = REQUIREMENTS.read_text().splitlines()
    return {
        "validation_runtime_archive": str(bundle_path()),
        "validation_runtime_requirements": [
            line.strip() for line in requirements if line.strip() and not line.startswith("#")
        ],
    }


def build_inventory(cluster: Cluster, access: Access) -> dict[str, Any]:
    """An ansible-runner inventory dict (YAML inventory structure)."""
    groups: dict[str, dict[str, Any]] = {}

    def add(group: str, host: str) -> None:
        groups.setdefault(group, {"hosts": {}})["hosts"][host] = {}

    hostvars: dict[str, dict[str, Any]] = {}
    for pool in cluster.node_pools:
        pool_group = f"pool_{pool.name.replace('-', '_')}"
        groups.setdefault(pool_group, {"hosts": {}})["vars"] = pool_vars(cluster, pool)
        for host in pool.hosts:
            target = access.targets[host.name]
            hostvars[host.name] = {
                "ansible_host": target.address,
                "ansible_port": target.port,
                "ansible_user": target.user,
                "ansible_ssh_private_key_file": str(target.key_file),
                # Host keys are verified against the stack's known_hosts, never learnt.
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={target.known_hosts} -o StrictHostKeyChecking=yes"
                ),
                "kiln_address": str(host.address),
                # What node_exporter, dcgm-exporter and Prometheus bind to.
                "kiln_management_address": monitoring_web.management_address(cluster, host),
            }
            add(pool_group, host.name)
            add(pool.provider, host.name)
            if pool.gpu:
                add("gpu", host.name)
            add(cluster.scheduler, host.name)
            for role in host.roles:
                add(role, host.name)
    return {
        "all": {
            "hosts": hostvars,
            "vars": {**cluster_vars(cluster), **runtime_vars()},
            "children": groups,
        }
    }
