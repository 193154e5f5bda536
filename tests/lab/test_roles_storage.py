"""Role shared_storage with GlusterFS on fresh lab nodes: converge, converge again, verify.

st1 and st2 (role storage) serve one volume with a brick each; every node,
servers included, mounts it over FUSE from st1's address. The plays come from roles/site.yml itself, so the test also covers the
wiring: servers on group storage first, then the clients on all hosts.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from kiln.lab.lifecycle import Lab
from kiln.provision import SITE_PLAYBOOK, ProvisionResult, provision
from tests.lab.conftest import assert_converged, assert_idempotent, host

pytestmark = pytest.mark.lab

HOSTS = [
    {"name": "st1", "roles": ["controller", "storage"]},
    {"name": "st2", "roles": ["storage"]},
    {"name": "sc1"},
    {"name": "sc2"},
]
NODES = [h["name"] for h in HOSTS]
SERVERS = ["st1", "st2"]
MOUNT = "/shared"
VOLUME = "kiln"  # the inventory's default export name
STORAGE_PLAYS = ("Serve shared storage", "Mount shared storage")


def converge_storage(lab: Lab, extra_vars: dict | None = None) -> ProvisionResult:
    """Apply the shared-storage plays of roles/site.yml, in their order there."""
    plays = [p for p in yaml.safe_load(SITE_PLAYBOOK.read_text()) if p["name"] in STORAGE_PLAYS]
    assert [p["name"] for p in plays] == list(STORAGE_PLAYS), "site.yml lost a storage play"
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        yaml.safe_dump(plays, handle)
    try:
        return provision(lab.cluster, playbook=Path(handle.name), extra_vars=extra_vars)
    finally:
        os.unlink(handle.name)


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    lab = lab_factory(
        HOSTS, "ks1", "10.77.95.0/24", storage={"kind": "glusterfs", "mountPoint": MOUNT}
    )
    assert_converged(converge_storage(lab))
    return lab


@pytest.fixture(scope="module")
def addresses(lab: Lab) -> dict[str, str]:
    return {h.name: str(h.address) for h in lab.hosts}


@pytest.fixture(scope="module")
def server_address(addresses: dict[str, str]) -> str:
    """Where clients mount from: the first storage host (the inventory's choice)."""
    return addresses["st1"]


def test_second_converge_changes_nothing(lab: Lab):
    assert_idempotent(converge_storage(lab))


def test_storage_hosts_serve_one_volume(lab: Lab, addresses: dict[str, str]):
    for name in SERVERS:
        glusterd = host(lab, name).service("glusterd")
        assert glusterd.is_running and glusterd.is_enabled, name
    node = host(lab, "st1")
    # st2 joined st1's trusted pool by address.
    pool = node.check_output("gluster --mode=script pool list")
    assert f"{addresses['st2']}\tConnected" in pool, pool
    info = node.check_output(f"gluster --mode=script volume info {VOLUME}")
    assert "Status: Started" in info
    assert f"Brick1: {addresses['st1']}:/bricks/{VOLUME}" in info
    assert f"Brick2: {addresses['st2']}:/bricks/{VOLUME}" in info


def test_volume_is_mounted_at_the_same_path_on_every_node(lab: Lab, server_address: str):
    for name in NODES:
        mount = host(lab, name).mount_point(MOUNT)
        assert mount.exists, f"{name}: {MOUNT} is not mounted"
        assert mount.filesystem == "fuse.glusterfs", name
        # By address: a bare node cannot resolve the server's name.
        assert mount.device == f"{server_address}:/{VOLUME}", name


def test_file_written_on_one_node_is_read_on_the_others(lab: Lab):
    token = uuid.uuid4().hex
    path = f"{MOUNT}/probe-{token}"
    host(lab, "sc1").run_test(f"echo {token} > {path}")
    for name in ("sc2", "st1"):
        assert host(lab, name).file(path).content_string.strip() == token, name


def test_fstab_entry_mounts_the_volume_after_a_reboot(
    lab: Lab, server_address: str, addresses: dict[str, str]
):
    node = host(lab, "sc2")
    entries = [
        line.split()
        for line in node.file("/etc/fstab").content_string.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    entry = next(e for e in entries if e[1] == MOUNT)
    assert entry[0] == f"{server_address}:/{VOLUME}"
    assert entry[2] == "glusterfs"
    options = entry[3].split(",")
    assert "_netdev" in options  # waits for the network at boot
    # The volume file can also come from st2 when st1 is down.
    assert f"backup-volfile-servers={addresses['st2']}" in options

    token = uuid.uuid4().hex
    host(lab, "sc1").run_test(f"echo {token} > {MOUNT}/after-reboot")
    boot_id = node.file("/proc/sys/kernel/random/boot_id").content_string
    # A real reboot: power sc2 off, then the lab boots it again.
    node.run("systemctl poweroff --no-block")
    deadline = time.monotonic() + 60
    while any(s.name == "sc2" and s.running for s in lab.status()):
        assert time.monotonic() < deadline, "sc2 did not power off"
        time.sleep(1)
    lab.up()
    rebooted = host(lab, "sc2")
    assert rebooted.file("/proc/sys/kernel/random/boot_id").content_string != boot_id
    assert rebooted.mount_point(MOUNT).exists, "not mounted again at boot"
    assert rebooted.file(f"{MOUNT}/after-reboot").content_string.strip() == token


def test_missing_server_fails_before_any_change(lab: Lab):
    # What the inventory passes for glusterfs when no host has the storage role.
    result = converge_storage(lab, {"shared_storage_server": None})
    assert not result.succeeded
    assert result.changed == 0
    # The servers' play failed on all its hosts, so Ansible stopped there: no client was touched.
    assert {n for n, h in result.hosts.items() if h.failed} == set(SERVERS)
    assert all(h.ok == 0 for n, h in result.hosts.items() if n not in SERVERS), result.hosts
    for name in SERVERS:
        assert any(
            e.startswith(f"{name}: ")
            and "shared_storage_kind is glusterfs but shared_storage_server is not set" in e
            for e in result.errors
        ), result.errors
