"""`provisioning.runtime` (where nodes get the validation runtime's packages) reaches the
validation_runtime role, a bad value is refused by key path without echoing a credential,
and lab pools keep the lab's own wheelhouse and venv archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.inventory import Access, build_inventory
from kiln.lab import wheelhouse
from kiln.ssh import SshTarget
from kiln.stack import ConfigError, cluster_from_document

pytestmark = pytest.mark.unit


def _cluster(provider: str = "static", **runtime: object):
    hosts = [{"name": "n1", "address": "10.30.0.11"}, {"name": "n2", "address": "10.30.0.12"}]
    pool: dict = {"name": "p", "provider": provider, "hosts": hosts}
    cluster: dict = {"name": "rt", "nodePools": [pool], "provisioning": {"runtime": runtime}}
    if provider == "lab":
        cluster["lab"] = {"id": "krt", "subnet": "10.30.0.0/24"}
    else:
        pool["ssh"] = {"privateKeyPath": "/nonexistent/key"}
    return cluster_from_document({"config": {"kiln:cluster": cluster}}, "test")


def _host_vars(cluster, host: str = "n1") -> dict:
    """What the role sees on `host`: group `all`, then its pool's vars over them."""
    access = Access(
        {
            h.name: SshTarget(h.name, str(h.address), "root", Path("/k"), Path("/kh"))
            for h in cluster.hosts
        }
    )
    inventory = build_inventory(cluster, access)["all"]
    merged = dict(inventory["vars"])
    for group in inventory["children"].values():
        if host in group.get("hosts", {}):
            merged.update(group.get("vars", {}))
    return merged


def test_a_static_pool_installs_from_the_stack_s_mirror_and_shares_its_archives():
    cluster = _cluster(indexUrl="https://pypi.mirror.example/simple", venvArchives="/site/venvs")
    seen = _host_vars(cluster)
    assert seen["validation_runtime_index_url"] == "https://pypi.mirror.example/simple"
    assert seen["validation_runtime_venv_archives"] == "/site/venvs"
    assert seen["validation_runtime_wheelhouse"] == ""


def test_without_the_key_nodes_use_pip_s_index_and_no_archives():
    seen = _host_vars(_cluster())
    assert seen["validation_runtime_index_url"] == ""
    assert seen["validation_runtime_wheelhouse"] == ""
    assert seen["validation_runtime_venv_archives"] == ""


def test_lab_pools_keep_the_lab_s_wheelhouse_and_archives_whatever_the_stack_says():
    seen = _host_vars(_cluster("lab", wheelhouse="/elsewhere", venvArchives="/elsewhere/venvs"))
    assert seen["validation_runtime_wheelhouse"] == wheelhouse.NODE_PATH
    assert seen["validation_runtime_venv_archives"] == wheelhouse.ARCHIVES_NODE_PATH


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"wheelhouse": "wheels"}, "wheelhouse 'wheels' must be an absolute path on the nodes"),
        ({"venvArchives": "venvs"}, "venvArchives 'venvs' must be an absolute path on the nodes"),
        ({"indexUrl": "ftp://mirror/simple"}, "indexUrl must be an http(s):// URL"),
        (
            {"wheelhouse": "/w", "indexUrl": "https://mirror/simple"},
            "set wheelhouse or indexUrl, not both",
        ),
    ],
)
def test_a_bad_source_is_refused_by_key_path(runtime, expected):
    with pytest.raises(ConfigError) as info:
        _cluster(**runtime)
    (problem,) = (str(p) for p in info.value.problems)
    assert problem.startswith("kiln:cluster.provisioning.runtime: " + expected), problem


def test_a_mirror_url_with_a_password_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        _cluster(indexUrl="https://ci:hunter2@pypi.mirror.example/simple")
    (problem,) = (str(p) for p in info.value.problems)
    assert "without credentials" in problem and "pip.conf" in problem
    assert "hunter2" not in problem and "ci:" not in problem
