"""The plays `pulumi up` runs, cut from `roles/site.yml` by stage, and how one is applied.

`roles/site.yml` stays the one place that says which role runs on which group
(`kiln provision` applies it whole). The Pulumi program applies it in three
stages so that storage and monitoring are resources of their own, ordered
after the nodes are provisioned:

- `node`: every role not claimed by another stage (base, rdma, drivers, ...)
- `storage`: `shared_storage`
- `monitoring`: `node_exporter`, `prometheus`, `dcgm_exporter`

A play keeps its hosts, `become`, vars and `when:` conditions; only its role
list is filtered, so the union of the stages is exactly `site.yml`. Some
roles are dropped where another owner exists, never run twice: the GPU driver
(with fabric manager, nvidia-peermem and the container toolkit) when the GPU
Operator owns it, and Prometheus / DCGM exporter on Kubernetes
(kube-prometheus-stack and the GPU Operator run those there).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from kiln.config import Cluster
from kiln.errors import KilnError, UsageError

Stage = Literal["node", "storage", "monitoring"]
DriverOwner = Literal["roles", "operator"]

STAGE_ROLES: dict[str, frozenset[str]] = {
    "storage": frozenset({"shared_storage"}),
    "monitoring": frozenset({"node_exporter", "prometheus", "dcgm_exporter"}),
}
#: Roles the GPU Operator replaces when it owns the driver (gpuDriverOwner: operator).
OPERATOR_OWNS = frozenset({"nvidia_driver", "fabricmanager", "gpudirect", "container_toolkit"})
_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")
_INCLUDE_ROLE = {
    "include_role",
    "import_role",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
}


def stage_of(role: str) -> Stage:
    """The stage that applies `role`."""
    for stage, roles in STAGE_ROLES.items():
        if role in roles:
            return stage  # type: ignore[return-value]
    return "node"


def role_name(entry: str | Mapping[str, Any]) -> str:
    """The name of a play's role entry (`- base` or `- role: base`)."""
    if isinstance(entry, str):
        return entry
    return str(entry.get("role") or entry.get("name"))


def load_site(roles_dir: Path, name: str = "site.yml") -> list[dict[str, Any]]:
    """The plays of `site.yml` (or the playbook `name`) in `roles_dir`."""
    plays = yaml.safe_load((roles_dir / name).read_text()) or []
    for play in plays:
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            raise UsageError("site.yml: import_playbook is not supported; list the plays inline")
    return plays


def excluded_roles(cluster: Cluster) -> frozenset[str]:
    """Roles another owner runs in this stack, so the roles must not (`kiln provision` and
    `pulumi up` alike). That the operator comes only with Kubernetes is `kiln.stack`'s rule."""
    excluded = set()
    if cluster.gpu_driver_owner == "operator":
        # The operator's driver container brings fabric manager and nvidia-peermem,
        # and its toolkit container the container runtime hook.
        excluded |= OPERATOR_OWNS
    if cluster.scheduler == "kubernetes":
        excluded |= {"prometheus", "dcgm_exporter"}
    return frozenset(excluded)


def _imported_role(task: Mapping[str, Any]) -> str | None:
    for key in _INCLUDE_ROLE:
        value = task.get(key)
        if isinstance(value, Mapping) and "name" in value:
            return str(value["name"])
    return None


