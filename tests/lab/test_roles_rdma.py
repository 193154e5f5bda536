"""Role rdma on fresh lab nodes, which have no RDMA device: converge, converge again, verify.

r1 and r2 run a RoCE pool's settings (stack installed and configured, device
steps skipped); r3 keeps the lab pool's default fabric, none.
"""

from __future__ import annotations

import json

import pytest

from kiln.lab.lifecycle import Lab
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

ROLES = ["rdma"]
ROCE = {"rdma_fabric": "roce"}
ROCE_NODES = ["r1", "r2"]
PACKAGES = ("rdma-core", "ibverbs-utils", "infiniband-diags", "perftest")
FACT_FILE = "/etc/ansible/facts.d/rdma.fact"


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    lab = lab_factory([{"name": "r1"}, {"name": "r2"}, {"name": "r3"}], "kr1", "10.77.94.0/24")
    assert_converged(converge(lab, ROLES, ROCE, limit=ROCE_NODES))
    return lab


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge(lab, ROLES, ROCE, limit=ROCE_NODES))


def test_userspace_stack_is_installed_and_runs(lab: Lab):
    for name in ROCE_NODES:
        node = host(lab, name)
        for package in PACKAGES:
            assert node.package(package).is_installed, f"{name}: {package}"
        # The tools certification and debugging use are on PATH and run.
        # ibv_devinfo exits 255 without a device (ssh's own error code): wrap it.
        devinfo = node.run("ibv_devinfo 2>&1; echo exit=$?").stdout
        # "No IB devices found", or without the uverbs class "Failed to get IB devices list".
        assert "IB devices" in devinfo and "exit=0" not in devinfo, devinfo
        assert "Usage:" in node.run("ib_write_bw --help").stdout
        assert node.exists("ibstat")
        # RoCE QoS is set with iproute2's dcb.
        assert node.exists("dcb")


def test_fact_file_records_no_devices(lab: Lab):
    for name in ROCE_NODES:
        fact = host(lab, name).file(FACT_FILE)
        assert fact.mode == 0o644
        assert json.loads(fact.content_string) == {"fabric": "roce", "devices": []}


def test_device_steps_are_skipped_without_a_device(lab: Lab):
    node = host(lab, "r1")
    assert not node.file("/etc/systemd/system/kiln-rdma-roce.service").exists
    assert not node.file("/usr/local/sbin/kiln-rdma-roce").exists


def test_required_without_a_device_fails_naming_each_host(lab: Lab):
    result = converge(lab, ROLES, {**ROCE, "rdma_required": True}, limit=ROCE_NODES)
    assert not result.succeeded
    assert {name for name, h in result.hosts.items() if h.failed} == set(ROCE_NODES)
    for name in ROCE_NODES:
        messages = [e for e in result.errors if e.startswith(f"{name}:")]
        assert any(
            f"{name}: rdma_required is true" in m and "no RDMA device" in m for m in messages
        ), result.errors
    assert result.changed == 0, "the check must fail before anything changes"


def test_required_names_the_missing_hca(lab: Lab):
    extra = {**ROCE, "rdma_required": True, "rdma_hcas": ["mlx5_0", "mlx5_1"]}
    result = converge(lab, ROLES, extra, limit=["r2"])
    assert not result.succeeded
    assert any("r2: rdma_required is true" in e and "mlx5_0, mlx5_1" in e for e in result.errors), (
        result.errors
    )


def test_fabric_none_installs_nothing_but_records_devices(lab: Lab):
    # r3 keeps the lab pool's default (rdma.fabric: none).
    assert_converged(converge(lab, ROLES, limit=["r3"]))
    node = host(lab, "r3")
    assert not node.package("rdma-core").is_installed
    assert not node.package("perftest").is_installed
    assert json.loads(node.file(FACT_FILE).content_string) == {"fabric": "none", "devices": []}
