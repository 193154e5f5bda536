"""What certification hands the launchers per host: lab ranks share this host's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.certification.launch import GroupRunner
from kiln.inventory import Access
from kiln.ssh import SshTarget
from kiln.stack import load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def access(names: list[str]) -> Access:
    return Access(
        {
            n: SshTarget(n, f"10.0.0.{i + 10}", "root", Path("k"), Path("kh"))
            for i, n in enumerate(names)
        }
    )


@pytest.fixture
def launched(monkeypatch) -> list[dict[str, dict[str, str]]]:
    """Per launch, each host's extra environment (the launch itself goes no further)."""
    seen: list[dict[str, dict[str, str]]] = []

    class Launcher:
        def __init__(self, *args, **kwargs):
            pass

        def launch(self, module, args, specs):
            seen.append({s.name: dict(s.env) for s in specs})
            raise OSError("stop here")

    monkeypatch.setattr("validation.launch.SlurmLauncher", Launcher)
    monkeypatch.setattr("validation.launch.SshLauncher", Launcher)
    return seen


def test_lab_ranks_get_one_share_of_the_host_cores_on_every_rung(launched, monkeypatch):
    cluster = load_stack("lab", REPO / "stacks")
    computes = [h.name for h in cluster.hosts if "compute" in h.roles]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with GroupRunner(cluster, access([h.name for h in cluster.hosts])) as runner:
        runner.run("validation.models", [], computes[:1])  # rung 1 of the ladder
        runner.run("validation.models", [], computes)
    share = {"OMP_NUM_THREADS": str(8 // len(computes))}
    assert launched == [{computes[0]: share}, dict.fromkeys(computes, share)]


def test_hosts_of_static_pools_keep_their_own_thread_defaults(launched):
    cluster = load_stack("staging", REPO / "stacks")
    assert not cluster.lab_pools
    names = [h.name for h in cluster.hosts]
    with GroupRunner(cluster, access(names)) as runner:
        runner.run("validation.models", [], names[:2])
    assert launched == [dict.fromkeys(names[:2], {})]
