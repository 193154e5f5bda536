"""Where the exporters and Prometheus listen, and their TLS and basic auth
(kiln.monitoring_web): inventory vars, the password hash, the secret extra vars,
the stack's checks, and the spec resources carry without the password."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import bcrypt
import jinja2
import pytest
import yaml

from kiln import monitoring_web, secrets
from kiln.cluster_spec import cluster_from_spec, cluster_spec
from kiln.errors import UsageError
from kiln.inventory import Access, build_inventory
from kiln.ssh import SshTarget
from kiln.stack import ConfigError, check_key_files, cluster_from_document
from tests.certs import self_signed
from tests.unit.local_playbook import run_local_playbook

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-battery-staple"


def stack(**cluster_changes) -> dict:
    """A static two-pool Slurm stack (controller 10.20.0.5, computes 10.20.1.11-12)."""
    cluster = {
        "name": "web-test",
        "nodePools": [
            {
                "name": "ctl",
                "provider": "static",
                "ssh": {"privateKeyPath": "/nonexistent/key"},
                "hosts": [{"name": "ctl1", "address": "10.20.0.5", "roles": ["controller"]}],
            },
            {
                "name": "gpu",
                "provider": "static",
                "ssh": {"privateKeyPath": "/nonexistent/key"},
                "gpu": {
                    "model": "H100-SXM5-80GB",
                    "perNode": 8,
                    "driver": "550.127.08",
                    "nccl": "2.21.5",
                    "cuda": "12.4",
                },
                "hosts": [
                    {"name": "g1", "address": "10.20.1.11"},
                    {"name": "g2", "address": "10.20.1.12"},
                ],
            },
        ],
        **cluster_changes,
    }
    return {"config": {"kiln:cluster": cluster}}


def load(**cluster_changes):
    return cluster_from_document(stack(**cluster_changes), "test")


def problems(**cluster_changes) -> list[str]:
    try:
        load(**cluster_changes)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def inventory(cluster) -> dict:
    access = Access(
        {
            h.name: SshTarget(h.name, str(h.address), "root", Path("/k"), Path("/kh"))
            for h in cluster.hosts
        }
    )
    return build_inventory(cluster, access)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate naming 127.0.0.1, and its key."""
    return self_signed(tmp_path / "tls", ["127.0.0.1"])


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


# -- the hash ------------------------------------------------------------------------


def test_the_hash_is_bcrypt_of_the_password_and_the_same_on_every_run():
    first = monitoring_web.password_hash("c1", "kiln", PASSWORD)
    monitoring_web.password_hash.cache_clear()
    again = monitoring_web.password_hash("c1", "kiln", PASSWORD)
    assert first == again, "a re-run with the same password must write the same file"
    assert first.startswith(f"$2b${monitoring_web.BCRYPT_COST:02d}$")
    assert bcrypt.checkpw(PASSWORD.encode(), first.encode())
    assert not bcrypt.checkpw(b"wrong", first.encode())


def test_a_new_password_cluster_or_user_gives_a_new_hash():
    base = monitoring_web.password_hash("c1", "kiln", PASSWORD)
    assert monitoring_web.password_hash("c1", "kiln", PASSWORD + "!") != base
    # The salt is derived from cluster and user: the same password elsewhere differs.
    assert monitoring_web.password_hash("c2", "kiln", PASSWORD) != base
    assert monitoring_web.password_hash("c1", "ops", PASSWORD) != base


# -- inventory vars ----------------------------------------------------------------------


def test_without_a_management_network_every_host_binds_to_its_stack_address():
    inv = inventory(load())
    hosts = inv["all"]["hosts"]
    assert {n: h["kiln_management_address"] for n, h in hosts.items()} == {
        "ctl1": "10.20.0.5",
        "g1": "10.20.1.11",
        "g2": "10.20.1.12",
    }
    assert inv["all"]["vars"]["kiln_management_network"] == ""
    assert inv["all"]["vars"]["prometheus_scrape_scheme"] == "http"
    assert inv["all"]["vars"]["prometheus_scrape_basic_auth_user"] == ""


