"""Provisioning drift: what a stage's roles run depends on, hashed, and when it must run again.

A Playbook resource's inputs are built here (`playbook_inputs`): the play, the
roles it uses with a content hash of their files, the role variables
(`kiln.inventory.pool_vars` / `cluster_vars`), the host list and one `hash`
over all of them. Its provider (`kiln.playbook_resource`) re-runs the play
only when that hash or the hosts' facts differ, so `pulumi preview` shows
drift before anything runs and an unchanged stack is a no-op. Secrets never
enter the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kiln.cluster_spec import cluster_spec
from kiln.config import Cluster, NodePool
from kiln.inventory import cluster_vars, pool_vars
from kiln.plays import (
    Stage,
    excluded_roles,
    load_site,
    role_closure,
    roles_in,
    stage_play,
)
from kiln.runtime_bundle import bundle_digest

# Editor and tool droppings that do not change what a role does.
_IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".git"}
_IGNORED_SUFFIXES = (".pyc", ".retry", ".swp", "~")


def digest(value: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def missing_roles(roles_dir: Path, roles: Iterable[str]) -> list[str]:
    """Roles the plays name that have no directory under `roles_dir`."""
    return sorted(r for r in set(roles) if not (roles_dir / r).is_dir())


def roles_digest(roles_dir: Path, roles: Iterable[str]) -> str:
    """sha256 over every file of the named roles (path and content).

    A missing role counts as such, so the hash changes when it lands.
    """
    outer = hashlib.sha256()
    for role in sorted(set(roles)):
        base = roles_dir / role
        if not base.is_dir():
            outer.update(f"{role}\0<missing>\n".encode())
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or _ignored(path):
                continue
            inner = hashlib.sha256(path.read_bytes()).hexdigest()
            outer.update(f"{path.relative_to(roles_dir).as_posix()}\0{inner}\n".encode())
    return outer.hexdigest()


def _ignored(path: Path) -> bool:
    return bool(_IGNORED_PARTS.intersection(path.parts)) or path.name.endswith(_IGNORED_SUFFIXES)


def topology(cluster: Cluster) -> list[dict[str, Any]]:
    """Every host with its pool, address and node roles: what inventory groups come from."""
    return [
        {"pool": p.name, "name": h.name, "address": str(h.address), "roles": list(h.roles)}
        for p in cluster.node_pools
        for h in p.hosts
    ]


def playbook_inputs(
    cluster: Cluster,
    stage: Stage,
    roles_dir: Path,
    pool: NodePool | None = None,
) -> dict[str, Any]:
    """The non-secret inputs of one Playbook resource (a stage on one pool, or on all hosts)."""
    plays = stage_play(load_site(roles_dir), stage, excluded_roles(cluster))
    roles = sorted(role_closure(roles_in(plays), roles_dir))
    pools = [pool] if pool else cluster.node_pools
    variables = {
        "cluster": cluster_vars(cluster),
        "pools": {p.name: pool_vars(cluster, p) for p in pools},
        "scheduler": cluster.scheduler,
    }
    limit = [h.name for p in pools for h in p.hosts]
    hosts = topology(cluster)
    roles_hash = roles_digest(roles_dir, roles)
    # The runtime role copies the validation suite: editing it must re-run that role.
    runtime_hash = bundle_digest() if "validation_runtime" in roles else None
    return {
        "stage": stage,
        "pool": pool.name if pool else None,
        "plays": plays,
        "roles": roles,
        "rolesDir": str(roles_dir.resolve()),
        "rolesHash": roles_hash,
        "missingRoles": missing_roles(roles_dir, roles),
        "vars": variables,
        "hosts": hosts,
        "limit": limit,
        # The path of the roles is left out: moving the checkout changes nothing.
        "hash": digest(
            {
                "plays": plays,
                "rolesHash": roles_hash,
                "runtimeHash": runtime_hash,
                "vars": variables,
                "hosts": hosts,
                "limit": limit,
            }
        ),
        "cluster": cluster_spec(cluster),
    }


def secrets_digest(secrets: Mapping[str, Any] | None) -> str | None:
    """Fingerprint of the secret role variables (munge key, ...), to notice a rotation.

    SSH keys are left out: a new key reaches the same hosts, nothing to re-run.
    """
    extra = (secrets or {}).get("extraVars")
    return digest(extra) if extra else None
