"""Run the Ansible roles on a stack's hosts through ansible-runner.

`provision()` is a plain function of (cluster, hosts): `kiln provision` and the
Pulumi Provisioning resource both call it, so what the CLI does and what
`pulumi up` does cannot drift apart.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from kiln import secrets
from kiln.config import Cluster
from kiln.errors import UsageError
from kiln.inventory import access_for, build_inventory
from kiln.paths import state_root

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
SITE_PLAYBOOK = ROLES_DIR / "site.yml"

OnEvent = Callable[[str], None]


@dataclass
class HostSummary:
    """Ansible's recap for one host."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


@dataclass
class ProvisionResult:
    """Per-host outcome of one provisioning run."""

    hosts: dict[str, HostSummary] = field(default_factory=dict)
    artifacts: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return (
            bool(self.hosts)
            and not self.errors
            and all(h.status in ("ok", "changed") for h in self.hosts.values())
        )

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


def provision(
    cluster: Cluster,
    limit: list[str] | None = None,
    *,
    playbook: Path = SITE_PLAYBOOK,
    extra_vars: dict[str, Any] | None = None,
    on_event: OnEvent = lambda _: None,
    forks: int = 16,
) -> ProvisionResult:
    """Apply `playbook` to the hosts (or `limit` of them); host failures are in the result."""
    known = {h.name for h in cluster.hosts}
    unknown = sorted(set(limit or []) - known)
    if unknown:
        raise UsageError(f"--limit: no such host(s) {', '.join(unknown)} in stack {cluster.name}")
    targets = sorted(limit) if limit else [h.name for h in cluster.hosts]
    inventory = build_inventory(cluster, access_for(cluster))
    # Cluster secrets (the munge key) come from this machine's secret store unless
    # the caller brings them (Pulumi, from stack state). They travel only as extra
    # vars: ansible-runner keeps those in its private run directory (0700, deleted
    # below), never in the artifacts; the roles handle them with no_log.
    extravars = {**secrets.provision_vars(cluster, extra_vars), **(extra_vars or {})}
    base = state_root() / "provision" / cluster.name
    base.mkdir(parents=True, exist_ok=True)
    result = ProvisionResult()

    def handle(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event", "")
        if kind == "playbook_on_task_start":
            on_event(f"task: {data.get('task', '')}")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get(
            "ignore_errors"
        ):
            message = data.get("res", {}).get("msg", "")
            result.errors.append(f"{data.get('host')}: {data.get('task')}: {message}".strip())
        return True  # keep the event in the artifacts

    with tempfile.TemporaryDirectory(dir=base, prefix="run-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            artifact_dir=str(base / "artifacts"),
            rotate_artifacts=10,
            playbook=str(playbook),
            inventory=inventory,
            limit=",".join(targets),
            extravars=extravars,
            forks=forks,
            quiet=True,
            event_handler=handle,
            envvars={
                # The venv's ansible-playbook, whether or not the venv is on PATH.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
                "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_NOCOLOR": "True",
            },
        )
        result.artifacts = Path(runner.config.artifact_dir)
        _scrub_environment(result.artifacts)
        stats = runner.stats or {}
    for name in targets:
        result.hosts[name] = HostSummary(
            ok=stats.get("ok", {}).get(name, 0),
            changed=stats.get("changed", {}).get(name, 0),
            failed=stats.get("failures", {}).get(name, 0),
            unreachable=stats.get("dark", {}).get(name, 0),
            skipped=stats.get("skipped", {}).get(name, 0),
        )
    if not stats and not result.errors:
        # Ansible stopped before any host (a syntax error, a missing role): its
        # own last words say what, and they are in the run's stdout.
        stdout = result.artifacts / "stdout"
        tail = (
            stdout.read_text(errors="replace").strip().splitlines()[-3:] if stdout.is_file() else []
        )
        result.errors.append(
            f"ansible-runner ended with status {runner.status}: {' | '.join(tail)} "
            f"(see {result.artifacts})"
        )
    return result


def _scrub_environment(artifacts: Path) -> None:
    """Drop the environment ansible-runner records in the `command` artifact.

    It copies this process's whole environment there: cloud credentials and
    Pulumi tokens of whoever ran `pulumi up` would sit on disk for every run.
    """
    command = artifacts / "command"
    try:
        record = json.loads(command.read_text())
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and "env" in record:
        record["env"] = {"note": "removed by kiln: the environment may hold secrets"}
        command.write_text(json.dumps(record))