def test_a_host_whose_stack_address_is_outside_the_management_network_picks_it_from_facts():
    cluster = load(managementNetwork="10.20.1.0/24")
    hosts = inventory(cluster)["all"]["hosts"]
    # Inside the network already: no facts needed.
    assert hosts["g1"]["kiln_management_address"] == "10.20.1.11"
    template = jinja2.Environment().from_string(hosts["ctl1"]["kiln_management_address"])
    facts = {"ansible_all_ipv4_addresses": ["10.20.0.5", "172.17.0.1", "10.20.1.200"]}
    assert template.render(**facts) == "10.20.1.200"
    # Edges of the network, and one beside it.
    for address, inside in (("10.20.1.0", True), ("10.20.1.255", True), ("10.20.2.0", False)):
        got = template.render(ansible_all_ipv4_addresses=[address])
        assert got == (address if inside else ""), address
    # No address there (or no facts): empty, and the roles stop naming the host.
    assert template.render(ansible_all_ipv4_addresses=["10.20.0.5"]) == ""
    assert template.render() == ""


def test_odd_prefix_lengths_are_matched_exactly():
    cluster = load(managementNetwork="192.168.64.0/19")
    template = jinja2.Environment().from_string(
        inventory(cluster)["all"]["hosts"]["g2"]["kiln_management_address"]
    )
    assert template.render(ansible_all_ipv4_addresses=["192.168.95.254"]) == "192.168.95.254"
    assert template.render(ansible_all_ipv4_addresses=["192.168.96.1"]) == ""
    assert template.render(ansible_all_ipv4_addresses=["192.168.63.255"]) == ""


def test_tls_and_basic_auth_reach_the_inventory_without_any_secret(tls_files, password_file):
    cert, key = tls_files
    cluster = load(
        monitoring={
            "basicAuth": {"user": "scraper", "passwordFile": str(password_file)},
            "tls": {"certificateFile": str(cert), "keyFile": str(key)},
        }
    )
    inv = inventory(cluster)
    assert inv["all"]["vars"]["prometheus_scrape_scheme"] == "https"
    assert inv["all"]["vars"]["prometheus_scrape_basic_auth_user"] == "scraper"
    text = json.dumps(inv)
    hashed = monitoring_web.password_hash(cluster.name, "scraper", PASSWORD)
    assert PASSWORD not in text and hashed not in text
    assert "PRIVATE KEY" not in text


# -- secret extra vars -----------------------------------------------------------------


def test_the_secret_extra_vars_carry_hash_password_and_pem_files(tls_files, password_file):
    cert, key = tls_files
    cluster = load(
        monitoring={
            "basicAuth": {"passwordFile": str(password_file)},
            "tls": {"certificateFile": str(cert), "keyFile": str(key)},
        }
    )
    extra = monitoring_web.provision_vars(cluster)
    hashed = monitoring_web.password_hash(cluster.name, "kiln", PASSWORD)
    for role in ("node_exporter", "prometheus", "dcgm_exporter"):
        assert extra[f"{role}_web_basic_auth_users"] == {"kiln": hashed}
        assert extra[f"{role}_web_tls_certificate"] == cert.read_text()
        assert extra[f"{role}_web_tls_key"] == key.read_text()
    assert extra["prometheus_scrape_basic_auth_password"] == PASSWORD  # trailing newline gone
    assert extra["prometheus_scrape_ca_certificate"] == cert.read_text()
    # The clear password goes to Prometheus' scrapes only; the exporters get the hash.
    holders = [k for k, v in extra.items() if PASSWORD in json.dumps(v)]
    assert holders == ["prometheus_scrape_basic_auth_password"]
    assert set(extra) == monitoring_web.SECRET_KEYS
    # Through kiln.secrets, beside the munge key, as `kiln provision` passes them.
    combined = secrets.provision_vars(cluster, {"munge_key_b64": "given"})
    assert combined == extra
    # A caller that brings them (the Pulumi program) gets none made again.
    assert monitoring_web.provision_vars(cluster, extra) == {}


def test_off_by_default_no_secret_extra_vars():
    assert monitoring_web.provision_vars(load()) == {}


def test_the_cli_cannot_use_a_pulumi_secret_password():
    cluster = load(monitoring={"basicAuth": {"password": {"secure": "AAABAJ9ciphertext"}}})
    with pytest.raises(UsageError, match=r"monitoring\.basicAuth\.passwordFile: missing"):
        monitoring_web.provision_vars(cluster)


def test_a_clear_password_is_used_and_an_unreadable_file_is_named(tmp_path):
    cluster = load(monitoring={"basicAuth": {"password": PASSWORD}})
    extra = monitoring_web.provision_vars(cluster)
    assert extra["prometheus_scrape_basic_auth_password"] == PASSWORD
    missing = load(monitoring={"basicAuth": {"passwordFile": str(tmp_path / "nope")}})
    with pytest.raises(UsageError, match=r"basicAuth\.passwordFile: cannot read"):
        monitoring_web.provision_vars(missing)


