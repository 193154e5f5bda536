"""Lab machines are real hosts: own hostname, systemd, SSH, a network between them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kiln import ssh
from kiln.lab import node
from kiln.lab.layout import LabLayout, NodePaths
from kiln.lab.lifecycle import Lab, teardown
from tests.conftest import kiln_cli
from tests.lab.conftest import TEST_LAB_ID

pytestmark = pytest.mark.lab


def _on(lab: Lab, name: str, command: str) -> ssh.CommandResult:
    target = next(t for t in lab.targets() if t.name == name)
    with ssh.connect(target) as client:
        return ssh.run(client, command)


def test_each_node_has_its_own_hostname_systemd_and_identity(two_node_lab: Lab):
    seen_ids = set()
    for name in ("t1", "t2"):
        result = _on(
            two_node_lab, name, "hostname; systemctl is-system-running; cat /etc/machine-id"
        )
        hostname, state, machine_id = result.stdout.split()
        assert hostname == name
        assert state == "running"
        seen_ids.add(machine_id)
        # Its own process tree: PID 1 is systemd inside the node.
        assert _on(two_node_lab, name, "cat /proc/1/comm").stdout.strip() == "systemd"
    assert len(seen_ids) == 2, "machine-ids must differ between nodes"


def test_nodes_reach_each_other_by_name_and_address(two_node_lab: Lab):
    t2 = next(h for h in two_node_lab.hosts if h.name == "t2")
    by_name = _on(two_node_lab, "t1", "ping -c 2 -W 2 t2")
    assert by_name.exit_code == 0, by_name.stdout + by_name.stderr
    assert str(t2.address) in by_name.stdout
    # sshd on t2 answers t1 over the lab network (a TCP connection, not just ICMP).
    probe = f"python3 -c 'import socket; socket.create_connection((\"{t2.address}\", 22), 3)'"
    assert _on(two_node_lab, "t1", probe).exit_code == 0


def test_host_keys_are_verified_not_trusted_on_first_use(two_node_lab: Lab):
    target = two_node_lab.targets()[0]
    wrong = target.known_hosts.parent / "wrong_known_hosts"
    other = two_node_lab.targets()[1]
    # t1's address with t2's host key: a changed key must be refused.
    key = other.known_hosts.read_text().splitlines()[1].split(" ", 1)[1]
    wrong.write_text(f"{target.address} {key}\n")
    with pytest.raises(Exception, match="HOST KEY CHANGED since it was trusted in"):
        ssh.connect(ssh.SshTarget(target.name, target.address, "root", target.key_file, wrong))


def test_second_up_changes_nothing_and_says_so(two_node_lab: Lab):
    outcome = two_node_lab.up()
    assert outcome.changes == []
    assert all(n.ssh and n.systemd == "running" for n in outcome.nodes)
    result = kiln_cli(
        "lab",
        "up",
        "--no-provision",
        "--stack",
        "labtest",
        "--stacks-dir",
        str(two_node_lab.stacks_dir),
    )
    assert result.returncode == 0, result.stderr
    assert "already up: nothing changed" in result.stdout


def test_up_reboots_a_node_whose_machine_died(two_node_lab: Lab):
    # What happens to every node when the session that started it ends.
    paths = NodePaths(two_node_lab.layout.node_dir("t2"))
    os.kill(node.nspawn_pid(paths), signal.SIGKILL)
    outcome = two_node_lab.up()
    assert outcome.changes == ["t2: booted"]
    assert _on(two_node_lab, "t2", "hostname").stdout.strip() == "t2"


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def _lab_traces() -> list[str]:
    """Everything on this host that carries the test lab's tags."""
    layout = LabLayout(TEST_LAB_ID)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = _links()
    mounts = Path("/proc/self/mounts").read_text()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    traces = [f"netns {n}" for n in netns.split() if n.startswith(layout.netns_prefix)]
    traces += [f"link {name}" for name in links if name.startswith(f"kl-{TEST_LAB_ID}-")]
    traces += [f"mount {line}" for line in mounts.splitlines() if str(layout.directory) in line]
    traces += [f"rule {line}" for line in rules.splitlines() if layout.rule_tag in line]
    traces += [f"dir {layout.directory}"] if layout.directory.exists() else []
    return traces


def test_down_leaves_nothing_behind_and_is_idempotent(two_node_lab: Lab):
    assert _lab_traces(), "the lab should be visible on the host before down"
    # Links of other labs come and go meanwhile (the suite runs two modules at once): a link
    # named like another lab's, whose id starts with this one's, stands in for them.
    canary = f"kl-{TEST_LAB_ID}x-canary"
    subprocess.run(["ip", "link", "add", canary, "type", "bridge"], check=True)
    try:
        hosts_own = {name for name in _links() if not name.startswith("kl-")}
        stacks = str(two_node_lab.stacks_dir)
        result = kiln_cli("lab", "down", "--stack", "labtest", "--stacks-dir", stacks)
        assert result.returncode == 0, result.stderr
        assert _lab_traces() == []
        assert not any(
            node.nspawn_pid(NodePaths(two_node_lab.layout.node_dir(n))) for n in ("t1", "t2")
        )
        again = kiln_cli("lab", "down", "--stack", "labtest", "--stacks-dir", stacks)
        assert again.returncode == 0 and "nothing to remove" in again.stdout
        # Down touches only its own lab: the look-alike and the host's own links are still there.
        links = _links()
        assert canary in links and hosts_own <= links
    finally:
        subprocess.run(["ip", "link", "del", canary], check=False)
    assert teardown(LabLayout(TEST_LAB_ID)).changes == []
