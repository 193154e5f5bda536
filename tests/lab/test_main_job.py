"""The README's main job on the embedded lab stack: `kiln lab up` builds and provisions
the cluster, and running it again changes nothing.

Runs the shipped `stacks/Pulumi.lab.yaml`, moved to its own lab id and subnet so
it never touches a lab a developer keeps up.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kiln.lab.lab import teardown
from kiln.lab.layout import LabLayout
from tests.conftest import REPO, kiln_cli
from validation.launch import HostSpec, SlurmLauncher

pytestmark = pytest.mark.lab

LAB = {"id": "km", "subnet": "10.77.99.0/24"}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    document = yaml.safe_load((REPO / "stacks" / "Pulumi.lab.yaml").read_text())
    document["config"]["kiln:cluster"]["lab"] = LAB
    directory = tmp_path_factory.mktemp("stacks")
    (directory / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document))
    teardown(LabLayout(LAB["id"]))
    yield directory
    teardown(LabLayout(LAB["id"]))


@pytest.fixture(scope="module")
def first_run(stacks: Path):
    return kiln_cli("lab", "up", "--stack", "lab", "--stacks-dir", str(stacks), timeout=1800)


def test_main_job_brings_up_and_provisions_every_node(first_run):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]
    for node in ("ctl1", "node1", "node2"):
        assert node in first_run.stdout


def test_main_job_again_changes_nothing(first_run, stacks: Path):
    assert first_run.returncode == 0
    again = kiln_cli("lab", "up", "--stack", "lab", "--stacks-dir", str(stacks), timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "lab machines already up: nothing changed" in again.stdout
    assert "provisioning: 0 change(s)" in again.stdout


def _ssh(stacks_lab: LabLayout, node: str, command: str) -> str:
    result = subprocess.run(
        ["ssh", "-F", str(stacks_lab.ssh_config), node, command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{node}: {command}: {result.stderr}"
    return result.stdout


LAYOUT = LabLayout(LAB["id"])


def test_slurm_runs_a_job_across_every_compute(first_run):
    assert first_run.returncode == 0
    assert _ssh(LAYOUT, "ctl1", "sinfo -h -N -o '%N %t' | sort").split() == [
        "node1",
        "idle",
        "node2",
        "idle",
    ]
    assert sorted(_ssh(LAYOUT, "ctl1", "srun -N2 hostname").split()) == ["node1", "node2"]


def test_prometheus_scrapes_every_node(first_run):
    assert first_run.returncode == 0
    body = _ssh(
        LAYOUT,
        "ctl1",
        'python3 -c "import urllib.request; print(urllib.request.urlopen('
        "'http://localhost:9090/api/v1/targets?state=active').read().decode())\"",
    )
    targets = json.loads(body)["data"]["activeTargets"]
    node_targets = {
        t["labels"].get("node", t["labels"]["instance"]): t["health"]
        for t in targets
        if t["labels"]["instance"].endswith(":9100")
    }
    assert node_targets == {"ctl1": "up", "node1": "up", "node2": "up"}


def test_shared_storage_is_shared(first_run):
    assert first_run.returncode == 0
    _ssh(LAYOUT, "node1", "echo written-on-node1 > /shared/main-job-probe")
    assert _ssh(LAYOUT, "node2", "cat /shared/main-job-probe").strip() == "written-on-node1"


def test_allreduce_through_slurm_on_the_computes(first_run):
    assert first_run.returncode == 0
    launcher = SlurmLauncher("ctl1", ssh_config=LAYOUT.ssh_config, wall_timeout_s=180)
    result = launcher.launch(
        "validation.allreduce",
        ["-b", "4K", "-e", "1M", "-f", "16", "-w", "2", "-n", "5", "--timeout", "30"],
        [HostSpec("node1"), HostSpec("node2")],
    )
    assert result.ok, result.summary()
    assert result.result is not None
    assert sorted(result.result["environ"]["hostnames"]) == ["node1", "node2"]
    assert all(
        row["wrong"] == 0 and row["busbw_gbps"] > 0 for row in result.result["metrics"]["sizes"]
    )
