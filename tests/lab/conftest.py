"""Real lab machines for tests: small stacks of their own, cleaned before and after.

Each test module's lab has its own id and subnet, so it never collides with
the lab a developer keeps up from `stacks/Pulumi.lab.yaml`, nor with another
module's lab.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import testinfra
import yaml

from kiln import secrets
from kiln.config import Cluster
from kiln.lab.layout import LabLayout
from kiln.lab.lifecycle import Lab, teardown
from kiln.paths import state_root
from kiln.provision import ProvisionResult, provision
from kiln.stack import load_stack
from tests.conftest import write_stack

TEST_LAB_ID = "kt"
TEST_SUBNET = "10.77.91.0/24"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if sys.platform.startswith("linux") and os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab machines need root on Linux")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def lab_stack(
    directory: Path,
    hosts: list[dict],
    lab_id: str = TEST_LAB_ID,
    subnet: str = TEST_SUBNET,
    **cluster: Any,
) -> Path:
    """A stack file `labtest` with one lab pool of `hosts`; returns the stacks directory."""
    write_stack(
        directory,
        "labtest",
        {
            "name": f"kiln-{lab_id}",
            "lab": {"id": lab_id, "subnet": subnet},
            "nodePools": [{"name": "lab", "provider": "lab", "hosts": hosts}],
            **cluster,
        },
    )
    return directory


class _Labs:
    """Labs started for one fixture scope; every one is torn down at its end, leftovers first."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.started: list[Lab] = []

    def start(self, hosts: list[dict], lab_id: str, subnet: str, **cluster: Any) -> Lab:
        stacks = lab_stack(self.tmp.mktemp("stacks"), hosts, lab_id, subnet, **cluster)
        teardown(LabLayout(lab_id))
        lab = Lab(load_stack("labtest", stacks))
        lab.stacks_dir = stacks  # type: ignore[attr-defined]  # for CLI calls in tests
        # A new lab is a new cluster: a key of its own, records of its runs only.
        for directory in _records(lab):
            shutil.rmtree(directory, ignore_errors=True)
        self.started.append(lab)
        lab.up()
        return lab

    def close(self) -> None:
        for lab in self.started:
            teardown(lab.layout)
            # A test lab is a throwaway cluster: its munge key and run records go too.
            for directory in _records(lab):
                shutil.rmtree(directory, ignore_errors=True)


def _records(lab: Lab) -> list[Path]:
    return [secrets.secrets_dir(lab.cluster.name), state_root() / "provision" / lab.cluster.name]


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start labs for a module; every one is torn down at the end, leftovers first."""
    labs = _Labs(tmp_path_factory)
    yield labs.start
    labs.close()


#: The full-site lab: a controller and three computes.
SITE_HOSTS = [
    {"name": "sctl", "roles": ["controller"]},
    {"name": "sc1"},
    {"name": "sc2"},
    {"name": "sc3"},
]


@pytest.fixture(scope="session")
def site_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A controller and three computes with all of roles/site.yml applied once, shared by
    the modules that test the Slurm and Prometheus roles and allreduce over SSH (one boot
    and one cold converge for all three). Their tests that stop daemons or change settings
    put them back.

    Prometheus keeps the stack's retention, not the default, to show it reaches the server.
    """
    labs = _Labs(tmp_path_factory)
    try:
        lab = labs.start(SITE_HOSTS, "ks5", "10.77.96.0/24", monitoring={"retention": "3d"})
        assert_converged(converge(lab))
        yield lab
    finally:
        labs.close()


@pytest.fixture(scope="module")
def two_node_lab(lab_factory) -> Lab:
    """Two booted lab nodes."""
    return lab_factory([{"name": "t1"}, {"name": "t2"}], TEST_LAB_ID, TEST_SUBNET)


def converge(
    lab: Lab,
    roles: list[str] | None = None,
    extra_vars: dict | None = None,
    limit: list[str] | None = None,
    check: bool = False,
    cluster: Cluster | None = None,
) -> ProvisionResult:
    """Apply `roles` (or all of roles/site.yml) to the lab, as `kiln provision` does
    (`check`: as `kiln provision --check` does, changing nothing); `cluster`: the lab's
    stack with other settings (same hosts)."""
    cluster = cluster or lab.cluster
    if roles is None:
        return provision(cluster, limit, extra_vars=extra_vars, check=check)
    play = [
        {"name": "converge", "hosts": "all", "become": True, "roles": [{"role": r} for r in roles]}
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        yaml.safe_dump(play, handle)
    try:
        return provision(
            cluster, limit, playbook=Path(handle.name), extra_vars=extra_vars, check=check
        )
    finally:
        os.unlink(handle.name)


def assert_converged(result: ProvisionResult) -> None:
    assert result.succeeded, f"{result.errors} (artifacts: {result.artifacts})"


def assert_idempotent(result: ProvisionResult) -> None:
    """The second converge must change nothing on any host (molecule's idempotence step)."""
    assert_converged(result)
    changed = {name: h.changed for name, h in result.hosts.items() if h.changed}
    assert changed == {}, f"second run changed things: {changed} (artifacts: {result.artifacts})"


def host(lab: Lab, name: str) -> testinfra.host.Host:
    """A testinfra handle on a lab node, over SSH with the lab's verified host keys."""
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(lab.layout.ssh_config))


T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
    """Poll `probe` every few seconds until `done(value)`; fail naming the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout_s:.0f} s")
        time.sleep(3)


def wait_until_joined(node: testinfra.host.Host, world_size: int, module: str) -> None:
    """Until the rank of `python -m module` on `node` has joined its gloo group.

    Joined means it holds a TCP connection to the rendezvous store plus gloo's
    pair to each of the `world_size - 1` others, which gloo opens only once every
    rank has published its host. So a rank killed after this dies mid-collective,
    and its peers can name it. A fixed wait once the process appears is not
    enough: on a loaded host torch's import alone can outlast it, and a rank
    killed before it joins is one that "never joined", which nobody can name by
    host. Not for rank 0, whose store serves the others' connections too.
    """
    ranks = f"pgrep -d'|' -f 'm {module}'"
    connections = f'ss -Htnp state established | grep -cE "pid=($({ranks})),"'
    wait_for(
        f"{module} on {node.backend.hostname} joined to its {world_size - 1} peer(s)",
        lambda: node.run(connections).stdout.strip(),
        lambda count: count.isdigit() and int(count) >= world_size,
        timeout_s=180,
    )
