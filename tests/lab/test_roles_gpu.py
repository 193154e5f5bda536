"""The GPU roles on lab nodes, which have no GPU, from a local signed apt mirror.

NVIDIA's repository cannot be reached from here, so the test builds the
air-gapped site's mirror: stand-in packages with NVIDIA's names and versions
(two driver branches, a fabric manager newer than any driver, NCCL built for
two CUDA releases), signed and served over HTTP on the lab bridge. apt and
dpkg on the nodes do the rest for real: pins, holds, downgrades, refusals.

The stack is this module's own: a lab pool with a GPU block (the shipped lab
stack stays CPU-shaped) and RoCE, so /etc/nccl.conf and GPUDirect are written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.lab.lifecycle import Lab
from tests.conftest import kiln_cli
from tests.lab import nvidia_repo as nr
from tests.lab.conftest import assert_converged, assert_idempotent, converge, host

pytestmark = pytest.mark.lab

NODES = ["g1", "g2"]
ROLES = [
    "rdma",
    "nvidia_driver",
    "fabricmanager",
    "cuda_toolkit",
    "nccl",
    "gpudirect",
    "dcgm_exporter",
    "container_toolkit",
]
GPU = {
    "model": "H100-SXM5-80GB",
    "perNode": 1,
    "driver": nr.DRIVER,
    "cuda": nr.CUDA,
    "nccl": nr.NCCL,
    "fabricManager": True,
}
RDMA = {"fabric": "roce", "hcas": ["mlx5_0"]}
# Every package the roles pin, and the version each must be held at.
PINNED = {
    f"nvidia-driver-{nr.DRIVER_BRANCH}": nr.DRIVER_DEB,
    f"nvidia-fabricmanager-{nr.DRIVER_BRANCH}": nr.DRIVER_DEB,
    "libnccl2": nr.nccl_deb(),
    "libnccl-dev": nr.nccl_deb(),
    "cuda-toolkit-12-4": nr.CUDA_TOOLKIT_DEB,
    "datacenter-gpu-manager-4-core": nr.DCGM_DEB,
    "datacenter-gpu-manager-exporter": nr.DCGM_EXPORTER_DEB,
    "nvidia-container-toolkit": nr.CONTAINER_TOOLKIT_DEB,
}


@pytest.fixture(scope="module")
def mirror(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The site mirror, served on the lab's gateway: the role variables that point at it."""
    root = tmp_path_factory.mktemp("nvidia-mirror")
    repo = nr.build_repo(root, nr.nvidia_like_packages(os.uname().release))
    with nr.serve(repo.root, str(lab.cluster.lab.gateway)) as url:
        yield {"nvidia_repo_url": url, "nvidia_repo_key_url": url + nr.KEY_NAME}


@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    pool = {
        "name": "gpu",
        "provider": "lab",
        "hosts": [{"name": n} for n in NODES],
        "gpu": GPU,
        "rdma": RDMA,
    }
    return lab_factory(
        [],
        "kg1",
        "10.77.97.0/24",
        nodePools=[pool],
        monitoring={"dcgmExporter": True},
        certification={"baseline": "lab-cpu"},
    )


@pytest.fixture(scope="module")
def converged(lab: Lab, mirror: dict) -> Lab:
    assert_converged(converge(lab, ROLES, mirror))
    return lab


def _dpkg(lab: Lab, node: str, package: str) -> str:
    return host(lab, node).run(f"dpkg-query -W -f='${{Version}}' {package}").stdout.strip()


def test_pinned_versions_are_installed_and_held(converged: Lab):
    for name in NODES:
        node = host(converged, name)
        for package, version in PINNED.items():
            assert _dpkg(converged, name, package) == version, f"{name}: {package}"
            selection = node.run(f"dpkg --get-selections {package}").stdout.split()
            assert selection[-1:] == ["hold"], f"{name}: {package} is not held: {selection}"
        # The repository has newer ones; apt's own candidate stays the pinned one,
        # and an upgrade takes none of them.
        policy = node.run(f"apt-cache policy nvidia-fabricmanager-{nr.DRIVER_BRANCH}").stdout
        assert f"Candidate: {nr.DRIVER_DEB}" in policy, policy
        upgrade = node.run("apt-get -s -o Debug::NoLocking=1 upgrade").stdout
        for package in PINNED:
            assert f"Inst {package} " not in upgrade, upgrade


