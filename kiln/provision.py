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
import yaml

from kiln import host_trust, secrets
from kiln.config import Cluster
from kiln.errors import KilnError, UsageError
from kiln.inventory import access_for, build_inventory
from kiln.paths import state_root
from kiln.runtime_bundle import ensure_bundle

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
    not_run: bool = False
    """Ansible never got to this host: the failure limit stopped the run first."""

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        if self.not_run:
            return "not run"
        return "changed" if self.changed else "ok"


@dataclass
class ProvisionResult:
    """Per-host outcome of one provisioning run (or, with `check`, of a dry run)."""

    hosts: dict[str, HostSummary] = field(default_factory=dict)
    artifacts: Path | None = None
    errors: list[str] = field(default_factory=list)
    check: bool = False
    changes: dict[str, list[str]] = field(default_factory=dict)
    """By host: the tasks that changed it (in check mode: that would change it), in order."""
    task_seconds: dict[str, float] = field(default_factory=dict)
    """By task ("role : task"): seconds spent on it, summed over hosts (where the time goes)."""
    diffs: list[str] = field(default_factory=list)
    """With `diff`: Ansible's report of each changed task, its file diffs included."""
    reasons: dict[str, str] = field(default_factory=dict)
    """By host that failed, was unreachable or did not run: the first reason, one line."""
    stopped: str | None = None
    """Why Ansible stopped the run before every host finished (the failure limit)."""

    def failures(self) -> list[str]:
        """One line per host that did not finish, naming it, its status and the reason."""
        return [
            f"{name}: {h.status}: {self.reasons.get(name, 'no reason reported')}"
            for name, h in self.hosts.items()
            if h.status not in ("ok", "changed")
        ]

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


def provision_dir(cluster: Cluster) -> Path:
    """Where a stack's provisioning runs keep their artifacts and the last converge's record."""
    return state_root() / "provision" / cluster.name


