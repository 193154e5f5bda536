"""The Prometheus server through roles/site.yml: it scrapes every node, alerts, keeps the stack's retention.

The lab (`site_lab`) is shared with the Slurm tests, which also check that a
second converge of the whole site changes nothing. Queried from this host over
the lab network, as an operator's browser or the certification run would. The
server and the exporters listen on each host's address in the stack (the lab has no
management network) and nowhere else. One test turns on TLS and basic auth for
node_exporter and Prometheus and turns them off again; the test that stops a
node_exporter comes last and starts it again.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from kiln import monitoring_web
from kiln.certification import preflight as pre
from kiln.config import BasicAuth, Cluster, WebTls
from kiln.inventory import access_for
from kiln.lab.lifecycle import Lab
from kiln.provision import provision
from tests.certs import self_signed
from tests.lab.conftest import assert_converged, host, wait_for

pytestmark = pytest.mark.lab

NODES = ["sc1", "sc2", "sc3", "sctl"]
RULES = {
    "NodeDown",
    "NodeTextfileMetricsStale",
    "NodeTextfileScrapeError",
    "GpuXidError",
    "GpuTemperatureHigh",
    "GpuEccDoubleBitErrors",
}


@pytest.fixture(scope="module")
def lab(site_lab: Lab) -> Lab:
    return site_lab


def client(
    lab: Lab, scheme: str = "http", password: str | None = None, ca_file: str | None = None
) -> Callable[..., Any]:
    """GET on the Prometheus API at the controller's address, as a browser there would."""
    controller = next(str(h.address) for h in lab.hosts if h.name == "sctl")
    context = ssl.create_default_context(cafile=ca_file) if scheme == "https" else None

    def get(path: str, **params: str) -> Any:
        url = f"{scheme}://{controller}:9090/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url)
        if password is not None:
            login = base64.b64encode(f"kiln:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {login}")
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    return get


@pytest.fixture(scope="module")
def api(lab: Lab) -> Callable[..., Any]:
    return client(lab)


def node_targets(api) -> dict[str, str]:
    """Health of each node_exporter target, by node."""
    targets = api("targets", state="active")["activeTargets"]
    return {t["labels"]["node"]: t["health"] for t in targets if t["labels"]["job"] == "node"}


def up(api, node: str) -> str | None:
    result = api("query", query=f'up{{job="node",node="{node}"}}')["result"]
    return result[0]["value"][1] if result else None


def alerts(api, name: str) -> dict[str, str]:
    """State (pending/firing) of alert `name`, by node."""
    return {
        a["labels"].get("node", ""): a["state"]
        for a in api("alerts")["alerts"]
        if a["labels"]["alertname"] == name
    }


def test_server_runs_on_the_controller_only(lab: Lab):
    server = host(lab, "sctl").service("prometheus")
    assert server.is_running and server.is_enabled
    for name in ("sc1", "sc2", "sc3"):
        assert not host(lab, name).package("prometheus").is_installed, name


def test_server_and_exporters_listen_on_the_stack_address_only(lab: Lab):
    for h in lab.hosts:
        node = host(lab, h.name)
        ports = ["9100", "9090"] if h.name == "sctl" else ["9100"]
        for port in ports:
            assert node.socket(f"tcp://{h.address}:{port}").is_listening, (h.name, port)
            for elsewhere in ("0.0.0.0", "127.0.0.1"):
                assert not node.socket(f"tcp://{elsewhere}:{port}").is_listening, (h.name, port)
        listening = [
            s for s in node.socket.get_listening_sockets() if s.rsplit(":", 1)[-1] in ports
        ]
        assert sorted(listening) == sorted(f"tcp://{h.address}:{p}" for p in ports), h.name


def test_retention_comes_from_the_stack(api):
    assert api("status/flags")["storage.tsdb.retention.time"] == "3d"


def test_installed_config_and_rules_pass_promtool(lab: Lab):
    controller = host(lab, "sctl")
    for command in (
        "promtool check config /etc/prometheus/prometheus.yml",
        "promtool check rules /etc/prometheus/rules/kiln.rules.yml",
    ):
        result = controller.run(command)
        assert result.rc == 0, result.stdout + result.stderr


def test_every_node_exporter_is_a_target_and_up(lab: Lab, api):
    health = wait_for(
        "node targets", lambda: node_targets(api), lambda h: set(h.values()) == {"up"}, 90
    )
    assert sorted(health) == NODES
    addresses = {
        t["labels"]["node"]: t["labels"]["instance"]
        for t in api("targets", state="active")["activeTargets"]
        if t["labels"]["job"] == "node"
    }
    assert addresses == {h.name: f"{h.address}:9100" for h in lab.hosts}
    assert {name: up(api, name) for name in NODES} == dict.fromkeys(NODES, "1")
    # Its own target is the address it listens on too (it was localhost before).
    controller = next(h.address for h in lab.hosts if h.name == "sctl")
    own = wait_for("prometheus target", lambda: self_target(api), lambda t: t[1] == "up", 60)
    assert own == (f"{controller}:9090", "up")


def self_target(api) -> tuple[str, str] | None:
    targets = api("targets", state="active")["activeTargets"]
    own = [t for t in targets if t["labels"]["job"] == "prometheus"]
    return (own[0]["labels"]["instance"], own[0]["health"]) if own else None


def test_alert_rules_are_loaded_and_healthy(api):
    rules = {r["name"]: r["health"] for g in api("rules")["groups"] for r in g["rules"]}
    assert set(rules) >= RULES
    assert set(rules.values()) <= {"ok", "unknown"}, rules


