"""Stages cut from site.yml: each role runs in exactly one stage, with its play's settings."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from kiln.plays import (
    Stage,
    apply_play,
    excluded_roles,
    load_site,
    role_closure,
    roles_in,
    stage_play,
)
from kiln.stack import load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit

SITE = yaml.safe_load(
    """
- name: Prepare every node
  hosts: all
  become: true
  roles:
    - role: base
    - role: nvidia_driver
    - role: node_exporter
      when: node_exporter_enabled | bool
  tasks:
    - name: Say hello
      ansible.builtin.debug: {msg: hi}
- name: Serve shared storage
  hosts: storage
  become: true
  tasks:
    - name: Run the storage servers
      ansible.builtin.import_role: {name: shared_storage, tasks_from: server}
- name: Mount shared storage
  hosts: all
  roles: [shared_storage]
- name: Run the Prometheus server
  hosts: controller
  roles:
    - {role: prometheus, when: prometheus_enabled | bool}
"""
)


def test_every_role_and_task_lands_in_exactly_one_stage():
    cut = {stage: stage_play(SITE, stage) for stage in typing.get_args(Stage)}
    assert roles_in(cut["node"]) == {"base", "nvidia_driver"}
    assert roles_in(cut["storage"]) == {"shared_storage"}
    assert roles_in(cut["monitoring"]) == {"node_exporter", "prometheus"}
    assert set().union(*map(roles_in, cut.values())) == roles_in(SITE)
    # The plain task stays with the node stage, the storage-server import with storage.
    assert [t["name"] for t in cut["node"][0]["tasks"]] == ["Say hello"]
    assert cut["storage"][0]["hosts"] == "storage"
    assert cut["storage"][0]["tasks"][0]["name"] == "Run the storage servers"


def test_a_cut_play_keeps_hosts_become_and_conditions():
    (play,) = stage_play(SITE[:1], "monitoring")
    assert play["hosts"] == "all" and play["become"] is True
    assert play["roles"] == [{"role": "node_exporter", "when": "node_exporter_enabled | bool"}]
    assert "tasks" not in play


def test_excluded_roles_are_dropped_and_empty_plays_vanish():
    (play,) = stage_play(SITE, "node", exclude={"nvidia_driver"})
    assert [r if isinstance(r, str) else r["role"] for r in play["roles"]] == ["base"]
    assert stage_play(SITE, "monitoring", exclude={"node_exporter", "prometheus"}) == []


def test_roles_another_owner_runs_are_excluded():
    prod = load_stack("prod", REPO / "stacks")
    staging = load_stack("staging", REPO / "stacks")
    assert excluded_roles(prod.model_copy(update={"gpu_driver_owner": "operator"})) == {
        "nvidia_driver",
        "fabricmanager",
        "gpudirect",
        "container_toolkit",
        "prometheus",
        "dcgm_exporter",
    }
    assert excluded_roles(prod) == {"prometheus", "dcgm_exporter"}
    assert excluded_roles(staging) == set()


def test_kiln_provision_applies_what_pulumi_up_applies(tmp_path: Path):
    """The CLI applies site.yml less the roles another owner runs, like the program's stages."""
    from kiln.provision import ROLES_DIR, SITE_PLAYBOOK, _without_excluded_roles

    site = load_site(ROLES_DIR)
    prod = load_stack("prod", REPO / "stacks").model_copy(update={"gpu_driver_owner": "operator"})
    applied = yaml.safe_load(_without_excluded_roles(prod, SITE_PLAYBOOK, tmp_path).read_text())
    staged = [
        play
        for stage in ("node", "storage", "monitoring")
        for play in stage_play(site, stage, excluded_roles(prod))
    ]
    assert roles_in(applied) == roles_in(staged)
    assert not roles_in(applied) & excluded_roles(prod)
    lab = load_stack("lab", REPO / "stacks")
    assert _without_excluded_roles(lab, SITE_PLAYBOOK, tmp_path) == SITE_PLAYBOOK, "site.yml itself"


def test_role_closure_follows_meta_dependencies_and_role_includes(tmp_path: Path):
    (tmp_path / "a" / "meta").mkdir(parents=True)
    (tmp_path / "a" / "meta" / "main.yml").write_text("dependencies: [{role: b}]\n")
    (tmp_path / "b" / "tasks").mkdir(parents=True)
    (tmp_path / "b" / "tasks" / "main.yml").write_text(
        "- ansible.builtin.include_role: {name: c}\n- ansible.builtin.include_role:\n"
        "    name: '{{ dynamic }}'\n"
    )
    (tmp_path / "c").mkdir()
    assert role_closure(["a"], tmp_path) == {"a", "b", "c"}


def test_an_empty_stage_runs_nothing_and_says_so(monkeypatch: pytest.MonkeyPatch):
    import kiln.provision

    def refuse(*_args, **_kwargs):
        raise AssertionError("no play: ansible must not run")

    monkeypatch.setattr(kiln.provision, "provision", refuse)
    cluster = load_stack("lab", REPO / "stacks")
    recap = apply_play(cluster, [], ["node1"], REPO / "roles")
    assert recap == {"node1": {"status": "no-roles", "ok": 0, "changed": 0}}


def test_the_play_applied_sees_the_hashed_roles_tree(monkeypatch: pytest.MonkeyPatch, tmp_path):
    import kiln.provision
    from kiln.provision import HostSummary, ProvisionResult

    seen = {}

    def fake_provision(cluster, limit, *, playbook, extra_vars):
        seen["roles"] = (playbook.parent / "roles").resolve()
        seen["play"] = yaml.safe_load(playbook.read_text())
        seen["extra_vars"] = extra_vars
        return ProvisionResult(hosts={"node1": HostSummary(ok=3, changed=1)})

    monkeypatch.setattr(kiln.provision, "provision", fake_provision)
    cluster = load_stack("lab", REPO / "stacks")
    plays = stage_play(SITE, "node")
    recap = apply_play(cluster, plays, ["node1"], tmp_path, {"munge_key_b64": "k"})
    assert seen["roles"] == tmp_path.resolve()
    assert seen["play"] == plays and seen["extra_vars"] == {"munge_key_b64": "k"}
    assert recap["node1"]["status"] == "changed" and recap["node1"]["changed"] == 1
