"""Roles base and node_exporter on fresh lab nodes: converge, converge again (no change), verify.

The stack has a management network the lab does not give its nodes: each node gets a
second address there before the first converge, so node_exporter must find it in the
host's facts. node_exporter serves TLS with basic auth (a self-signed certificate made
here, a password file), and is scraped from the other node as Prometheus would.
"""

from __future__ import annotations

import json
import resource
import shlex
from pathlib import Path

import pytest

from kiln import monitoring_web
from kiln.config import BasicAuth
from kiln.hostcmd import run
from kiln.lab.lifecycle import Lab
from kiln.provision import provision
from tests.certs import self_signed
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

ROLES = ["base", "node_exporter"]
MANAGEMENT_NETWORK = "10.78.93.0/24"
# Each node's address there: the same host part as its lab address (.10, .11).
MANAGEMENT = {"b1": "10.78.93.10", "b2": "10.78.93.11"}
PASSWORD = "kiln-lab-node-exporter-Pa55"
WEB_DIR = "/etc/prometheus-node-exporter"


@pytest.fixture(scope="module")
def lab(lab_factory, tmp_path_factory) -> Lab:
    secrets_dir = tmp_path_factory.mktemp("web")
    cert, key = self_signed(secrets_dir, MANAGEMENT.values())
    password = secrets_dir / "password"
    password.write_text(PASSWORD + "\n")
    monitoring = {
        "basicAuth": {"passwordFile": str(password)},
        "tls": {"certificateFile": str(cert), "keyFile": str(key)},
    }
    lab = lab_factory(
        [{"name": "b1"}, {"name": "b2"}],
        "kb1",
        "10.77.93.0/24",
        managementNetwork=MANAGEMENT_NETWORK,
        monitoring=monitoring,
    )
    for name, address in MANAGEMENT.items():
        run(["ip", "-n", lab.layout.netns(name), "addr", "add", f"{address}/24", "dev", "eth0"])
    assert_converged(converge(lab, ROLES))
    return lab


def scrape(lab: Lab, client: str, server: str, auth: str | None = PASSWORD) -> tuple[int, str]:
    """`client` fetches `server`'s /metrics at its management address, over TLS verified
    against the certificate the role installed; (HTTP status, body)."""
    code = f"""
import base64, ssl, sys, urllib.error, urllib.request
r = urllib.request.Request("https://{MANAGEMENT[server]}:9100/metrics")
if {auth!r}:
    r.add_header("Authorization", "Basic " + base64.b64encode(b"kiln:" + {auth!r}.encode()).decode())
x = ssl.create_default_context(cafile="{WEB_DIR}/tls.crt")
try:
    with urllib.request.urlopen(r, timeout=10, context=x) as response:
        print(response.status); print(response.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
"""
    out = host(lab, client).check_output(f"python3 -c {shlex.quote(code)}")
    status, _, body = out.partition("\n")
    return int(status), body


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
    for name, other in (("b1", "b2"), ("b2", "b1")):
        node = host(lab, name)
        assert node.service("prometheus-node-exporter").is_running
        node.run_test(
            "echo 'kiln_probe{source=\"test\"} 42' > /var/lib/prometheus/node-exporter/probe.prom"
        )
        # Scraped from the other node over the management network, as Prometheus will.
        status, body = scrape(lab, other, name)
        assert status == 200
        assert 'kiln_probe{source="test"} 42' in body
        assert "node_cpu_seconds_total" in body


def test_node_exporter_listens_on_the_management_address_only(lab: Lab):
    for h in lab.hosts:
        node = host(lab, h.name)
        assert node.socket(f"tcp://{MANAGEMENT[h.name]}:9100").is_listening, h.name
        for elsewhere in ("0.0.0.0", "127.0.0.1", str(h.address)):
            assert not node.socket(f"tcp://{elsewhere}:9100").is_listening, (h.name, elsewhere)
        listening = [s for s in node.socket.get_listening_sockets() if s.endswith(":9100")]
        assert listening == [f"tcp://{MANAGEMENT[h.name]}:9100"], (h.name, listening)


def test_basic_auth_turns_away_a_scrape_without_the_password(lab: Lab):
    assert scrape(lab, "b2", "b1", auth=None)[0] == 401
    assert scrape(lab, "b2", "b1", auth="not-the-password")[0] == 401


