"""What certification hands the launchers: lab ranks share this host's cores, and the
ranks' outputs go where the run removes them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass
class Launches:
    """Per launch, each host's extra environment and the launcher's working directory."""

    env: list[dict[str, dict[str, str]]] = field(default_factory=list)
    workdirs: list[Path | None] = field(default_factory=list)


@pytest.fixture
def launched(monkeypatch) -> Launches:
    """What every launch was handed (the launch itself goes no further)."""
    seen = Launches()

    class Launcher:
        def __init__(self, *args, workdir=None, **kwargs):
            self.workdir = workdir

        def launch(self, module, args, specs):
            seen.env.append({s.name: dict(s.env) for s in specs})
            seen.workdirs.append(self.workdir)
            if self.workdir is not None:  # what a real launcher leaves: the ranks' outputs
                (self.workdir / "rank0.stdout").write_text("out")
            raise OSError("stop here")

    monkeypatch.setattr("validation.launch.SlurmLauncher", Launcher)
    monkeypatch.setattr("validation.launch.SshLauncher", Launcher)
    return seen


def test_the_ranks_outputs_of_every_run_are_removed_with_the_runner(launched):
    """Each launch writes into a directory of its own under the runner's, gone when the
    certification ends (a launcher's own default is a new directory in /tmp, left there)."""
    cluster = load_stack("lab", REPO / "stacks")
    names = [h.name for h in cluster.hosts]
    with GroupRunner(cluster, access(names)) as runner:
        runner.run("validation.models", [], names[:1])
        runner.run("validation.models", [], names)
        workdirs = launched.workdirs
        assert len(workdirs) == 2 and None not in workdirs and workdirs[0] != workdirs[1]
        assert all(w.is_dir() and (w / "rank0.stdout").exists() for w in workdirs)
    assert not any(w.exists() for w in workdirs)
    assert not workdirs[0].parent.exists()


def test_lab_ranks_get_one_share_of_the_host_cores_on_every_rung(launched, monkeypatch):
    cluster = load_stack("lab", REPO / "stacks")
    computes = [h.name for h in cluster.hosts if "compute" in h.roles]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with GroupRunner(cluster, access([h.name for h in cluster.hosts])) as runner:
        runner.run("validation.models", [], computes[:1])  # rung 1 of the ladder
        runner.run("validation.models", [], computes)
    share = {"OMP_NUM_THREADS": str(8 // len(computes))}
    assert launched.env == [{computes[0]: share}, dict.fromkeys(computes, share)]


def test_hosts_of_static_pools_keep_their_own_thread_defaults(launched):
    cluster = load_stack("staging", REPO / "stacks")
    assert not cluster.lab_pools
    names = [h.name for h in cluster.hosts]
    with GroupRunner(cluster, access(names)) as runner:
        runner.run("validation.models", [], names[:2])
    assert launched.env == [dict.fromkeys(names[:2], {})]
