"""The Prometheus server through roles/site.yml: it scrapes every node, alerts, keeps the stack's retention.

Queried from this host over the lab network, as an operator's browser or the
certification run would. The test that stops a node_exporter comes last and
starts it again.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kiln import secrets
from kiln.lab.lifecycle import Lab
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host, wait_for

pytestmark = pytest.mark.lab

HOSTS = [{"name": "pctl", "roles": ["controller"]}, {"name": "pc1"}, {"name": "pc2"}]
NODES = ["pc1", "pc2", "pctl"]
RULES = {
    "NodeDown",
    "NodeTextfileMetricsStale",
    "NodeTextfileScrapeError",
    "GpuXidError",
    "GpuTemperatureHigh",
    "GpuEccDoubleBitErrors",
}


@pytest.fixture(scope="module")
def lab(lab_factory) -> Iterator[Lab]:
    # A retention other than the default shows the stack setting reaches the server.
    lab = lab_factory(HOSTS, "ks6", "10.77.97.0/24", monitoring={"retention": "3d"})
    assert_converged(converge(lab))
    yield lab
    # The throwaway cluster's munge key (site.yml also sets up Slurm).
    shutil.rmtree(secrets.secrets_dir(lab.cluster.name), ignore_errors=True)


@pytest.fixture(scope="module")
def api(lab: Lab) -> Callable[..., Any]:
    controller = next(str(h.address) for h in lab.hosts if h.name == "pctl")

    def get(path: str, **params: str) -> Any:
        url = f"http://{controller}:9090/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    return get


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


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab))


def test_server_runs_on_the_controller_only(lab: Lab):
    server = host(lab, "pctl").service("prometheus")
    assert server.is_running and server.is_enabled
    for name in ("pc1", "pc2"):
        assert not host(lab, name).package("prometheus").is_installed, name


def test_retention_comes_from_the_stack(api):
    assert api("status/flags")["storage.tsdb.retention.time"] == "3d"


def test_installed_config_and_rules_pass_promtool(lab: Lab):
    controller = host(lab, "pctl")
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


def test_alert_rules_are_loaded_and_healthy(api):
    rules = {r["name"]: r["health"] for g in api("rules")["groups"] for r in g["rules"]}
    assert set(rules) >= RULES
    assert set(rules.values()) <= {"ok", "unknown"}, rules


def test_a_stale_textfile_raises_its_alert(lab: Lab, api):
    pc1 = host(lab, "pc1")
    probe = "/var/lib/prometheus/node-exporter/kiln_stale_probe.prom"
    pc1.run_test(f"echo 'kiln_probe 1' > {probe} && touch -d '3 hours ago' {probe}")
    try:
        states = wait_for(
            "NodeTextfileMetricsStale",
            lambda: alerts(api, "NodeTextfileMetricsStale"),
            lambda a: "pc1" in a,
            90,
        )
        assert states["pc1"] in ("pending", "firing")
        assert "pc2" not in states
    finally:
        pc1.run_test(f"rm -f {probe}")


def test_a_stopped_node_exporter_reports_up_0_and_node_down(lab: Lab, api):
    pc2 = host(lab, "pc2")
    wait_for("pc2 up before", lambda: up(api, "pc2"), "1".__eq__, 60)
    pc2.run_test("systemctl stop prometheus-node-exporter")
    try:
        wait_for("up{node=pc2}", lambda: up(api, "pc2"), "0".__eq__, 60)
        assert up(api, "pc1") == "1"
        down = wait_for("NodeDown", lambda: alerts(api, "NodeDown"), lambda a: "pc2" in a, 60)
        assert down == {"pc2": "pending"} or down == {"pc2": "firing"}
    finally:
        pc2.run_test("systemctl start prometheus-node-exporter")
    wait_for("up{node=pc2} after restart", lambda: up(api, "pc2"), "1".__eq__, 60)
