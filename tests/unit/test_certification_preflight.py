"""Certification preflight: state facts stay out of the identity facts, and each becomes a
measurement that fails closed when it could not be read."""

from __future__ import annotations

import pytest

from kiln import preflight
from kiln.certification import preflight as pre
from kiln.stack import load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_run_to_run_facts_never_decide_reprovisioning():
    assert not set(pre.STATE_KEYS) & set(preflight.FACT_KEYS)
    old = {k: "x" for k in preflight.FACT_KEYS}
    new = {**old, "slurm_state": "down*", "rdma_ports": [], "shared_fs": None, "torch": "2.1"}
    assert preflight.changed_facts(old, new) == []


def test_state_lines_parse_into_typed_facts():
    text = (
        "hostname=n1\ntorch=2.13.0+cpu\ntransformers=5.24.0\n"
        "rdma_port=mlx5_0/1 ACTIVE 400Gbps InfiniBand 4096\nrdma_port=mlx5_1/1 DOWN 0Gbps InfiniBand ?\n"
        "shared_fs=fuse.glusterfs\n"
    )
    state = pre.parse_state(text)
    assert state["torch"] == "2.13.0+cpu" and state["shared_fs"] == "fuse.glusterfs"
    assert state["transformers"] == "5.24.0"
    assert state["rdma_ports"][1] == {
        "port": "mlx5_1/1",
        "state": "DOWN",
        "rate": "0Gbps",
        "layer": "InfiniBand",
        "mtu": "?",
    }
    assert state["rdma_setup"][0] == "mlx5_0/1 400Gbps InfiniBand mtu 4096"


def test_measurements_from_facts_and_controller_views():
    cluster = load_stack("lab", REPO / "stacks")
    facts = {
        "ctl1": {"torch": "2.13.0+cpu", "transformers": "5.24.0", "shared_fs": "fuse.glusterfs"},
        "node1": {"torch": "2.13.0+cpu", "transformers": "5.24.0", "shared_fs": "none"},
        "node2": {"torch": None, "transformers": "5.24.0", "shared_fs": "fuse.glusterfs"},
    }
    slurm = {"node1": "idle", "node2": "idle*"}  # '*': not responding
    targets = {"ctl1": "up", "node1": "up"}
    found = {
        (m["name"], m["subject"]): m["value"]
        for m in pre.measurements(cluster, facts, slurm, targets)
    }
    assert found[("preflight.shared_fs_mounted", "node1")] is False
    assert found[("preflight.runtime_ready", "node2")] is False
    assert found[("preflight.runtime_ready", "ctl1")] is True
    assert found[("preflight.slurm_node_ready", "node1")] is True
    assert found[("preflight.slurm_node_ready", "node2")] is False
    assert found[("preflight.prometheus_target_up", "node2")] is None  # not scraped: unknown
    assert ("preflight.slurm_node_ready", "ctl1") not in found  # the controller runs no slurmd


def test_the_state_command_is_posix_sh_and_runs_here(tmp_path):
    import subprocess

    cluster = load_stack("lab", REPO / "stacks")
    command = preflight.FACTS_COMMAND + pre.state_command(cluster, str(tmp_path / "venv"))
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    state = pre.parse_state(proc.stdout)
    assert state["torch"] is None and state["transformers"] is None
    assert state["shared_fs"] == "none"


def test_a_target_not_scraped_yet_is_waited_for_not_reported_missing(monkeypatch):
    """Right after provisioning Prometheus has not scraped yet: certify must not fail on that."""
    import contextlib
    import json

    from kiln.ssh import CommandResult

    cluster = load_stack("lab", REPO / "stacks")

    def body(health):
        targets = [
            {"labels": {"job": "node", "node": n}, "health": health.get(n, "unknown")}
            for n in ("ctl1", "node1", "node2")
        ]
        return json.dumps({"data": {"activeTargets": targets}})

    answers = iter(
        [
            CommandResult(0, "node1 idle\nnode2 idle\n", ""),
            CommandResult(7, "", "connection refused"),  # Prometheus still starting
            CommandResult(0, body({"ctl1": "up"}), ""),
            CommandResult(0, body({"ctl1": "up", "node1": "up", "node2": "down"}), ""),
        ]
    )
    monkeypatch.setattr(pre.ssh, "connect", lambda target, timeout: contextlib.nullcontext())
    monkeypatch.setattr(pre.ssh, "run", lambda client, command, timeout: next(answers))
    monkeypatch.setattr(pre.time, "sleep", lambda s: None)
    slurm, targets, error = pre.controller_views(None, cluster, 9090, 10)
    assert error is None and slurm == {"node1": "idle", "node2": "idle"}
    assert targets == {"ctl1": "up", "node1": "up", "node2": "down"}  # a real "down" stays down