def test_a_tls_file_that_is_no_pem_is_refused_without_its_content(tmp_path, tls_files):
    cert, _ = tls_files
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not-a-key-but-a-secret-1234\n")
    cluster = load(monitoring={"tls": {"certificateFile": str(cert), "keyFile": str(bogus)}})
    with pytest.raises(UsageError, match=r"monitoring\.tls\.keyFile") as caught:
        monitoring_web.provision_vars(cluster)
    assert "not-a-key-but-a-secret" not in str(caught.value)


# -- the stack's checks --------------------------------------------------------------------


def test_basic_auth_needs_a_password_or_a_password_file():
    assert problems(monitoring={"basicAuth": {"user": "kiln"}}) == [
        "kiln:cluster.monitoring.basicAuth: needs the password: set password (a Pulumi "
        "secret, for pulumi up) or passwordFile (a file, for the CLI); both may be set"
    ]
    assert problems(monitoring={"basicAuth": {"passwordFile": "/x"}}) == []
    assert problems(monitoring={"basicAuth": {"password": {"secure": "AAAB"}}}) == []


def test_a_clear_password_too_long_for_bcrypt_is_refused_unechoed():
    secret = "s" * 73
    found = problems(monitoring={"basicAuth": {"password": secret}})
    assert found == [
        "kiln:cluster.monitoring.basicAuth.password: the password is longer than bcrypt's 72 bytes"
    ]
    assert secret not in found[0]


def test_tls_needs_both_files():
    assert problems(monitoring={"tls": {"certificateFile": " ", "keyFile": "/k"}}) == [
        "kiln:cluster.monitoring.tls.certificateFile: empty: the path of a PEM file"
    ]
    found = problems(monitoring={"tls": {"certificateFile": "/c"}})
    assert found == ["kiln:cluster.monitoring.tls.keyFile: Field required"]


def test_kubernetes_stacks_refuse_what_kube_prometheus_stack_cannot_scrape(password_file):
    kube = {"scheduler": "kubernetes"}
    found = problems(**kube, monitoring={"basicAuth": {"passwordFile": str(password_file)}})
    assert any(
        p.startswith("kiln:cluster.monitoring.basicAuth: not on scheduler kubernetes")
        for p in found
    ), found
    found = problems(**kube, managementNetwork="10.20.1.0/24")
    assert any(
        p.startswith("kiln:cluster.managementNetwork: ctl1 have their stack address") for p in found
    ), found
    assert not any(
        "managementNetwork" in p for p in problems(**kube, managementNetwork="10.20.0.0/16")
    )


def test_the_cli_checks_the_files_it_will_read(tmp_path, tls_files, password_file):
    cert, key = tls_files
    good = load(
        monitoring={
            "basicAuth": {"passwordFile": str(password_file)},
            "tls": {"certificateFile": str(cert), "keyFile": str(key)},
        }
    )
    assert [p for p in check_key_files(good) if "monitoring" in p.path] == []
    empty = tmp_path / "empty"
    empty.write_text("\n")
    bad = load(
        monitoring={
            "basicAuth": {"passwordFile": str(tmp_path / "missing")},
            "tls": {"certificateFile": str(key), "keyFile": str(empty)},
        }
    )
    found = {p.path: p.message for p in check_key_files(bad) if "monitoring" in p.path}
    assert found == {
        "kiln:cluster.monitoring.basicAuth.passwordFile": f"no such file: {tmp_path / 'missing'}",
        "kiln:cluster.monitoring.tls.certificateFile": f"{key} is not a PEM file",
        "kiln:cluster.monitoring.tls.keyFile": f"{empty} is not a PEM private key",
    }


# -- what resources carry ---------------------------------------------------------------------


def test_the_spec_leaves_the_password_out_not_masked(password_file):
    cluster = load(
        monitoring={
            "basicAuth": {"user": "ops", "password": PASSWORD, "passwordFile": str(password_file)}
        }
    )
    spec = cluster_spec(cluster)
    assert PASSWORD not in spec and "**" not in spec
    document = json.loads(spec)
    assert document["monitoring"]["basicAuth"] == {
        "user": "ops",
        "passwordFile": str(password_file),
    }
    back = cluster_from_spec(spec)
    assert back.monitoring.basic_auth is not None and back.monitoring.basic_auth.password is None


