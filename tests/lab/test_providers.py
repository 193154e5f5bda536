"""The dynamic providers' functions against real lab machines: create, diff, update, delete.

What `pulumi up` does through these providers, minus the engine: a second
diff after create reports no change, a changed role or a stopped machine is
a change, and delete removes exactly what the resource owns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from components.providers import LabMachinesProvider, PlaybookProvider, PreflightProvider
from kiln import drift, lab_machines, ssh
from kiln.lab import network, node
from kiln.lab.layout import NodePaths
from kiln.lab.lifecycle import Lab

pytestmark = pytest.mark.lab

HOSTS = ["p1", "p2"]
PROBE_TASKS = """\
- name: Write the probe file
  ansible.builtin.copy:
    dest: /etc/kiln-probe
    content: "{{ kiln_probe_text }}\\n"
    mode: "0644"
"""


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    # scheduler kubernetes: no Slurm plays and no munge key written for this lab.
    return lab_factory([{"name": n} for n in HOSTS], "kp1", "10.77.98.0/24", scheduler="kubernetes")


def _on(lab: Lab, name: str, command: str) -> str:
    target = next(t for t in lab.targets() if t.name == name)
    with ssh.connect(target) as client:
        return ssh.run(client, command).stdout


@pytest.fixture
def probe_roles(tmp_path: Path) -> Path:
    """A one-task roles tree: real Ansible on real nodes, in seconds."""
    roles = tmp_path / "roles"
    (roles / "kiln_probe" / "tasks").mkdir(parents=True)
    (roles / "kiln_probe" / "defaults").mkdir()
    (roles / "kiln_probe" / "tasks" / "main.yml").write_text(PROBE_TASKS)
    (roles / "kiln_probe" / "defaults" / "main.yml").write_text("kiln_probe_text: v1\n")
    (roles / "site.yml").write_text(
        "- name: Probe\n  hosts: all\n  become: true\n  roles: [kiln_probe]\n"
    )
    return roles


def _playbook_props(lab: Lab, roles: Path) -> dict:
    inputs = drift.playbook_inputs(lab.cluster, "node", roles, lab.cluster.node_pools[0])
    return {**inputs, "factsDigest": "facts", "secrets": {"sshKeys": {}, "extraVars": {}}}


def test_playbook_runs_the_roles_then_diffs_clean_then_follows_a_role_change(
    lab: Lab, probe_roles: Path
):
    provider = PlaybookProvider()
    props = _playbook_props(lab, probe_roles)
    created = provider.create(props)
    summary = created.outs["summary"]
    assert sorted(summary) == HOSTS
    assert all(s["status"] == "changed" and s["failed"] == 0 for s in summary.values()), summary
    assert "secrets" not in created.outs
    assert _on(lab, "p2", "cat /etc/kiln-probe") == "v1\n"

    # Second diff against the recorded state: nothing to do, and no Ansible run.
    assert (
        provider.diff(created.id, created.outs, _playbook_props(lab, probe_roles)).changes is False
    )

    # Applying the same again changes nothing on the hosts.
    again = provider.update(created.id, created.outs, props).outs["summary"]
    assert {name: s["changed"] for name, s in again.items()} == {"p1": 0, "p2": 0}

    (probe_roles / "kiln_probe" / "defaults" / "main.yml").write_text("kiln_probe_text: v2\n")
    changed = _playbook_props(lab, probe_roles)
    assert provider.diff(created.id, created.outs, changed).changes is True
    provider.update(created.id, created.outs, changed)
    assert _on(lab, "p1", "cat /etc/kiln-probe") == "v2\n"

    # Delete: roles have no undo, the hosts keep their configuration.
    provider.delete(created.id, created.outs)
    assert _on(lab, "p1", "cat /etc/kiln-probe") == "v2\n"


def test_preflight_reads_a_host_as_a_static_pool_would(lab: Lab):
    target = next(t for t in lab.targets() if t.name == "p1")
    props = {
        "host": "p1",
        "address": target.address,
        "user": target.user,
        "port": target.port,
        # The key text and known_hosts lines, as a Pulumi secret and config hold them.
        "privateKey": Path(target.key_file).read_text(),
        "privateKeyPath": None,
        "knownHosts": Path(target.known_hosts).read_text(),
    }
    provider = PreflightProvider()
    created = provider.create(props)
    facts = created.outs["facts"]
    assert facts["hostname"] == "p1"
    assert facts["kernel"] == os.uname().release  # lab nodes share this host's kernel
    assert re.fullmatch(r"[0-9a-f]{32}", facts["machine_id"] or ""), facts
    assert facts["os"] == "debian 12" and facts["cpus"] >= 1
    assert "privateKey" not in created.outs  # recorded state holds no key

    assert provider.diff(created.id, created.outs, props).changes is False
    reinstalled = {**created.outs, "facts": {**facts, "machine_id": "0" * 32}}
    assert provider.diff(created.id, reinstalled, props).changes is True
    moved = provider.diff(created.id, created.outs, {**props, "address": "10.77.98.200"})
    assert moved.replaces == ["address"]


def test_lab_provider_recreates_stopped_machines_then_deletes_everything(lab: Lab):
    provider = LabMachinesProvider()
    props = lab_machines.lab_inputs(lab.cluster)
    # The lab is up already: create is idempotent and records each node's facts.
    created = provider.create(props)
    assert created.id == "kp1"
    assert sorted(created.outs["nodes"]) == HOSTS
    assert created.outs["nodes"]["p2"]["facts"]["hostname"] == "p2"
    assert provider.diff(created.id, created.outs, props).changes is False

    node.stop(NodePaths(lab.layout.node_dir("p2")))  # as after a reboot of this host
    assert provider.diff(created.id, created.outs, props).changes is True
    updated = provider.update(created.id, created.outs, props).outs
    assert _on(lab, "p2", "hostname").strip() == "p2"
    assert provider.diff(created.id, updated, props).changes is False

    provider.delete(created.id, updated)
    assert not lab.layout.directory.exists()
    assert not [n for n in network.namespaces() if n.startswith(lab.layout.netns_prefix)]
    assert not [link for link in network.links() if lab.layout.link_pattern.match(link)]
