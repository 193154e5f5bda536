"""The README's main job on the embedded lab stack: `kiln lab up` builds and provisions
the cluster, and running it again changes nothing.

Runs the shipped `stacks/Pulumi.lab.yaml`, moved to its own lab id and subnet so
it never touches a lab a developer keeps up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kiln.lab.lab import teardown
from kiln.lab.layout import LabLayout
from tests.conftest import REPO, kiln_cli

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
