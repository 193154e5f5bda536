"""Real lab machines for tests: a small stack of its own, cleaned before and after.

The test lab has its own id and subnet, so it never collides with the lab a
developer keeps up from `stacks/Pulumi.lab.yaml`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.lab.lab import Lab, teardown
from kiln.lab.layout import LabLayout
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
    directory: Path, hosts: list[dict], lab_id: str = TEST_LAB_ID, subnet: str = TEST_SUBNET
) -> Path:
    """A stack file with one lab pool of `hosts`; returns the stacks directory."""
    write_stack(
        directory,
        "labtest",
        {
            "name": "kiln-labtest",
            "lab": {"id": lab_id, "subnet": subnet},
            "nodePools": [{"name": "lab", "provider": "lab", "hosts": hosts}],
        },
    )
    return directory


@pytest.fixture(scope="module")
def two_node_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two booted lab nodes; leftovers of a crashed earlier run are swept first."""
    stacks = lab_stack(tmp_path_factory.mktemp("stacks"), [{"name": "t1"}, {"name": "t2"}])
    teardown(LabLayout(TEST_LAB_ID))
    lab = Lab(load_stack("labtest", stacks))
    lab.stacks_dir = stacks  # type: ignore[attr-defined]  # for CLI calls in tests
    lab.up()
    yield lab
    teardown(LabLayout(TEST_LAB_ID))