def test_a_stale_textfile_raises_its_alert(lab: Lab, api):
    sc1 = host(lab, "sc1")
    probe = "/var/lib/prometheus/node-exporter/kiln_stale_probe.prom"
    sc1.run_test(f"echo 'kiln_probe 1' > {probe} && touch -d '3 hours ago' {probe}")
    try:
        states = wait_for(
            "NodeTextfileMetricsStale",
            lambda: alerts(api, "NodeTextfileMetricsStale"),
            lambda a: "sc1" in a,
            90,
        )
        assert states["sc1"] in ("pending", "firing")
        assert "sc2" not in states
    finally:
        sc1.run_test(f"rm -f {probe}")


#: node_exporter on every host, then Prometheus on the controller: what site.yml's
#: monitoring roles are, without the rest of the site.
MONITORING = [
    {"name": "exporters", "hosts": "all", "become": True, "roles": [{"role": "node_exporter"}]},
    {"name": "server", "hosts": "controller", "become": True, "roles": [{"role": "prometheus"}]},
]


def converge_monitoring(cluster: Cluster, tmp_path, secrets: list[str]) -> None:
    """Apply MONITORING to the lab as `cluster` says; none of `secrets` may reach the run's
    artifacts, which are then removed: the lab is shared, and the Slurm module counts on
    finding every run of its own (and none rotated out) there."""
    playbook = tmp_path / "monitoring.yml"
    playbook.write_text(json.dumps(MONITORING))
    result = provision(cluster, playbook=playbook)
    try:
        assert_converged(result)
        assert result.artifacts is not None
        leaked = [
            (str(p), value[:6])
            for p in result.artifacts.rglob("*")
            if p.is_file()
            for value in secrets
            if value in p.read_text(errors="replace")
        ]
        assert leaked == []
    finally:
        if result.artifacts is not None:
            shutil.rmtree(result.artifacts, ignore_errors=True)


def test_with_tls_and_basic_auth_every_target_is_still_up(lab: Lab, api, tmp_path):
    password = "kiln-lab-prometheus-Pa55"
    cert, key = self_signed(tmp_path / "tls", [str(h.address) for h in lab.hosts])
    (tmp_path / "password").write_text(password + "\n")
    monitoring = lab.cluster.monitoring.model_copy(
        update={
            "basic_auth": BasicAuth(password_file=str(tmp_path / "password")),
            "tls": WebTls(certificate_file=str(cert), key_file=str(key)),
        }
    )
    secured = lab.cluster.model_copy(update={"monitoring": monitoring})
    hashed = monitoring_web.password_hash(secured.name, "kiln", password)
    secrets = [password, hashed, key.read_text().splitlines()[1]]
    converge_monitoring(secured, tmp_path, secrets)
    try:
        secure = client(lab, "https", password, str(cert))
        health = wait_for(
            "targets over TLS",
            lambda: {
                (t["labels"]["job"], t["labels"].get("node", "")): (t["health"], t["scrapeUrl"])
                for t in secure("targets", state="active")["activeTargets"]
            },
            lambda h: len(h) == len(NODES) + 1 and {v[0] for v in h.values()} == {"up"},
            120,
        )
        assert all(url.startswith("https://") for _, url in health.values()), health
        # Without the password, or in plain HTTP, the server answers nobody.
        with pytest.raises(urllib.error.HTTPError) as refused:
            client(lab, "https", None, str(cert))("targets")
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            client(lab, "https", "not-it", str(cert))("targets")
        assert wrong.value.code == 401
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            client(lab, "http")("targets")
        # Key, password and web config: the prometheus user's only.
        controller = host(lab, "sctl")
        for path, mode in (
            ("web.yml", 0o400),
            ("tls.key", 0o400),
            ("scrape.password", 0o400),
            ("tls.crt", 0o644),
            ("scrape-ca.crt", 0o644),
        ):
            f = controller.file(f"/etc/prometheus/web/{path}")
            assert (f.mode, f.user, f.group) == (mode, "prometheus", "prometheus"), path
        assert controller.run("promtool check web-config /etc/prometheus/web/web.yml").rc == 0
        assert controller.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
        # What certification's preflight reads, and its query through it, over SSH.
        described = json.loads(controller.check_output("cat /etc/prometheus/kiln-client.json"))
        assert (
            described["url"]
            == f"https://{next(h.address for h in lab.hosts if h.name == 'sctl')}:9090"
        )
        assert password not in json.dumps(described)
        access = access_for(secured)
        _, targets, error = pre.controller_views(access.targets["sctl"], secured, 9090, 10)
        assert error is None and targets == dict.fromkeys(NODES, "up"), (error, targets)
    finally:
        converge_monitoring(lab.cluster, tmp_path, secrets)
    # Off again: plain HTTP, every target up, the web files gone.
    wait_for("node targets", lambda: node_targets(api), lambda h: set(h.values()) == {"up"}, 90)
    assert not host(lab, "sctl").file("/etc/prometheus/web/web.yml").exists


def test_a_stopped_node_exporter_reports_up_0_and_node_down(lab: Lab, api):
    sc2 = host(lab, "sc2")
    wait_for("sc2 up before", lambda: up(api, "sc2"), "1".__eq__, 60)
    sc2.run_test("systemctl stop prometheus-node-exporter")
    try:
        wait_for("up{node=sc2}", lambda: up(api, "sc2"), "0".__eq__, 60)
        assert up(api, "sc1") == "1"
        down = wait_for("NodeDown", lambda: alerts(api, "NodeDown"), lambda a: "sc2" in a, 60)
        assert down == {"sc2": "pending"} or down == {"sc2": "firing"}
    finally:
        sc2.run_test("systemctl start prometheus-node-exporter")
    wait_for("up{node=sc2} after restart", lambda: up(api, "sc2"), "1".__eq__, 60)
