"""Roles base and node_exporter on fresh lab nodes: converge, converge again (no change), verify."""

from __future__ import annotations

import resource
import urllib.request

import pytest

from kiln.lab.lifecycle import Lab
from kiln.provision import provision
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

ROLES = ["base", "node_exporter"]


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    lab = lab_factory([{"name": "b1"}, {"name": "b2"}], "kb1", "10.77.93.0/24")
    assert_converged(converge(lab, ROLES))
    return lab


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab, ROLES))


def test_network_sysctls_are_live(lab: Lab):
    for name in ("b1", "b2"):
        node = host(lab, name)
        assert node.sysctl("net.ipv4.tcp_rmem").split() == ["4096", "87380", "134217728"]
        assert node.sysctl("net.ipv4.tcp_mtu_probing") == 1
        # And they survive a reboot: they are in sysctl.d, not only set once.
        assert node.file("/etc/sysctl.d/90-kiln-net.conf").contains("net.ipv4.tcp_wmem")


def test_limits_apply_to_a_new_login_session(lab: Lab):
    # Lab nodes get exactly this host's hard limit (they cannot exceed it);
    # a new login must be raised to it from the default soft limit of 1024.
    hard_nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    assert hard_nofile > 1024, "this host must allow more than the default to show anything"
    node = host(lab, "b1")
    assert node.run("ulimit -Sn").stdout.strip() == str(hard_nofile)
    assert node.run("ulimit -Hl").stdout.strip() in (
        "unlimited",
        str(resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] // 1024),
    )
    assert node.file("/etc/systemd/system.conf.d/90-kiln-limits.conf").contains(
        "DefaultLimitNOFILE"
    )


def test_base_packages_installed_and_host_global_steps_skipped_in_containers(lab: Lab):
    node = host(lab, "b2")
    for package in ("chrony", "numactl", "pciutils", "ethtool"):
        assert node.package(package).is_installed, package
    # Kernel-wide sysctls and boot parameters belong to the host, not a container.
    assert not node.file("/etc/sysctl.d/90-kiln-kernel.conf").exists
    assert not node.file("/etc/default/grub.d/90-kiln.cfg").exists


def test_node_exporter_serves_metrics_and_textfile_metrics(lab: Lab):
    for name, address in ((h.name, h.address) for h in lab.hosts):
        node = host(lab, name)
        assert node.service("prometheus-node-exporter").is_running
        node.run_test(
            "echo 'kiln_probe{source=\"test\"} 42' > /var/lib/prometheus/node-exporter/probe.prom"
        )
        # Scraped from this host over the lab network, as Prometheus will.
        body = urllib.request.urlopen(f"http://{address}:9100/metrics", timeout=10).read().decode()
        assert 'kiln_probe{source="test"} 42' in body
        assert "node_cpu_seconds_total" in body


def test_secrets_in_the_environment_never_reach_provisioning_artifacts(lab: Lab, monkeypatch):
    token = "pul-" + "7f3a9c2e" * 5  # what PULUMI_ACCESS_TOKEN looks like
    monkeypatch.setenv("PULUMI_ACCESS_TOKEN", token)
    result = converge(lab, ROLES)
    assert_converged(result)
    leaked = [
        p
        for p in result.artifacts.rglob("*")
        if p.is_file() and token in p.read_text(errors="replace")
    ]
    assert leaked == []


def test_an_ansible_error_before_any_host_is_explained(lab: Lab, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  roles: [no_such_role_anywhere]\n")
    result = provision(lab.cluster, playbook=broken)
    assert not result.succeeded
    assert any("no_such_role_anywhere" in e for e in result.errors), result.errors


def test_a_changed_host_key_stops_that_host_and_only_it(lab: Lab):
    """Provisioning (through Mitogen) refuses a host whose key is not the one on record."""
    known_hosts = lab.layout.known_hosts
    original = known_hosts.read_text()
    lines = dict(line.split(" ", 1) for line in original.splitlines())
    b1 = next(names for names in lines if names.endswith(",b1"))
    b2 = next(names for names in lines if names.endswith(",b2"))
    # b1's names with b2's key: what a reinstalled or impersonated b1 would look like.
    known_hosts.write_text(f"{b1} {lines[b2]}\n{b2} {lines[b2]}\n")
    try:
        result = converge(lab, ROLES)
    finally:
        known_hosts.write_text(original)
    assert result.hosts["b1"].status == "unreachable", result.errors
    assert result.hosts["b2"].status == "ok"
    assert any(e.startswith("b1:") for e in result.errors), result.errors
