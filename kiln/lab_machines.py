"""Lab machines as one resource: bring them up, notice when they differ, take them down.

The Pulumi LabMachines resource calls these functions; `kiln lab up/down`
call `kiln.lab` directly, so both make the very same machines. A stack's lab
is one thing (one id, one bridge, one subnet), so it is one resource.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kiln.cluster_spec import cluster_from_spec, cluster_spec
from kiln.config import Cluster
from kiln.preflight import access_of, changed_facts, gather

# Changing any of these gives other kernel objects or another root filesystem:
# the old lab is removed first, then the new one built.
_REPLACING = ("id", "subnet", "suite", "mirror")


def lab_inputs(cluster: Cluster) -> dict[str, Any]:
    """The inputs of a stack's LabMachines resource."""
    settings = cluster.lab_settings
    return {
        "lab": {
            "id": settings.id,
            "subnet": str(settings.subnet),
            "suite": settings.suite,
            "mirror": settings.mirror,
        },
        "hosts": [
            {"name": h.name, "address": str(h.address)} for p in cluster.lab_pools for h in p.hosts
        ],
        "cluster": cluster_spec(cluster),
    }


def _lab(props: Mapping[str, Any]) -> Any:
    from kiln.lab.lifecycle import Lab  # root-only tooling, loaded where a lab is handled

    return Lab(cluster_from_spec(props["cluster"]))


def node_facts(lab: Any) -> dict[str, dict[str, Any]]:
    """Address and preflight facts of each lab node (over SSH with the lab's own key)."""
    nodes = {}
    for target in lab.targets():
        nodes[target.name] = {"address": target.address, "facts": gather(access_of(target))}
    return nodes


def up(props: Mapping[str, Any], report: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Create or repair the lab (idempotent); its recorded state."""
    lab = _lab(props)
    outcome = lab.up(report)
    return {
        "lab": dict(props["lab"]),
        "hosts": list(props["hosts"]),
        "cluster": props["cluster"],
        "nodes": node_facts(lab),
        "changes": list(outcome.changes),
        "sshConfig": str(lab.layout.ssh_config),
        "privateKeyPath": str(lab.layout.private_key),
        "knownHostsPath": str(lab.layout.known_hosts),
    }


def down(props: Mapping[str, Any]) -> list[str]:
    """Remove every machine and kernel object of the lab's id; what was removed."""
    from kiln.lab.layout import LabLayout
    from kiln.lab.lifecycle import teardown

    return teardown(LabLayout(props["lab"]["id"])).changes


def diff(olds: Mapping[str, Any], news: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(reasons to update, properties forcing a replacement) between state and stack.

    Beyond the inputs, the machines themselves are checked: nodes that are not
    running (the host rebooted) or whose facts changed need an update.
    """
    old_lab, new_lab = olds.get("lab") or {}, news.get("lab") or {}
    replaces = [f"lab.{key}" for key in _REPLACING if old_lab.get(key) != new_lab.get(key)]
    if replaces:
        return replaces, replaces
    reasons = []
    if olds.get("hosts") != news.get("hosts"):
        reasons.append("hosts")
    lab = _lab(news)
    down_nodes = sorted(s.name for s in lab.status() if not (s.running and s.ssh))
    if down_nodes:
        reasons.append(f"not running: {', '.join(down_nodes)}")
    elif not reasons:
        recorded = olds.get("nodes") or {}
        for name, node in node_facts(lab).items():
            changed = changed_facts((recorded.get(name) or {}).get("facts"), node["facts"])
            if changed:
                reasons.append(f"{name}: {', '.join(changed)}")
    return reasons, []