def stage_play(
    site: Iterable[Mapping[str, Any]], stage: Stage, exclude: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The plays of `site` restricted to `stage`'s roles; plays left empty are dropped.

    Play-level tasks follow the role they import (`import_role: shared_storage`
    is storage); other tasks belong to the node stage.
    """
    excluded = set(exclude)
    return _keep_roles(
        site,
        lambda role: role not in excluded and (stage_of(role) if role else "node") == stage,
    )


def site_without(site: Iterable[Mapping[str, Any]], exclude: Iterable[str]) -> list[dict[str, Any]]:
    """Every play of `site`, less the roles in `exclude`: what `kiln provision` applies
    when another owner runs some roles (`excluded_roles`), as `pulumi up` does."""
    excluded = set(exclude)
    return _keep_roles(site, lambda role: role not in excluded)


def _keep_roles(
    site: Iterable[Mapping[str, Any]], wanted: Callable[[str | None], bool]
) -> list[dict[str, Any]]:
    """The plays of `site` with only the roles (and role-importing tasks) `wanted` keeps;
    a play's hosts, vars and conditions stay; plays left empty are dropped."""
    plays = []
    for play in site:
        roles = [entry for entry in play.get("roles", []) if wanted(role_name(entry))]
        tasks = {
            key: kept
            for key in _TASK_KEYS
            if (kept := [t for t in play.get(key) or [] if wanted(_imported_role(t))])
        }
        if not roles and not tasks:
            continue
        cut = {k: v for k, v in play.items() if k != "roles" and k not in _TASK_KEYS}
        cut.update(tasks)
        cut["roles"] = roles
        plays.append(cut)
    return plays


def roles_in(plays: Iterable[Mapping[str, Any]]) -> set[str]:
    """Roles the plays use directly: their role lists and the roles their tasks import."""
    found = set()
    for play in plays:
        found |= {role_name(entry) for entry in play.get("roles", [])}
        found |= set(_included_roles([play.get(key) or [] for key in _TASK_KEYS]))
    return found


def role_closure(roles: Iterable[str], roles_dir: Path) -> set[str]:
    """`roles` plus every role they pull in (meta dependencies, include/import_role)."""
    seen: set[str] = set()
    pending = list(roles)
    while pending:
        role = pending.pop()
        if role in seen:
            continue
        seen.add(role)
        pending += _role_references(roles_dir / role)
    return seen


def _role_references(role_dir: Path) -> list[str]:
    found: list[str] = []
    meta = role_dir / "meta" / "main.yml"
    if meta.is_file():
        for dep in (yaml.safe_load(meta.read_text()) or {}).get("dependencies") or []:
            found.append(role_name(dep))
    for tasks in sorted((role_dir / "tasks").glob("*.yml")):
        found += _included_roles(yaml.safe_load(tasks.read_text()) or [])
    # A templated name ("{{ x }}") cannot be resolved here; it is not a role directory.
    return [name for name in found if "{{" not in name]


def _included_roles(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, list):
        for item in node:
            found += _included_roles(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _INCLUDE_ROLE and isinstance(value, dict) and "name" in value:
                found.append(str(value["name"]))
            elif isinstance(value, list | dict):
                found += _included_roles(value)
    return found


def _recap(result: Any) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "status": h.status,
            "ok": h.ok,
            "changed": h.changed,
            "failed": h.failed,
            "unreachable": h.unreachable,
            "skipped": h.skipped,
        }
        for name, h in result.hosts.items()
    }


def apply_play(
    cluster: Cluster,
    plays: list[dict[str, Any]],
    limit: list[str] | None,
    roles_dir: Path,
    extra_vars: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Apply `plays` with `kiln.provision.provision`; the per-host recap, or KilnError.

    The playbook is written next to a `roles` link to `roles_dir`: Ansible looks
    for roles beside the playbook first, so the roles applied are the ones hashed.
    """
    from kiln.provision import provision  # ansible-runner only where a play runs

    targets = limit or [h.name for h in cluster.hosts]
    if not plays:
        return {name: {"status": "no-roles", "ok": 0, "changed": 0} for name in targets}
    with tempfile.TemporaryDirectory(prefix="kiln-play-") as directory:
        playbook = Path(directory) / "play.yml"
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        (Path(directory) / "roles").symlink_to(roles_dir.resolve(), target_is_directory=True)
        result = provision(cluster, limit, playbook=playbook, extra_vars=dict(extra_vars or {}))
    if not result.succeeded:
        failed = sorted(n for n, h in result.hosts.items() if h.status not in ("ok", "changed"))
        details = "; ".join(result.errors[:5]) or "no error reported"
        raise KilnError(
            f"provisioning failed on {', '.join(failed) or 'no host'}: {details} "
            f"(artifacts: {result.artifacts})"
        )
    return _recap(result)
