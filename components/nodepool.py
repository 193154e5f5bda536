"""NodePool: the hosts of one pool, each with its preflight facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.providers import LabMachines, Preflight
from kiln import config
from kiln.drift import digest
from kiln.lab_machines import lab_inputs


def preflight_inputs(
    pool: config.NodePool, host: config.Host, private_key: pulumi.Input[str] | None
) -> dict[str, Any]:
    """Inputs of one static host's Preflight: where it is, how to log in (key as a secret)."""
    return {
        "host": host.name,
        "address": str(host.address),
        "user": pool.ssh.user,
        "port": pool.ssh.port,
        "privateKey": pulumi.Output.secret(private_key) if private_key is not None else None,
        "privateKeyPath": pool.ssh.private_key_path,
        "knownHosts": pool.ssh.known_hosts,
    }


@dataclass
class NodePoolArgs:
    """Inputs of a NodePool."""

    cluster: config.Cluster
    """The stack config (a lab is built for the whole stack, inventory needs every host)."""
    pool: config.NodePool
    """The pool this component stands for."""
    private_key: pulumi.Input[str] | None = None
    """Static pools: the SSH private key as a Pulumi secret (from ssh.privateKey)."""


class NodePool(pulumi.ComponentResource):
    """A pool's hosts: one Preflight per static host, or the stack's lab machines."""

    hosts: pulumi.Output[dict[str, Any]]
    """By host name: pool, address, node roles and preflight facts."""
    facts_digest: pulumi.Output[str]
    """Hash of every host's facts: a reinstalled or upgraded host changes it."""

    def __init__(
        self, name: str, args: NodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kiln:nodepool:NodePool", name, None, opts)
        pool = args.pool
        child = pulumi.ResourceOptions(parent=self)
        self.preflights: dict[str, Preflight] = {}
        self.machines: LabMachines | None = None
        if pool.provider == "static":
            for host in pool.hosts:
                self.preflights[host.name] = Preflight(
                    f"{name}-{host.name}", preflight_inputs(pool, host, args.private_key), child
                )
            facts = pulumi.Output.all(**{n: p.facts for n, p in self.preflights.items()})
        else:
            # kiln.stack allows several lab pools, but a stack has one lab (one id,
            # bridge and subnet); the Cluster component admits one lab pool only.
            self.machines = LabMachines(f"{name}-machines", lab_inputs(args.cluster), child)
            facts = self.machines.nodes.apply(
                lambda nodes: {n: (nodes or {}).get(n, {}).get("facts") for n in _names(pool)}
            )
        self.hosts = facts.apply(lambda by_name: _describe(pool, by_name))
        self.facts_digest = facts.apply(digest)
        self.register_outputs({"hosts": self.hosts, "factsDigest": self.facts_digest})


def _names(pool: config.NodePool) -> list[str]:
    return [h.name for h in pool.hosts]


def _describe(pool: config.NodePool, facts: dict[str, Any]) -> dict[str, Any]:
    return {
        h.name: {
            "pool": pool.name,
            "address": str(h.address),
            "roles": list(h.roles),
            "facts": facts.get(h.name),
        }
        for h in pool.hosts
    }