def test_key_and_web_config_are_the_daemons_only(lab: Lab):
    # Debian's prometheus-node-exporter runs as prometheus.
    assert "User=prometheus" in host(lab, "b1").check_output(
        "systemctl cat prometheus-node-exporter"
    )
    hashed = monitoring_web.password_hash(lab.cluster.name, "kiln", PASSWORD)
    for name in ("b1", "b2"):
        node = host(lab, name)
        for path, mode in (("web.yml", 0o400), ("tls.key", 0o400), ("tls.crt", 0o644)):
            f = node.file(f"{WEB_DIR}/{path}")
            assert (f.mode, f.user, f.group) == (mode, "prometheus", "prometheus"), (name, path)
        web = node.check_output(f"cat {WEB_DIR}/web.yml")
        assert hashed in web and PASSWORD not in web
        assert f"--web.config.file={WEB_DIR}/web.yml" in node.check_output(
            "cat /etc/default/prometheus-node-exporter"
        )


def test_a_new_password_changes_only_the_web_config(lab: Lab, tmp_path: Path):
    """Check mode, with another password: the web config of each node, and nothing else."""
    other = tmp_path / "password"
    other.write_text("another-password-1\n")
    auth = BasicAuth(password_file=str(other))
    cluster = lab.cluster.model_copy(
        update={"monitoring": lab.cluster.monitoring.model_copy(update={"basic_auth": auth})}
    )
    result = converge(lab, ["node_exporter"], check=True, cluster=cluster)
    assert_converged(result)
    # The restart follows the file (a TLS change needs one; a password alone would not).
    expected = ["node_exporter : Write the web config", "node_exporter : Restart node_exporter"]
    assert result.changes == dict.fromkeys(("b1", "b2"), expected), result.changes


def test_sshd_takes_keys_only(lab: Lab):
    for name in ("b1", "b2"):
        node = host(lab, name)
        settings = dict(
            line.split(" ", 1) for line in node.check_output("sshd -T").splitlines() if " " in line
        )
        assert settings["passwordauthentication"] == "no", name
        assert settings["kbdinteractiveauthentication"] == "no", name
        assert settings["permitrootlogin"] in ("prohibit-password", "without-password"), name
        drop_in = node.file("/etc/ssh/sshd_config.d/10-kiln-auth.conf")
        assert (drop_in.mode, drop_in.user) == (0o644, "root")
        assert drop_in.contains("^PasswordAuthentication no$")


def test_a_host_without_a_management_address_is_named(lab: Lab):
    """b2 loses its address in the management network: the role stops there, naming it."""
    netns = lab.layout.netns("b2")
    run(["ip", "-n", netns, "addr", "del", f"{MANAGEMENT['b2']}/24", "dev", "eth0"])
    try:
        result = converge(lab, ["node_exporter"], limit=["b2"], check=True)
    finally:
        run(["ip", "-n", netns, "addr", "add", f"{MANAGEMENT['b2']}/24", "dev", "eth0"])
    assert result.hosts["b2"].status == "failed"
    assert any(
        f"b2 has no IPv4 address in the management network {MANAGEMENT_NETWORK}" in e
        for e in result.errors
    ), result.errors


def test_secrets_in_the_environment_never_reach_provisioning_artifacts(lab: Lab, monkeypatch):
    token = "pul-" + "7f3a9c2e" * 5  # what PULUMI_ACCESS_TOKEN looks like
    monkeypatch.setenv("PULUMI_ACCESS_TOKEN", token)
    result = converge(lab, ROLES)
    assert_converged(result)
    # Nor the basic auth password, its hash or the TLS key, which travel as extra vars.
    tls_key = Path(lab.cluster.monitoring.tls.key_file).read_text().splitlines()[1]
    hashed = monitoring_web.password_hash(lab.cluster.name, "kiln", PASSWORD)
    secret_values = [token, PASSWORD, hashed, tls_key]
    leaked = [
        (p, value[:8])
        for p in result.artifacts.rglob("*")
        if p.is_file()
        for value in secret_values
        if value in p.read_text(errors="replace")
    ]
    assert leaked == []
    assert not any(value in json.dumps(result.errors) for value in secret_values)


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
