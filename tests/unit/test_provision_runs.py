"""What `kiln provision` hands Ansible, what it reads back, and when `kiln lab up` may skip it.

ansible-runner is replaced by a recorder here (the real runs are the lab
tests'); what is asserted is what reaches it from the stack (forks, batch and
failure-limit play keywords, check and diff flags) and what the CLI makes of
the events it returns (per-host changed tasks, time per task, the record).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kiln.converge_record as record
import kiln.provision
from kiln.config import Cluster
from kiln.converge_record import Inputs, provision_and_record, rerun_reasons
from kiln.provision import provision
from kiln.stack import cluster_from_document

pytestmark = pytest.mark.unit

FACTS = {"hostname": "n1", "machine_id": "m1", "kernel": "6.1.0", "cpus": 8}


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def static_cluster(tmp_path: Path, **settings: Any) -> Cluster:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    return cluster_from_document(
        {
            "config": {
                "kiln:cluster": {
                    "name": "runs",
                    "scheduler": "kubernetes",  # no munge key to make
                    "nodePools": [
                        {
                            "name": "gpu",
                            "provider": "static",
                            "ssh": {"privateKeyPath": str(key)},
                            "hosts": [
                                {"name": "n1", "address": "10.1.0.1"},
                                {"name": "n2", "address": "10.1.0.2"},
                            ],
                        }
                    ],
                    **settings,
                },
                "kiln:kubeconfig": {"secure": "v1:placeholder"},
            }
        },
        "runs",
    )


class Runner:
    """Stands in for ansible_runner.run: records its arguments, replays `events`."""

    def __init__(self, events: list[dict[str, Any]], stats: dict[str, Any] | None = None):
        self.events = events
        self.stats = stats
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(kwargs)
        for event in self.events:
            kwargs["event_handler"](event)
        artifacts = Path(kwargs["artifact_dir"]) / "run"
        artifacts.mkdir(parents=True, exist_ok=True)
        stats = self.stats or {"ok": {"n1": 3, "n2": 3}, "changed": {}}
        return SimpleNamespace(config=SimpleNamespace(artifact_dir=str(artifacts)), stats=stats)


def ok(host: str, task: str, seconds: float, changed: bool = False, role: str = "base") -> dict:
    data = {"host": host, "task": task, "role": role, "duration": seconds}
    return {
        "event": "runner_on_ok",
        "stdout": f"changed: [{host}]\n--- before\n+++ after" if changed else f"ok: [{host}]",
        "event_data": {**data, "res": {"changed": changed}},
    }


def test_stack_provisioning_settings_reach_the_runner(tmp_path, monkeypatch):
    runner = Runner([])
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    cluster = static_cluster(
        tmp_path, provisioning={"forks": 64, "batchSize": "25%", "maxFailPercentage": 10}
    )
    provision(cluster)
    call = runner.calls[0]
    assert call["forks"] == 64
    assert call["extravars"]["kiln_batch_size"] == "25%"
    assert call["extravars"]["kiln_max_fail_percentage"] == 10
    assert call["cmdline"] is None  # a real run: no check mode


def test_mitogen_runs_the_plays_unless_the_stack_opts_out(tmp_path, monkeypatch):
    runner = Runner([])
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    provision(static_cluster(tmp_path))
    env = runner.calls[0]["envvars"]
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"  # Mitogen enforces it (lab test)
    provision(static_cluster(tmp_path, provisioning={"mitogen": False}))
    assert "ANSIBLE_STRATEGY" not in runner.calls[1]["envvars"]


def test_site_plays_take_batch_size_and_failure_limit_from_those_variables():
    import yaml

    from tests.conftest import REPO

    for play in yaml.safe_load((REPO / "roles" / "site.yml").read_text()):
        assert "kiln_batch_size" in play["serial"], play["name"]
        assert "kiln_max_fail_percentage" in play["max_fail_percentage"], play["name"]


@pytest.mark.parametrize(
    "settings",
    [
        {"forks": 0},
        {"batchSize": "0"},
        {"batchSize": "150%"},
        {"batchSize": "half"},
        {"maxFailPercentage": 101},
    ],
)
def test_impossible_provisioning_settings_are_refused(tmp_path, settings):
    from kiln.stack import ConfigError

    with pytest.raises(ConfigError) as refused:
        static_cluster(tmp_path, provisioning=settings)
    assert "provisioning" in str(refused.value.problems)


def test_check_mode_reports_what_would_change_per_host_and_task(tmp_path, monkeypatch):
    runner = Runner(
        [
            ok("n1", "Gathering Facts", 2.0, role=""),
            ok("n1", "Apply sysctl settings", 0.5, changed=True),
            ok("n2", "Apply sysctl settings", 0.25),
            ok("n2", "Gathering Facts", 1.5, role=""),
        ],
        stats={"ok": {"n1": 2, "n2": 2}, "changed": {"n1": 1}},
    )
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", runner)
    result = provision(static_cluster(tmp_path), check=True, diff=True)
    assert runner.calls[0]["cmdline"] == "--check --diff"
    assert result.check and result.changed == 1
    assert result.changes == {"n1": ["base : Apply sysctl settings"]}
    assert result.task_seconds == {"Gathering Facts": 3.5, "base : Apply sysctl settings": 0.75}
    assert result.diffs and "+++ after" in result.diffs[0]


def inputs(hash_: str = "h", secrets: str | None = None, **facts: Any) -> Inputs:
    return Inputs(hash_, secrets, facts or {"n1": dict(FACTS)})


def test_a_converge_is_skipped_only_when_hash_secrets_and_every_hosts_facts_match():
    recorded = {"hash": "h", "secrets": None, "facts": {"n1": dict(FACTS)}}
    assert rerun_reasons(recorded, inputs()) == []
    assert rerun_reasons(None, inputs()) == ["no successful converge of every host is recorded"]
    assert rerun_reasons(recorded, inputs("h2")) == [
        "roles, validation suite, inventory or batch settings changed"
    ]
    assert rerun_reasons(recorded, inputs(secrets="rotated")) == ["secret variables changed"]
    assert rerun_reasons(recorded, inputs(n1={**FACTS, "kernel": "6.12.0"})) == [
        "n1: kernel changed"
    ]
    assert rerun_reasons(recorded, inputs(n1=None)) == ["n1: could not read its facts"]
    assert rerun_reasons(recorded, inputs(n1=FACTS, n2=FACTS)) == ["n2: not in the last converge"]


def test_only_a_successful_run_over_every_host_is_recorded(tmp_path, monkeypatch):
    cluster = static_cluster(tmp_path)
    monkeypatch.setattr(record, "current_inputs", lambda c, a: inputs())
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", Runner([]))
    provision_and_record(cluster, ["n1"])
    assert record.load(cluster) is None  # one host only: the other may be stale
    provision_and_record(cluster)
    assert record.load(cluster)["hash"] == "h"
    failed = Runner([], stats={"ok": {"n1": 1}, "failures": {"n2": 1}})
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", failed)
    provision_and_record(cluster)
    assert record.load(cluster) is None


def test_a_check_that_finds_drift_drops_the_record(tmp_path, monkeypatch):
    cluster = static_cluster(tmp_path)
    monkeypatch.setattr(record, "current_inputs", lambda c, a: inputs())
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", Runner([]))
    provision_and_record(cluster)
    provision_and_record(cluster, check=True)  # nothing would change: still holds
    assert record.load(cluster) is not None
    drift = Runner(
        [ok("n2", "Apply sysctl settings", 0.1, changed=True)],
        stats={"ok": {"n1": 1, "n2": 1}, "changed": {"n2": 1}},
    )
    monkeypatch.setattr(kiln.provision.ansible_runner, "run", drift)
    provision_and_record(cluster, check=True)
    assert record.load(cluster) is None


def test_site_digest_follows_inventory_and_batch_settings(tmp_path):
    from kiln.inventory import access_for

    cluster = static_cluster(tmp_path)
    before = record.site_digest(cluster, access_for(cluster))
    assert record.site_digest(cluster, access_for(cluster)) == before
    batched = static_cluster(tmp_path, provisioning={"batchSize": "1"})
    assert record.site_digest(batched, access_for(batched)) != before
    monitored = static_cluster(tmp_path, monitoring={"retention": "30d"})
    assert record.site_digest(monitored, access_for(monitored)) != before


def test_a_corrupt_record_means_converge_again(tmp_path):
    cluster = static_cluster(tmp_path)
    path = record.record_path(cluster)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert record.load(cluster) is None