def test_second_converge_changes_nothing_and_takes_no_newer_version(converged: Lab, mirror: dict):
    assert_idempotent(converge(converged, ROLES, mirror))
    for package, version in PINNED.items():
        assert _dpkg(converged, "g1", package) == version, package


def test_nccl_conf_follows_the_rdma_config(converged: Lab):
    for name in NODES:
        node = host(converged, name)
        address = next(h.address for h in converged.cluster.hosts if h.name == name)
        ifname = node.run(f"ip -o -4 addr show to {address}").stdout.split()[1].split("@")[0]
        lines = [
            line
            for line in node.file("/etc/nccl.conf").content_string.splitlines()
            if line and not line.startswith("#")
        ]
        # RoCE on mlx5_0; no port was found on a lab node, so no single GID index:
        # NCCL is told to pick a RoCE v2 one.
        assert lines == [
            f"NCCL_SOCKET_IFNAME=={ifname}",
            "NCCL_IB_HCA==mlx5_0",
            "NCCL_IB_ROCE_VERSION_NUM=2",
        ], lines


def test_what_needs_a_gpu_is_skipped_and_recorded(converged: Lab):
    node = host(converged, "g1")
    for role, why in (
        ("nvidia_driver", "no NVIDIA GPU"),
        ("fabricmanager", "no NVIDIA GPU and NVSwitch"),
        ("gpudirect", "no NVIDIA GPU"),
        ("dcgm_exporter", "no NVIDIA GPU"),
    ):
        fact = json.loads(node.file(f"/etc/ansible/facts.d/kiln_{role}.fact").content_string)
        assert any(why in s for s in fact["skipped"]), (role, fact)
    driver = json.loads(node.file("/etc/ansible/facts.d/kiln_nvidia_driver.fact").content_string)
    assert driver["version"] == nr.DRIVER and driver["gpus"] == 0 and driver["loaded"] is None
    assert driver["installed"] == {f"nvidia-driver-{nr.DRIVER_BRANCH}": nr.DRIVER_DEB}, driver
    # Installed and enabled for the day a GPU is there, not started without one.
    for unit in (
        "nvidia-persistenced",
        "nvidia-fabricmanager",
        "nvidia-dcgm",
        "kiln-dcgm-exporter",
    ):
        assert node.service(unit).is_enabled, unit
        assert not node.service(unit).is_running, unit
    assert (
        node.file("/etc/modules-load.d/kiln-gpudirect.conf")
        .content_string.strip()
        .endswith("nvidia-peermem")
    )
    assert (
        "blacklist nouveau"
        in node.file("/etc/modprobe.d/kiln-blacklist-nouveau.conf").content_string
    )


def test_require_gpu_fails_naming_each_host_before_any_change(converged: Lab, mirror: dict):
    result = converge(converged, ["nvidia_driver"], {**mirror, "nvidia_driver_require_gpu": True})
    assert not result.succeeded
    for name in NODES:
        assert any(
            e.startswith(f"{name}:") and f"{name}: nvidia_driver_require_gpu is true" in e
            for e in result.errors
        ), result.errors
    assert result.changed == 0


def test_fabric_manager_other_than_the_driver_fails_naming_both(converged: Lab, mirror: dict):
    extra = {**mirror, "fabricmanager_version": nr.FABRICMANAGER_NEWEST}
    result = converge(converged, ["fabricmanager"], extra, limit=["g1"])
    assert not result.succeeded
    assert any(
        f"fabric manager {nr.FABRICMANAGER_NEWEST} does not match NVIDIA driver {nr.DRIVER}" in e
        for e in result.errors
    ), result.errors
    assert _dpkg(converged, "g1", f"nvidia-fabricmanager-{nr.DRIVER_BRANCH}") == nr.DRIVER_DEB


