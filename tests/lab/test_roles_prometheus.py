"""The Prometheus server through roles/site.yml: it scrapes every node, alerts, keeps the stack's retention.

The lab (`site_lab`) is shared with the Slurm tests, which also check that a
second converge of the whole site changes nothing. Queried from this host over
the lab network, as an operator's browser or the certification run would. The
test that stops a node_exporter comes last and starts it again.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from kiln.lab.lifecycle import Lab
from tests.lab.conftest import host, wait_for

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


@pytest.fixture(scope="module")
def api(lab: Lab) -> Callable[..., Any]:
    controller = next(str(h.address) for h in lab.hosts if h.name == "sctl")

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


def test_server_runs_on_the_controller_only(lab: Lab):
    server = host(lab, "sctl").service("prometheus")
    assert server.is_running and server.is_enabled
    for name in ("sc1", "sc2", "sc3"):
        assert not host(lab, name).package("prometheus").is_installed, name


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