def provision(
    cluster: Cluster,
    limit: list[str] | None = None,
    *,
    playbook: Path = SITE_PLAYBOOK,
    extra_vars: dict[str, Any] | None = None,
    on_event: OnEvent = lambda _: None,
    check: bool = False,
    diff: bool = False,
) -> ProvisionResult:
    """Apply `playbook` to the hosts (or `limit` of them); host failures are in the result.

    `check` runs it in Ansible's check mode: nothing changes on any host, and
    the result says what would (`changes`). `diff` adds Ansible's file diffs to
    the run's stdout artifact.
    """
    known = {h.name for h in cluster.hosts}
    unknown = sorted(set(limit or []) - known)
    if unknown:
        raise UsageError(f"--limit: no such host(s) {', '.join(unknown)} in stack {cluster.name}")
    targets = sorted(limit) if limit else [h.name for h in cluster.hosts]
    ensure_bundle()  # the validation suite's archive the inventory names
    access = access_for(cluster)
    # Host keys first: a host whose key changed (or, under a strict policy, is
    # unknown) is stopped by name before Ansible logs in anywhere; the others go on.
    stopped = host_trust.vet(cluster, {n: access.targets[n] for n in targets}, on_event)
    inventory = build_inventory(cluster, access)
    # Cluster secrets (the munge key) come from this machine's secret store unless
    # the caller brings them (Pulumi, from stack state). They travel only as extra
    # vars: ansible-runner keeps those in its private run directory (0700, deleted
    # below), never in the artifacts; the roles handle them with no_log.
    extravars = {
        **batch_vars(cluster),
        **secrets.provision_vars(cluster, extra_vars),
        **(extra_vars or {}),
    }
    base = provision_dir(cluster)
    base.mkdir(parents=True, exist_ok=True)
    result = ProvisionResult(check=check)
    for name, why in sorted(stopped.items()):
        result.hosts[name] = HostSummary(unreachable=1)
        result.errors.append(why)
        result.reasons[name] = one_line(why)
    targets = [name for name in targets if name not in stopped]
    if not targets:
        return result

    def handle(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event", "")
        if kind == "playbook_on_play_start":
            on_event(f"play: {data.get('play', '')}")
        elif kind == "playbook_on_task_start":
            on_event(f"task: {data.get('task', '')}")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get(
            "ignore_errors"
        ):
            message = data.get("res", {}).get("msg", "")
            result.errors.append(f"{data.get('host')}: {data.get('task')}: {message}".strip())
            what = "unreachable" if kind == "runner_on_unreachable" else "failed"
            result.reasons.setdefault(
                str(data.get("host")), f"{data.get('task')}: {what}: {one_line(str(message))}"
            )
        elif kind == "playbook_on_no_hosts_remaining":
            result.stopped = "no host left to run on"
        task = f"{data['role']} : {data.get('task', '')}" if data.get("role") else data.get("task")
        if kind.startswith("runner_on_") and data.get("duration") is not None:
            seconds = result.task_seconds.get(str(task), 0.0) + float(data["duration"])
            result.task_seconds[str(task)] = seconds
        # A no_log task's result is censored, "changed" included; its stdout line is not.
        stdout = str(event.get("stdout", "")).lstrip()
        changed = data.get("res", {}).get("changed") or stdout.startswith("changed:")
        if kind == "runner_on_ok" and changed:
            result.changes.setdefault(str(data.get("host")), []).append(str(task))
            if diff and event.get("stdout"):
                result.diffs.append(str(event["stdout"]))
        return True  # keep the event in the artifacts

    with tempfile.TemporaryDirectory(dir=base, prefix="run-") as private:
        playbook = _without_excluded_roles(cluster, playbook, Path(private))
        runner = ansible_runner.run(
            private_data_dir=private,
            artifact_dir=str(base / "artifacts"),
            rotate_artifacts=10,
            playbook=str(playbook),
            inventory=inventory,
            limit=",".join(targets),
            extravars=extravars,
            forks=cluster.provisioning.forks,
            cmdline=" ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
            or None,
            quiet=True,
            event_handler=handle,
            envvars={
                # The venv's ansible-playbook, whether or not the venv is on PATH.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
                "ANSIBLE_PIPELINING": "True",
                # Facts once per host per run, not once per play (site.yml has six).
                "ANSIBLE_GATHERING": "smart",
                "ANSIBLE_CACHE_PLUGIN": "memory",
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
                "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_NOCOLOR": "True",
                **strategy_env(cluster.provisioning.mitogen),
            },
        )
        result.artifacts = Path(runner.config.artifact_dir)
        scrubbed = _scrub_environment(result.artifacts)
        if scrubbed:
            result.errors.append(scrubbed)
        stats = runner.stats or {}
    for name in targets:
        summary = HostSummary(
            ok=stats.get("ok", {}).get(name, 0),
            changed=stats.get("changed", {}).get(name, 0),
            failed=stats.get("failures", {}).get(name, 0),
            unreachable=stats.get("dark", {}).get(name, 0),
            skipped=stats.get("skipped", {}).get(name, 0),
        )
        # Not one task on this host, and the run ended early: Ansible never got to it.
        if stats and result.stopped and not any(name in counts for counts in stats.values()):
            summary.not_run = True
            result.reasons.setdefault(name, "the failure limit stopped the run before this host")
        result.hosts[name] = summary
    if result.stopped and any(h.failed or h.unreachable for h in result.hosts.values()):
        limit = cluster.provisioning.max_fail_percentage
        if limit < 100:
            result.stopped = (
                f"more than {limit}% of a batch's hosts failed "
                "(kiln:cluster.provisioning.maxFailPercentage): Ansible stopped the run, and "
                "hosts without a failure may not have finished every play"
            )
            result.errors.append(result.stopped)
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


def one_line(message: str, width: int = 300) -> str:
    """A task's message on one line: its first line and, when it has more, its last
    (Mitogen's "EOF on stream; last 100 lines received:" ends with the SSH error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "no message"
    text = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    return text if len(text) <= width else text[: width - 1] + "…"


def _without_excluded_roles(cluster: Cluster, playbook: Path, directory: Path) -> Path:
    """`playbook`, or a copy of it in `directory` without the roles another owner runs in
    this stack (`kiln.plays.excluded_roles`: the GPU Operator's driver, Kubernetes'
    monitoring), so `kiln provision` applies what `pulumi up` applies."""
    from kiln.plays import excluded_roles, load_site, roles_in, site_without

    excluded = excluded_roles(cluster)
    site = load_site(playbook.parent, playbook.name) if excluded else []
    if not excluded & roles_in(site):
        return playbook
    applied = directory / "kiln-play" / playbook.name
    applied.parent.mkdir()
    applied.write_text(yaml.safe_dump(site_without(site, excluded), sort_keys=False))
    # The roles the playbook found beside it (a `roles` directory, or its own directory
    # for roles/site.yml) stay beside the copy: Ansible looks there first.
    beside = playbook.parent / "roles"
    roles = beside if beside.is_dir() else playbook.parent
    (applied.parent / "roles").symlink_to(roles.resolve(), target_is_directory=True)
    return applied


def strategy_env(mitogen: bool) -> dict[str, str]:
    """Ansible settings that run the plays through Mitogen's linear strategy (or not).

    Measured on the lab (bench/provision.py): a no-change run of site.yml on a
    controller and one compute took 51.5 s with Ansible's SSH connection and
    25.9 s with Mitogen; host keys stay enforced (Mitogen maps Ansible's host
    key checking to StrictHostKeyChecking=yes and keeps the inventory's
    UserKnownHostsFile).
    """
    if not mitogen:
        return {}
    import ansible_mitogen  # a dependency; imported here so a stack that opts out never needs it

    strategies = Path(ansible_mitogen.__file__).resolve().parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear"}


def batch_vars(cluster: Cluster) -> dict[str, Any]:
    """The play keywords roles/site.yml takes from the stack: hosts per batch, failure limit."""
    settings = cluster.provisioning
    return {
        "kiln_batch_size": settings.batch_size,
        "kiln_max_fail_percentage": settings.max_fail_percentage,
    }


def _scrub_environment(artifacts: Path) -> str | None:
    """Drop the environment ansible-runner records in the `command` artifact.

    It copies this process's whole environment there: cloud credentials and
    Pulumi tokens of whoever ran `pulumi up` would sit on disk for every run.
    A record that cannot be scrubbed is deleted, and that is said: a cleanup that
    protects secrets never fails quietly and never leaves the secret behind.
    """
    command = artifacts / "command"
    if not command.exists():
        return None
    try:
        record = json.loads(command.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if "env" in record:
            record["env"] = {"note": "removed by kiln: the environment may hold secrets"}
            command.write_text(json.dumps(record))
    except (OSError, ValueError) as exc:
        command.unlink(missing_ok=True)
        if command.exists():
            raise KilnError(
                f"{command}: cannot remove the environment ansible-runner recorded there "
                f"({exc}), nor the file: delete it by hand, it may hold secrets"
            ) from None
        return (
            f"{command}: could not scrub the environment from it ({type(exc).__name__}); "
            "the file was deleted so no secret stays on disk"
        )
    return None
