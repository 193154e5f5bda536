"""Preflight facts: parsed from what real hosts print, compared to notice a changed host."""

from __future__ import annotations

import pytest

from kiln.errors import KilnError
from kiln.preflight import HostAccess, changed_facts, diff_host, parse_facts

pytestmark = pytest.mark.unit

HGX_H100 = """\
hostname=gpu001
kernel=6.8.0-48-generic
arch=x86_64
os=ubuntu 22.04
cpus=224
memory_kib=2113442816
machine_id=4f1c2a9e8b7d4c3e9a0b1c2d3e4f5a6b
gpu_driver=550.127.08
gpus=8
gpu_model=NVIDIA H100 80GB HBM3
nccl=2.21.5-1+cuda12.4
"""
# `tr '\n' ' '` in the probe leaves a trailing space after the last device.
HGX_H100 += "rdma_devices=mlx5_0 mlx5_1 mlx5_10 mlx5_2 \n"

LAB_NODE = """\
hostname=node1
kernel=6.1.0-26-amd64
arch=x86_64
os=debian 12
cpus=2
memory_kib=24533048
machine_id=0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6
nccl=
rdma_devices=
"""


def test_gpu_host_facts_are_typed_and_versions_normalized():
    facts = parse_facts(HGX_H100)
    assert facts["cpus"] == 224
    assert facts["memory_gib"] == 2016  # 2113442816 KiB
    assert facts["gpus"] == 8
    assert facts["gpu_driver"] == "550.127.08"
    assert facts["nccl"] == "2.21.5"  # dpkg's "-1+cuda12.4" is packaging, not NCCL
    assert facts["rdma_devices"] == ["mlx5_0", "mlx5_1", "mlx5_10", "mlx5_2"]


def test_host_without_gpu_tools_has_unknown_gpus_not_zero():
    facts = parse_facts(LAB_NODE)
    assert facts["gpus"] is None and facts["gpu_driver"] is None and facts["nccl"] is None
    assert facts["rdma_devices"] == []
    assert facts["os"] == "debian 12"


def test_nccl_version_from_a_library_file_name():
    assert parse_facts("hostname=a\nnccl=2.23.4\n")["nccl"] == "2.23.4"


def test_only_real_changes_count():
    facts = parse_facts(HGX_H100)
    assert changed_facts(facts, dict(facts)) == []
    upgraded = {**facts, "kernel": "6.8.0-51-generic", "gpu_driver": "560.35.03"}
    assert changed_facts(facts, upgraded) == ["kernel", "gpu_driver"]
    assert "hostname" in changed_facts(None, facts)  # nothing recorded: all of it is new


STATE = {
    "host": "gpu001",
    "address": "10.0.0.11",
    "user": "ubuntu",
    "port": 22,
    "knownHosts": "~/.ssh/known_hosts",
    "facts": parse_facts(HGX_H100),
}


def test_a_new_address_is_a_new_machine_and_is_not_probed():
    def probe(_: HostAccess) -> dict:
        raise AssertionError("a moved host must not be probed at its old identity")

    change = diff_host(STATE, {**STATE, "address": "10.0.0.99"}, probe)
    assert change.changed and change.replaces == ["address"]


def test_unchanged_host_is_no_change_and_is_probed_with_the_new_key():
    seen: list[HostAccess] = []

    def probe(access: HostAccess) -> dict:
        seen.append(access)
        return parse_facts(HGX_H100)

    news = {**STATE, "privateKey": "KEY"}
    change = diff_host(STATE, news, probe)
    assert not change.changed
    assert seen[0].private_key == "KEY" and seen[0].address == "10.0.0.11"


def test_reinstalled_host_is_a_change_naming_the_facts():
    reinstalled = {**parse_facts(HGX_H100), "machine_id": "f" * 32, "kernel": "6.8.0-51-generic"}
    change = diff_host(STATE, STATE, lambda _: reinstalled)
    assert change.changed and change.facts == ["machine_id", "kernel"]


def test_unreachable_host_is_a_change_so_update_reports_the_error():
    def probe(_: HostAccess) -> dict:
        raise KilnError("gpu001 (10.0.0.11): SSH failed: timed out")

    change = diff_host(STATE, STATE, probe)
    assert change.changed and "timed out" in (change.unreachable or "")


def test_login_setting_change_is_an_update_not_a_replacement():
    change = diff_host(STATE, {**STATE, "user": "root"}, lambda _: parse_facts(HGX_H100))
    assert change.changed and change.settings == ["user"] and change.replaces == []


def test_the_probe_runs_under_posix_sh_and_reads_this_machine():
    import os
    import socket
    import subprocess

    from kiln.preflight import FACTS_COMMAND

    result = subprocess.run(
        ["sh", "-c", FACTS_COMMAND], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    facts = parse_facts(result.stdout)
    assert facts["hostname"] == socket.gethostname()
    assert facts["kernel"] == os.uname().release
    assert facts["cpus"] == os.cpu_count()
    assert facts["memory_gib"] and facts["memory_gib"] > 0
