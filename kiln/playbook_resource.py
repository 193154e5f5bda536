"""The Playbook resource's operations: whether its play must run again, and running it.

Its inputs come from `kiln.drift.playbook_inputs`; components/providers.py
hands Pulumi's create/diff/update calls to the functions here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.drift import missing_roles, roles_digest, secrets_digest
from kiln.errors import KilnError, UsageError
from kiln.keyfiles import cluster_with_key_files
from kiln.plays import apply_play


def playbook_rerun_reasons(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Why the play must run again (empty: it is up to date).

    `olds` is the recorded state, `news` the inputs now (secrets in plain text,
    as providers receive them).
    """
    reasons = [key for key in ("hash", "factsDigest") if olds.get(key) != news.get(key)]
    if olds.get("secretsDigest") != secrets_digest(news.get("secrets")):
        reasons.append("secrets")
    return reasons


def run_playbook(props: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a Playbook resource's play; its recorded state (inputs without secrets + recap)."""
    roles_dir = Path(props["rolesDir"])
    missing = missing_roles(roles_dir, props["roles"])
    if missing:
        raise UsageError(f"roles/site.yml uses roles that do not exist: {', '.join(missing)}")
    if roles_digest(roles_dir, props["roles"]) != props["rolesHash"]:
        # Running other content than was hashed would record a state that lies.
        raise KilnError("roles changed since this update was planned; run `pulumi up` again")
    secrets = props.get("secrets") or {}
    with cluster_with_key_files(props["cluster"], secrets.get("sshKeys") or {}) as cluster:
        summary = apply_play(
            cluster, props["plays"], props["limit"], roles_dir, secrets.get("extraVars")
        )
    state = {key: value for key, value in props.items() if key != "secrets"}
    return {**state, "secretsDigest": secrets_digest(secrets), "summary": summary}