def test_a_moved_driver_pin_installs_and_fabric_manager_refuses_the_old_one(
    converged: Lab, mirror: dict
):
    driver = f"nvidia-driver-{nr.DRIVER_BRANCH}"
    try:
        newer = {**mirror, "nvidia_driver_version": nr.DRIVER_NEWER}
        assert_converged(converge(converged, ["nvidia_driver"], newer, limit=["g2"]))
        assert _dpkg(converged, "g2", driver) == nr.DRIVER_NEWER_DEB
        held = host(converged, "g2").run(f"dpkg --get-selections {driver}").stdout.split()
        assert held[-1:] == ["hold"], held
        # The stack still pins fabric manager to the old driver: refused, both named.
        result = converge(converged, ["fabricmanager"], mirror, limit=["g2"])
        assert not result.succeeded
        assert any(
            f"fabric manager {nr.DRIVER} does not match the installed NVIDIA driver "
            f"{nr.DRIVER_NEWER}" in e
            for e in result.errors
        ), result.errors
    finally:
        # Back to the stack's pin: a downgrade, which the pin allows.
        assert_converged(converge(converged, ["nvidia_driver"], mirror, limit=["g2"]))
    assert _dpkg(converged, "g2", driver) == nr.DRIVER_DEB


def test_nccl_without_a_cuda_release_names_the_builds(converged: Lab, mirror: dict):
    result = converge(converged, ["nccl"], {**mirror, "nccl_cuda_version": ""}, limit=["g1"])
    assert not result.succeeded
    (message,) = [e for e in result.errors if e.startswith("g1:")]
    assert "set gpu.cuda" in message, message
    assert (
        nr.nccl_deb(nr.NCCL, nr.CUDA) in message and nr.nccl_deb(nr.NCCL, nr.CUDA_OTHER) in message
    )
    assert _dpkg(converged, "g1", "libnccl2") == nr.nccl_deb()


def test_certification_preflight_reads_the_versions_back_and_names_nccl_drift(
    converged: Lab, mirror: dict, tmp_path: Path
):
    other = {**mirror, "nccl_version": nr.NCCL_OTHER, "nccl_cuda_version": nr.CUDA_OTHER}
    try:
        assert_converged(converge(converged, ["nccl"], other, limit=["g2"]))
        out = tmp_path / "report"
        run = kiln_cli(
            "certify", "--stack", "labtest", "--stacks-dir", str(converged.stacks_dir),
            "--out", str(out), "--only", "preflight", "--no-publish",
        )  # fmt: skip
        assert run.returncode == 1, run.stdout + run.stderr
        doc = json.loads((out / "result.json").read_text())
        rules = {(r["rule"], r["subject"]): r for r in doc["rules"]}
        # Two nodes, two NCCLs: no majority, so homogeneity names both, each with its
        # version; the pins then say which one is wrong.
        for name, version in (("g1", nr.NCCL), ("g2", nr.NCCL_OTHER)):
            drift = rules[("preflight.homogeneous", name)]
            assert drift["status"] == "fail" and f'nccl "{version}"' in drift["reason"], drift
        pinned = rules[("preflight.gpu-stack", "g2")]
        assert (
            pinned["status"] == "fail"
            and f"NCCL {nr.NCCL_OTHER}, pinned {nr.NCCL}" in (pinned["reason"])
        ), pinned
        assert rules[("preflight.gpu-stack", "g1")]["status"] == "pass", rules[
            ("preflight.gpu-stack", "g1")
        ]
        # No GPU answers: the driver is installed but not running, and that fails.
        loaded = rules[("preflight.gpu-driver-loaded", "g1")]
        assert loaded["status"] == "fail", loaded
    finally:
        assert_converged(converge(converged, ["nccl"], mirror, limit=["g2"]))
    assert _dpkg(converged, "g2", "libnccl2") == nr.nccl_deb()
