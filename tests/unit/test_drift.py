"""Provisioning drift: what changes the hash, what does not, and when a play runs again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.drift import (
    digest,
    missing_roles,
    playbook_inputs,
    roles_digest,
    secrets_digest,
)
from kiln.errors import KilnError, UsageError
from kiln.playbook_resource import playbook_rerun_reasons, run_playbook
from kiln.stack import cluster_from_document, load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def roles(tmp_path: Path) -> Path:
    target = tmp_path / "roles"
    shutil.copytree(REPO / "roles", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_roles_digest_follows_content_and_names_not_location(roles: Path, tmp_path: Path):
    before = roles_digest(roles, ["base"])
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(roles, elsewhere)
    assert roles_digest(elsewhere, ["base"]) == before
    (roles / "base" / "tasks" / "__pycache__").mkdir()
    (roles / "base" / "tasks" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert roles_digest(roles, ["base"]) == before  # bytecode is not content
    defaults = roles / "base" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "\n# comment\n")
    assert roles_digest(roles, ["base"]) != before
    assert roles_digest(roles, ["node_exporter"]) == roles_digest(elsewhere, ["node_exporter"])


def test_renaming_a_file_changes_the_digest(roles: Path):
    before = roles_digest(roles, ["base"])
    tasks = roles / "base" / "tasks" / "main.yml"
    tasks.rename(tasks.with_name("setup.yml"))
    assert roles_digest(roles, ["base"]) != before


def test_a_missing_role_is_reported_and_counted(roles: Path):
    assert missing_roles(roles, ["base", "site_extra"]) == ["site_extra"]
    without = roles_digest(roles, ["base", "site_extra"])
    (roles / "site_extra" / "tasks").mkdir(parents=True)
    (roles / "site_extra" / "tasks" / "main.yml").write_text("[]\n")
    assert roles_digest(roles, ["base", "site_extra"]) != without


def _staging(**changes):
    import yaml

    document = yaml.safe_load((REPO / "stacks" / "Pulumi.staging.yaml").read_text())
    document["config"]["kiln:cluster"].update(changes)
    return cluster_from_document(document, "staging")


def test_hash_covers_vars_and_hosts_of_the_pool_but_not_unrelated_settings(roles: Path):
    cluster = _staging()
    pool = cluster.node_pools[1]
    base = playbook_inputs(cluster, "node", roles, pool)
    assert playbook_inputs(cluster, "node", roles, pool)["hash"] == base["hash"]
    assert base["limit"] == [h.name for h in pool.hosts]
    pools = [
        p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in cluster.node_pools
    ]
    for p in pools:
        p["ssh"].pop("privateKey", None)
        p["ssh"]["privateKeyPath"] = "/keys/k"
    newer_nccl = [pools[0], {**pools[1], "gpu": {**pools[1]["gpu"], "nccl": "2.23.4"}}]
    newer = _staging(nodePools=newer_nccl)
    changed = playbook_inputs(newer, "node", roles, newer.node_pools[1])
    assert changed["hash"] != base["hash"]
    assert changed["vars"]["pools"]["a100"]["nccl_version"] == "2.23.4"
    # Certification timeout is no role variable: provisioning is not drifting.
    slower = _staging(certification={"timeoutSeconds": 900})
    other = playbook_inputs(slower, "node", roles, slower.node_pools[1])
    assert other["hash"] == base["hash"]


def test_rerun_only_when_hash_facts_or_secret_vars_change():
    state = {"hash": "h1", "factsDigest": "f1", "secretsDigest": secrets_digest(None)}
    assert (
        playbook_rerun_reasons(
            state, {"hash": "h1", "factsDigest": "f1", "secrets": {"sshKeys": {}}}
        )
        == []
    )
    assert playbook_rerun_reasons(state, {"hash": "h2", "factsDigest": "f1"}) == ["hash"]
    assert playbook_rerun_reasons(state, {"hash": "h1", "factsDigest": "f2"}) == ["factsDigest"]
    munge = {"extraVars": {"munge_key_b64": "bmV3"}}
    assert playbook_rerun_reasons(state, {"hash": "h1", "factsDigest": "f1", "secrets": munge}) == [
        "secrets"
    ]
    # A rotated SSH key reaches the same hosts: nothing to re-run.
    rotated = {"hash": "h1", "factsDigest": "f1", "secrets": {"sshKeys": {"gpu": "new"}}}
    assert playbook_rerun_reasons(state, rotated) == []


def test_unknown_values_during_preview_count_as_drift():
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's placeholder
    assert playbook_rerun_reasons(
        {"hash": "h1", "factsDigest": "f1"}, {"hash": "h1", "factsDigest": unknown}
    )


def test_a_run_refuses_roles_changed_since_the_plan(roles: Path):
    cluster = load_stack("lab", REPO / "stacks")
    props = playbook_inputs(cluster, "monitoring", roles)
    defaults = roles / "node_exporter" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "\n# edited after preview\n")
    with pytest.raises(KilnError, match="roles changed since this update was planned"):
        run_playbook(props)


def test_a_run_refuses_missing_roles(roles: Path):
    cluster = load_stack("lab", REPO / "stacks")
    shutil.rmtree(roles / "base")
    props = playbook_inputs(cluster, "node", roles, cluster.node_pools[0])
    assert props["missingRoles"] == ["base"]
    with pytest.raises(UsageError, match="do not exist: base"):
        run_playbook(props)


def test_digest_is_canonical():
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    assert digest({"a": 1}) != digest({"a": 1.5})