# -- the roles, rendered from a real inventory ---------------------------------------------------

PLAYBOOK = """
- name: render
  hosts: all
  gather_facts: false
  tasks:
    - name: Derive the scrape targets
      ansible.builtin.include_role:
        name: prometheus
        tasks_from: targets.yml
        public: true
      when: inventory_hostname == 'ctl1'
    - name: Render prometheus.yml
      ansible.builtin.template:
        src: "{{ roles_dir }}/prometheus/templates/prometheus.yml.j2"
        dest: "{{ out }}/prometheus.yml"
        mode: "0600"
      when: inventory_hostname == 'ctl1'
    # After the targets: the roles' defaults, as each host's play would see them.
    - name: Read the exporters' defaults
      ansible.builtin.include_vars:
        file: "{{ roles_dir }}/{{ item }}/defaults/main.yml"
      loop: [node_exporter, dcgm_exporter]
    - name: Note each host's listen addresses
      ansible.builtin.copy:
        content: "{{ {'node_exporter': node_exporter_listen_address, 'dcgm': dcgm_exporter_listen_host} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.listen.json"
        mode: "0600"
"""


def render(tmp_path: Path, cluster, facts: dict[str, list[str]]) -> subprocess.CompletedProcess:
    inv = inventory(cluster)
    for name, hostvars in inv["all"]["hosts"].items():
        hostvars.update(ansible_all_ipv4_addresses=facts[name])
    return run_local_playbook(tmp_path, inv, PLAYBOOK, monitoring_web.provision_vars(cluster))


FACTS = {
    "ctl1": ["10.20.0.5", "192.168.50.5"],
    "g1": ["10.20.1.11", "192.168.50.11"],
    "g2": ["192.168.50.12", "10.20.1.12"],
}


def test_prometheus_scrapes_the_management_addresses_with_tls_and_basic_auth(
    tmp_path, tls_files, password_file
):
    cert, key = tls_files
    cluster = load(
        managementNetwork="192.168.50.0/24",
        monitoring={
            "dcgmExporter": True,
            "basicAuth": {"passwordFile": str(password_file)},
            "tls": {"certificateFile": str(cert), "keyFile": str(key)},
        },
    )
    result = render(tmp_path, cluster, FACTS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert PASSWORD not in result.stdout and "PRIVATE KEY" not in result.stdout
    listen = {h: json.loads((tmp_path / f"{h}.listen.json").read_text()) for h in FACTS}
    assert listen["g2"] == {"node_exporter": "192.168.50.12:9100", "dcgm": "192.168.50.12"}
    assert listen["ctl1"]["node_exporter"] == "192.168.50.5:9100"
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "node", "dcgm"}
    for job in jobs.values():
        assert job["scheme"] == "https"
        assert job["basic_auth"] == {
            "username": "kiln",
            "password_file": "/etc/prometheus/web/scrape.password",
        }
        assert job["tls_config"] == {"ca_file": "/etc/prometheus/web/scrape-ca.crt"}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["192.168.50.5:9090"]}]
    node = {c["labels"]["node"]: c["targets"] for c in jobs["node"]["static_configs"]}
    assert node == {
        "ctl1": ["192.168.50.5:9100"],
        "g1": ["192.168.50.11:9100"],
        "g2": ["192.168.50.12:9100"],
    }
    dcgm = {c["labels"]["node"]: c["targets"] for c in jobs["dcgm"]["static_configs"]}
    assert dcgm == {"g1": ["192.168.50.11:9400"], "g2": ["192.168.50.12:9400"]}


def test_plain_http_and_stack_addresses_without_the_settings(tmp_path):
    result = render(tmp_path, load(), FACTS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["10.20.0.5:9090"]}]
    for job in jobs.values():
        assert job["scheme"] == "http"
        assert "basic_auth" not in job and "tls_config" not in job
    node = {c["labels"]["node"]: c["targets"] for c in jobs["node"]["static_configs"]}
    assert node["g2"] == ["10.20.1.12:9100"]


def test_a_target_without_an_address_in_the_management_network_is_named(tmp_path):
    cluster = load(managementNetwork="192.168.50.0/24")
    result = render(tmp_path, cluster, {**FACTS, "g1": ["10.20.1.11"]})
    assert result.returncode != 0
    assert "g1: no IPv4 address in the management network 192.168.50.0/24" in result.stdout
