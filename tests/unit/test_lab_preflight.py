"""A lab stack on a host that cannot run lab machines fails before changing anything."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from kiln.cli import app
from kiln.errors import UsageError
from kiln.lab import lifecycle as lab_module
from kiln.lab.lifecycle import Lab
from kiln.stack import cluster_from_document, load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def lab() -> Lab:
    return Lab(load_stack("lab", REPO / "stacks"))


def _no_changes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record any host command the lab would run; none may run after a failed preflight."""
    calls: list[list[str]] = []
    for module in (lab_module.network, lab_module.node):
        monkeypatch.setattr(module, "run", lambda args, **_: calls.append(args))
    return calls


def test_non_root_is_refused_with_what_to_do(lab: Lab, monkeypatch: pytest.MonkeyPatch):
    calls = _no_changes(monkeypatch)
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="need root"):
        lab.up()
    assert calls == []


def test_non_linux_host_is_refused(lab: Lab, monkeypatch: pytest.MonkeyPatch):
    calls = _no_changes(monkeypatch)
    monkeypatch.setattr(lab_module.sys, "platform", "darwin")
    with pytest.raises(UsageError, match="need a Linux host"):
        lab.up()
    assert calls == []


def test_missing_host_tools_are_named(lab: Lab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        lab_module.shutil, "which", lambda tool: None if tool == "debootstrap" else "/bin/x"
    )
    with pytest.raises(UsageError, match="missing host tools: debootstrap"):
        lab.preflight_host()


def test_cli_exits_2_with_one_line_and_no_traceback(monkeypatch: pytest.MonkeyPatch):
    _no_changes(monkeypatch)
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["lab", "up", "--stack", "lab"])
    assert result.exit_code == 2
    assert "need root" in result.output
    assert "Traceback" not in result.output


def test_two_nodes_whose_link_names_collide_are_both_named(monkeypatch: pytest.MonkeyPatch):
    """Host link names keep 5 hex digits of a hash of the node name; the pair that would
    share one is named before anything is made."""
    calls = _no_changes(monkeypatch)
    layout = Lab(load_stack("lab", REPO / "stacks")).layout
    seen: dict[str, str] = {}
    for i in range(200_000):
        name = f"n{i}"
        link = layout.veth(name)
        if link in seen:
            pair = (seen[link], name)
            break
        seen[link] = name
    document = yaml.safe_load((REPO / "stacks" / "Pulumi.lab.yaml").read_text())
    cluster = document["config"]["kiln:cluster"]
    cluster["nodePools"][0]["hosts"] += [{"name": n, "roles": ["compute"]} for n in pair]
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab_module.shutil, "which", lambda tool: "/bin/x")
    with pytest.raises(UsageError) as exc:
        Lab(cluster_from_document(document, "test")).preflight()
    assert f"lab nodes {pair[0]!r} and {pair[1]!r} would share the host link name" in str(exc.value)
    assert calls == []
