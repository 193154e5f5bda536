"""The GPU roles' pieces a lab node cannot exercise: GPUs and NVSwitches on the PCI bus,
a loaded driver, RoCE GID indexes, and certification's reading of a GPU node's stack.

Hardware is laid out as sysfs and /proc files in a temporary directory (no GPU
exists here); everything else is the real code and the real stacks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jinja2
import pytest
import yaml

from kiln.certification import preflight as pre
from kiln.inventory import Access, build_inventory, gpu_vars
from kiln.preflight import parse_facts
from kiln.ssh import SshTarget
from kiln.stack import ConfigError, load_stack
from tests.conftest import REPO

pytestmark = pytest.mark.unit

_spec = importlib.util.spec_from_file_location(
    "nvidia_devices", REPO / "roles" / "nvidia" / "library" / "nvidia_devices.py"
)
nvidia_devices = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nvidia_devices)  # type: ignore[union-attr]


def _pci(root: Path, address: str, vendor: str, klass: str) -> None:
    device = root / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "class").write_text(klass + "\n")


def test_gpus_and_nvswitches_are_told_apart_from_other_devices(tmp_path: Path):
    pci = tmp_path / "pci"
    _pci(pci, "0000:18:00.0", "0x10de", "0x030200")  # H100: 3D controller
    _pci(pci, "0000:2a:00.0", "0x10de", "0x030000")  # VGA-class NVIDIA GPU
    _pci(pci, "0000:05:00.0", "0x10de", "0x068000")  # NVSwitch
    _pci(pci, "0000:06:00.0", "0x10de", "0x040300")  # the GPU's audio function
    _pci(pci, "0000:1a:00.0", "0x15b3", "0x020700")  # ConnectX HCA
    _pci(pci, "0000:00:02.0", "0x8086", "0x030000")  # someone else's VGA
    gpus, switches = nvidia_devices.scan_pci(str(pci))
    assert gpus == ["0000:18:00.0", "0000:2a:00.0"]
    assert switches == ["0000:05:00.0"]
    assert nvidia_devices.scan_pci(str(tmp_path / "absent")) == ([], [])


def test_the_loaded_driver_and_peer_memory_module_are_read_from_proc(tmp_path: Path):
    proc = tmp_path / "proc"
    (proc / "driver" / "nvidia").mkdir(parents=True)
    (proc / "driver" / "nvidia" / "version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Tue Sep 23 09:55:41 UTC 2025\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    (proc / "modules").write_text(
        "nvidia_peermem 16384 0 - Live 0x0000000000000000\n"
        "nvidia_uvm 4956160 0 - Live 0x0000000000000000\n"
        "nvidia 11513856 2 nvidia_peermem,nvidia_uvm, Live 0x0000000000000000\n"
        "mlx5_ib 495616 0 - Live 0x0000000000000000\n"
    )
    assert nvidia_devices.loaded_driver(str(proc)) == "580.95.05"
    assert nvidia_devices.loaded_modules(str(proc)) == ["nvidia", "nvidia_uvm", "nvidia_peermem"]
    assert nvidia_devices.loaded_driver(str(tmp_path)) is None  # no driver loaded


def test_installed_gpu_packages_are_read_from_dpkg_lines():
    facts = parse_facts(
        "hostname=g1\n"
        "gpu_package=hi |nvidia-driver-580|580.95.05-1\n"  # installed and held
        "gpu_package=rc |nvidia-driver-575|575.57.08-1\n"  # removed, config left: not installed
        "gpu_package=ii |nvidia-fabricmanager-580|580.126.09-1\n"
        "gpu_package=ii |cuda-toolkit-12-4|12.4.1-1\n"
        "nccl=2.21.5-1+cuda12.4\n"
    )
    assert facts["gpu_driver_installed"] == "580.95.05"
    assert facts["fabricmanager"] == "580.126.09"
    assert facts["cuda"] == "12.4.1"
    assert facts["gpu_driver"] is None  # installed, not loaded
    two = parse_facts(
        "hostname=g1\ngpu_package=ii |nvidia-driver-580|580.95.05-1\n"
        "gpu_package=ii |nvidia-driver-575|575.57.08-1\n"
    )
    assert two["gpu_driver_installed"] == "575.57.08,580.95.05"  # two branches: drift, visible


GOOD = {
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "gpus": 8,
    "gpu_driver": "550.127.08",
    "gpu_driver_installed": "550.127.08",
    "fabricmanager": "550.127.08",
    "cuda": "12.4.1",
    "nccl": "2.21.5",
    "peermem": "nvidia_peermem",
    "dcgm_diag": {"exit": 0, "failing": ""},
}


def _gpu_measurements(**node2: object) -> dict[tuple[str, str], tuple[object, str]]:
    cluster = load_stack("staging", REPO / "stacks")
    hosts = [h.name for h in cluster.hosts]
    facts = {name: dict(GOOD) for name in hosts}
    facts["stg-a100-02"].update(node2)
    return {
        (m["name"], m["subject"]): (m["value"], m["detail"])
        for m in pre.measurements(cluster, facts, {}, {})
    }


def test_a_gpu_node_matching_its_pins_passes_every_gpu_measurement():
    found = _gpu_measurements()
    for name in (
        "preflight.gpu_stack_as_pinned",
        "preflight.gpu_driver_loaded",
        "preflight.gpudirect_loaded",
        "preflight.dcgm_diag_passed",
    ):
        assert found[(name, "stg-a100-01")][0] is True, name
    assert ("preflight.gpu_stack_as_pinned", "stg-ctl01") not in found  # not a GPU compute


def test_a_fabric_manager_newer_than_the_driver_is_named():
    value, detail = _gpu_measurements(fabricmanager="550.163.01")[
        ("preflight.gpu_stack_as_pinned", "stg-a100-02")
    ]
    assert value is False and detail == "fabric manager 550.163.01, pinned 550.127.08"


def test_a_missing_nccl_fails_and_does_not_pass_for_unknown():
    value, detail = _gpu_measurements(nccl=None)[("preflight.gpu_stack_as_pinned", "stg-a100-02")]
    assert value is False and "NCCL not installed (pinned 2.21.5)" in detail


def test_a_driver_installed_but_not_running_asks_for_a_reboot():
    found = _gpu_measurements(gpu_driver_installed="550.163.01")
    value, detail = found[("preflight.gpu_driver_loaded", "stg-a100-02")]
    assert value is False and "reboot" in detail
    value, _ = _gpu_measurements(gpu_driver=None)[("preflight.gpu_driver_loaded", "stg-a100-02")]
    assert value is None  # nothing loaded: unknown, and the rule fails closed


def test_no_peer_memory_module_on_an_rdma_pool_fails():
    value, detail = _gpu_measurements(peermem=None)[("preflight.gpudirect_loaded", "stg-a100-02")]
    assert value is False and "host memory" in detail


def test_a_failed_or_absent_dcgm_diagnostic_is_not_a_pass():
    failed = {"exit": 226, "failing": "PCIe Fail - GPU 3"}
    value, detail = _gpu_measurements(dcgm_diag=failed)[
        ("preflight.dcgm_diag_passed", "stg-a100-02")
    ]
    assert value is False and "PCIe Fail - GPU 3" in detail
    value, _ = _gpu_measurements(dcgm_diag=None)[("preflight.dcgm_diag_passed", "stg-a100-02")]
    assert value is None


def test_the_diag_line_parses_and_runs_only_where_dcgm_is_installed():
    state = pre.parse_state("dcgm_diag=226 Deployment Fail;PCIe Fail - GPU 3;\n")
    assert state["dcgm_diag"] == {"exit": 226, "failing": "Deployment Fail;PCIe Fail - GPU 3"}
    staging = load_stack("staging", REPO / "stacks")
    lab = load_stack("lab", REPO / "stacks")
    assert pre.dcgm_diag_wanted(staging) and not pre.dcgm_diag_wanted(lab)
    assert "[ 1 = 1 ]" in pre.state_command(staging, "/v")
    assert "[ 0 = 1 ]" in pre.state_command(lab, "/v")


def test_gpu_pools_form_the_gpu_group_with_their_pins():
    cluster = load_stack("staging", REPO / "stacks")
    targets = {
        h.name: SshTarget(h.name, str(h.address), "ubuntu", Path("/k"), Path("/kh"))
        for h in cluster.hosts
    }
    inventory = build_inventory(cluster, Access(targets))["all"]
    groups = inventory["children"]
    gpu_pool = next(p for p in cluster.node_pools if p.gpu)
    assert set(groups["gpu"]["hosts"]) == {h.name for h in gpu_pool.hosts}
    pool_vars = groups[f"pool_{gpu_pool.name.replace('-', '_')}"]["vars"]
    assert pool_vars["nvidia_driver_version"] == "550.127.08"
    assert pool_vars["nccl_cuda_version"] == pool_vars["cuda_toolkit_version"] == "12.4"
    assert pool_vars["fabricmanager_enabled"] and pool_vars["gpudirect_enabled"]
    assert pool_vars["container_toolkit_enabled"] is False  # Slurm jobs run on the host
    assert pool_vars["nvidia_repo_url"] == ""  # NVIDIA's own repository


def test_a_site_mirror_in_the_stack_reaches_the_roles(tmp_path: Path):
    document = yaml.safe_load((REPO / "stacks" / "Pulumi.staging.yaml").read_text())
    gpu = document["config"]["kiln:cluster"]["nodePools"][1]["gpu"]
    gpu["repository"] = "http://mirror.internal/nvidia/ubuntu2204/x86_64/"
    gpu["repositoryKey"] = "http://mirror.internal/nvidia/key.asc"
    (tmp_path / "Pulumi.mirror.yaml").write_text(yaml.safe_dump(document))
    cluster = load_stack("mirror", tmp_path)
    pool = cluster.node_pools[1]
    variables = gpu_vars(cluster, pool)
    assert variables["nvidia_repo_url"] == gpu["repository"]
    assert variables["nvidia_repo_key_url"] == gpu["repositoryKey"]
    gpu["repository"] = "mirror.internal/nvidia"  # no scheme: refused, naming the key
    (tmp_path / "Pulumi.mirror.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=r"nodePools\[1\]\.gpu\.repository"):
        load_stack("mirror", tmp_path)


def _nccl_conf(**values: object) -> list[str]:
    template = (REPO / "roles" / "nccl" / "templates" / "nccl.conf.j2").read_text()
    # Ansible renders templates with trim_blocks on.
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    defaults = {"nccl_net_gdr_level": "", "nccl_conf_extra": {}, "_nccl_gid_index": ""}
    text = env.from_string(template).render({**defaults, **values})
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_nccl_conf_for_roce_with_one_gid_index_and_extras():
    lines = _nccl_conf(
        _nccl_ifname="bond0",
        _nccl_fabric="roce",
        _nccl_hcas=["mlx5_0", "mlx5_1"],
        _nccl_gid_index=3,
        nccl_net_gdr_level="PHB",
        nccl_conf_extra={"NCCL_IB_TIMEOUT": 22},
    )
    assert lines == [
        "NCCL_SOCKET_IFNAME==bond0",
        "NCCL_IB_HCA==mlx5_0,mlx5_1",
        "NCCL_IB_GID_INDEX=3",
        "NCCL_NET_GDR_LEVEL=PHB",
        "NCCL_IB_TIMEOUT=22",
    ]


def test_nccl_conf_without_a_fabric_disables_ib():
    lines = _nccl_conf(_nccl_ifname="eth0", _nccl_fabric="none", _nccl_hcas=[])
    assert lines == ["NCCL_SOCKET_IFNAME==eth0", "NCCL_IB_DISABLE=1"]


def test_nccl_conf_on_infiniband_sets_no_gid_index():
    lines = _nccl_conf(_nccl_ifname="eth0", _nccl_fabric="infiniband", _nccl_hcas=["mlx5_0"])
    assert lines == ["NCCL_SOCKET_IFNAME==eth0", "NCCL_IB_HCA==mlx5_0"]
