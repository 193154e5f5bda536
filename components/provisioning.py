"""Provisioning: the node roles of each pool, run by `kiln.provision` and re-run on drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from components.nodepool import NodePool
from components.providers import MungeKey, Playbook
from kiln import config, monitoring_web
from kiln.config import Cluster
from kiln.drift import digest, playbook_inputs
from kiln.provision import ROLES_DIR


def playbook_secrets(
    ssh_keys: pulumi.Input[Mapping[str, str]],
    extra_vars: pulumi.Input[Mapping[str, Any]] | None = None,
) -> pulumi.Output[dict[str, Any]]:
    """The secret inputs of a Playbook: SSH keys by pool and secret role variables."""
    combined = pulumi.Output.all(ssh_keys, extra_vars or {}).apply(
        lambda values: {"sshKeys": dict(values[0]), "extraVars": dict(values[1])}
    )
    return pulumi.Output.secret(combined)


def warn_missing(name: str, inputs: Mapping[str, Any]) -> None:
    """Say at preview what `pulumi up` would fail on: roles site.yml names but nobody wrote."""
    if inputs["missingRoles"]:
        pulumi.log.warn(
            f"{name}: roles/site.yml uses missing roles {', '.join(inputs['missingRoles'])}; "
            "applying this step will fail until they exist"
        )


def merged_summaries(runs: Sequence[Playbook]) -> pulumi.Output[dict[str, Any]]:
    """Per-host recaps of several runs, by host."""
    return pulumi.Output.all(*[run.summary for run in runs]).apply(
        lambda summaries: {host: s for summary in summaries for host, s in (summary or {}).items()}
    )


@dataclass
class ProvisioningArgs:
    """Inputs of Provisioning."""

    cluster: Cluster
    """The stack config."""
    node_pools: Mapping[str, NodePool]
    """The NodePool component of each pool, by pool name: run after them, re-run on their facts."""
    ssh_keys: pulumi.Input[Mapping[str, str]] = field(default_factory=dict)
    """Static pools' SSH private keys by pool name, as a Pulumi secret."""
    roles_dir: Path = ROLES_DIR
    """The roles tree hashed and applied (tests point it at a copy)."""


class Provisioning(pulumi.ComponentResource):
    """One Playbook per pool applying the node stage of `roles/site.yml` to its hosts."""

    hosts: pulumi.Output[dict[str, Any]]
    """Ansible's recap per host: status, ok, changed, failed, unreachable, skipped."""
    hash: pulumi.Output[str]
    """One hash over every pool's applied provisioning hash: what certification certifies."""
    munge_key: pulumi.Output[str] | None
    """Slurm stacks: the shared munge key (base64), secret."""

    def __init__(
        self, name: str, args: ProvisioningArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:provisioning:Provisioning", name, None, opts)
        cluster = args.cluster
        extra_vars: pulumi.Output[dict[str, Any]] | None = None
        self.munge_key = None
        # The monitoring's basic auth and TLS: every stage's run needs them (its
        # provider cannot decrypt the password; the spec it gets has none).
        web = monitoring_web.provision_vars(cluster)
        if web:
            extra_vars = pulumi.Output.secret(web)
        if cluster.scheduler == "slurm":
            munge = MungeKey(f"{name}-munge-key", cluster.name, pulumi.ResourceOptions(parent=self))
            self.munge_key = pulumi.Output.secret(munge.key)
            extra_vars = self.munge_key.apply(lambda key: {"munge_key_b64": key, **web})
        secrets = playbook_secrets(args.ssh_keys, extra_vars)
        self.runs: dict[str, Playbook] = {}
        # site.yml brings servers up before their clients (slurmctld before any
        # slurmd, storage servers before mounts); per-pool runs keep that order
        # by running pools with controller or storage hosts first.
        servers = [p for p in cluster.node_pools if _serves(p)]
        ordered = servers + [p for p in cluster.node_pools if not _serves(p)]
        for pool in ordered:
            node_pool = args.node_pools[pool.name]
            inputs = playbook_inputs(cluster, "node", args.roles_dir, pool)
            warn_missing(f"{name}-{pool.name}", inputs)
            first = [] if _serves(pool) else [self.runs[p.name] for p in servers]
            self.runs[pool.name] = Playbook(
                f"{name}-{pool.name}",
                {**inputs, "factsDigest": node_pool.facts_digest, "secrets": secrets},
                pulumi.ResourceOptions(parent=self, depends_on=[node_pool, *first]),
            )
        self.hosts = merged_summaries(list(self.runs.values()))
        pool_hashes = {pool: run.hash for pool, run in self.runs.items()}
        self.hash = pulumi.Output.all(**pool_hashes).apply(digest)
        self.register_outputs({"hosts": self.hosts, "hash": self.hash})


def _serves(pool: config.NodePool) -> bool:
    return any({"controller", "storage"} & set(h.roles) for h in pool.hosts)
