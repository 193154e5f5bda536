"""Lab machines as one resource: what makes them change, and what replaces them."""

from __future__ import annotations

import pytest

from kiln import lab_machines
from kiln.lab.lifecycle import NodeStatus
from kiln.stack import load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def props() -> dict:
    return lab_machines.lab_inputs(load_stack("lab", REPO / "stacks"))


def _statuses(running: bool) -> list[NodeStatus]:
    return [
        NodeStatus(n, f"10.77.0.{i}", ["compute"], netns=True, running=running, ssh=running)
        for i, n in enumerate(["ctl1", "node1", "node2"], start=10)
    ]


def test_inputs_name_every_lab_host_with_its_address(props: dict):
    assert props["lab"] == {
        "id": "lab",
        "subnet": "10.77.0.0/24",
        "suite": "bookworm",
        "mirror": None,
    }
    assert props["hosts"] == [
        {"name": "ctl1", "address": "10.77.0.10"},
        {"name": "node1", "address": "10.77.0.11"},
        {"name": "node2", "address": "10.77.0.12"},
    ]


@pytest.mark.parametrize("key", ["id", "subnet", "suite", "mirror"])
def test_new_lab_identity_replaces_without_looking_at_machines(
    props: dict, monkeypatch: pytest.MonkeyPatch, key: str
):
    monkeypatch.setattr(lab_machines, "_lab", lambda _: pytest.fail("must not inspect the lab"))
    news = {**props, "lab": {**props["lab"], key: "changed"}}
    reasons, replaces = lab_machines.diff(props, news)
    assert replaces == [f"lab.{key}"] and reasons == replaces


class FakeLab:
    def __init__(self, running: bool, facts: dict):
        self.running, self.facts = running, facts

    def status(self) -> list[NodeStatus]:
        return _statuses(self.running)


def _recorded(props: dict, kernel: str) -> dict:
    facts = {"hostname": "x", "kernel": kernel}
    return {**props, "nodes": {h["name"]: {"facts": facts} for h in props["hosts"]}}


def test_running_unchanged_lab_is_no_change(props: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lab_machines, "_lab", lambda _: FakeLab(True, {}))
    monkeypatch.setattr(
        lab_machines,
        "node_facts",
        lambda _: {
            h["name"]: {"facts": {"hostname": "x", "kernel": "6.1"}} for h in props["hosts"]
        },
    )
    assert lab_machines.diff(_recorded(props, "6.1"), props) == ([], [])
    reasons, _ = lab_machines.diff(_recorded(props, "6.0"), props)
    assert reasons == [f"{n}: kernel" for n in ("ctl1", "node1", "node2")]


def test_stopped_machines_are_an_update(props: dict, monkeypatch: pytest.MonkeyPatch):
    # After a reboot of this host the nodes are gone; `pulumi up` must boot them again.
    monkeypatch.setattr(lab_machines, "_lab", lambda _: FakeLab(False, {}))
    reasons, replaces = lab_machines.diff(_recorded(props, "6.1"), props)
    assert reasons == ["not running: ctl1, node1, node2"] and replaces == []


def test_added_host_is_an_update(props: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lab_machines, "_lab", lambda _: FakeLab(True, {}))
    monkeypatch.setattr(lab_machines, "node_facts", lambda _: {})
    news = {**props, "hosts": [*props["hosts"], {"name": "node3", "address": "10.77.0.13"}]}
    assert lab_machines.diff(_recorded(props, "6.1"), news)[0] == ["hosts"]
