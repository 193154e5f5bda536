"""The record of a stack's last successful converge, and whether `kiln lab up` may skip one.

A converge that changes nothing still costs a full Ansible run. After every
successful run of roles/site.yml over all of a stack's hosts, the CLI records
what it applied (one hash over the plays, the roles' files, the validation
suite, the inventory and the batch settings), a fingerprint of the secret
variables (a rotated munge key must reach the hosts) and every host's
preflight facts (a reinstalled, upgraded or replaced host must be converged).
`kiln lab up` skips the converge only when all three still match, and says
so; `kiln provision` never skips: it always looks at the hosts, which is how
drift done by hand is found (`--check`) and repaired.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import secrets
from kiln.config import Cluster
from kiln.drift import digest, roles_digest, secrets_digest
from kiln.errors import KilnError
from kiln.inventory import Access, access_for, build_inventory
from kiln.plays import load_site, role_closure, roles_in
from kiln.preflight import access_of, changed_facts, gather
from kiln.provision import (
    ROLES_DIR,
    OnEvent,
    ProvisionResult,
    batch_vars,
    provision,
    provision_dir,
)
from kiln.runtime_bundle import bundle_digest

RECORD_NAME = "last-converge.json"


@dataclass(frozen=True)
class Inputs:
    """What a converge of the whole stack depends on, as of now."""

    hash: str
    secrets: str | None
    facts: dict[str, dict[str, Any] | None]
    """By host: preflight facts, or None where the host could not be read."""


def record_path(cluster: Cluster) -> Path:
    return provision_dir(cluster) / RECORD_NAME


def site_digest(cluster: Cluster, access: Access) -> str:
    """One hash over everything roles/site.yml applies to this stack, secrets left out."""
    plays = load_site(ROLES_DIR)
    roles = role_closure(roles_in(plays), ROLES_DIR)
    return digest(
        {
            "plays": plays,
            "roles": roles_digest(ROLES_DIR, roles),
            "runtime": bundle_digest(),
            "inventory": build_inventory(cluster, access),
            "batch": batch_vars(cluster),
        }
    )


def host_facts(access: Access) -> dict[str, dict[str, Any] | None]:
    """Every host's preflight facts (one SSH command each); None for a host that did not answer."""
    facts: dict[str, dict[str, Any] | None] = {}
    for name, target in access.targets.items():
        try:
            facts[name] = gather(access_of(target), timeout=15)
        except KilnError:
            facts[name] = None
    return facts


def current_inputs(cluster: Cluster, access: Access) -> Inputs:
    return Inputs(
        hash=site_digest(cluster, access),
        secrets=secrets_digest({"extraVars": secrets.provision_vars(cluster)}),
        facts=host_facts(access),
    )


def load(cluster: Cluster) -> dict[str, Any] | None:
    """The recorded converge, or None (none yet, or a file that is not one: converge again)."""
    try:
        record = json.loads(record_path(cluster).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def save(cluster: Cluster, inputs: Inputs) -> None:
    """Record a successful converge (atomically: a crash leaves the old record or none)."""
    path = record_path(cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "hash": inputs.hash,
        "secrets": inputs.secrets,
        "facts": inputs.facts,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(partial, path)


def forget(cluster: Cluster) -> None:
    """Drop the record: the next `kiln lab up` converges."""
    record_path(cluster).unlink(missing_ok=True)


def rerun_reasons(recorded: Mapping[str, Any] | None, now: Inputs) -> list[str]:
    """Why the stack must be converged again (empty: the last converge still holds)."""
    if not recorded:
        return ["no successful converge of every host is recorded"]
    reasons = []
    if recorded.get("hash") != now.hash:
        reasons.append("roles, validation suite, inventory or batch settings changed")
    if recorded.get("secrets") != now.secrets:
        reasons.append("secret variables changed")
    old_facts = recorded.get("facts") or {}
    for name, facts in sorted(now.facts.items()):
        if facts is None:
            reasons.append(f"{name}: could not read its facts")
        elif name not in old_facts:
            reasons.append(f"{name}: not in the last converge")
        elif changed := changed_facts(old_facts[name], facts):
            reasons.append(f"{name}: {', '.join(changed)} changed")
    return reasons


def provision_and_record(
    cluster: Cluster,
    hosts: list[str] | None = None,
    *,
    on_event: OnEvent = lambda _: None,
    check: bool = False,
    diff: bool = False,
    extra_vars: dict[str, Any] | None = None,
) -> ProvisionResult:
    """`kiln.provision.provision` of roles/site.yml, keeping the record true.

    A successful run over every host is recorded; a failed run, a run over some
    hosts only, or a check that found something to change drops the record.
    """
    result = provision(
        cluster, hosts, on_event=on_event, check=check, diff=diff, extra_vars=extra_vars
    )
    whole = hosts is None or set(hosts) >= {h.name for h in cluster.hosts}
    if not result.succeeded or (check and result.changed) or (not check and not whole):
        forget(cluster)
    elif not check:
        access = access_for(cluster)
        save(cluster, current_inputs(cluster, access))
    return result
