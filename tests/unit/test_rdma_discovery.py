"""The rdma role's device paths, which lab nodes (no RDMA NIC) never reach.

Discovery runs against a fake /sys/class/infiniband laid out like the kernel's;
the RoCE boot script and unit are rendered by Ansible for two ports.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.unit

ROLE = REPO / "roles" / "rdma"
_spec = importlib.util.spec_from_file_location("rdma_devices", ROLE / "library" / "rdma_devices.py")
rdma_devices = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rdma_devices)

LINK_LOCAL = "fe80:0000:0000:0000:0ac0:ebff:fe12:3456"
GLOBAL6 = "2001:0db8:0000:0000:0ac0:ebff:fe12:3456"
MAPPED4 = "0000:0000:0000:0000:0000:ffff:0a00:0005"  # ::ffff:10.0.0.5
ZERO = "0000:0000:0000:0000:0000:0000:0000:0000"


def _port(
    root: Path,
    device: str,
    port: int,
    link_layer: str,
    gids: list[tuple[str, str | None, str | None]],
    state: str = "4: ACTIVE",
    netdev: str | None = None,
) -> None:
    """One port; gids are (gid, type, ndev), None where the kernel refuses the read."""
    port_dir = root / device / "ports" / str(port)
    for sub in ("gids", "gid_attrs/types", "gid_attrs/ndevs"):
        (port_dir / sub).mkdir(parents=True, exist_ok=True)
    (port_dir / "state").write_text(state + "\n")
    (port_dir / "link_layer").write_text(link_layer + "\n")
    (port_dir / "rate").write_text("200 Gb/sec (4X HDR)\n")
    for index, (gid, kind, ndev) in enumerate(gids):
        (port_dir / "gids" / str(index)).write_text(gid + "\n")
        # Unpopulated GIDs: the attribute files exist but reading them fails (EINVAL).
        # A directory in their place makes open() fail the same way.
        for sub, value in (("types", kind), ("ndevs", ndev)):
            target = port_dir / "gid_attrs" / sub / str(index)
            if value is None:
                target.mkdir()
            else:
                target.write_text(value + "\n")
    if netdev:
        (root / device / "device" / "net" / netdev).mkdir(parents=True)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "infiniband"
    # RoCE: v1 and v2 GIDs for link-local and IPv4; NCCL's pick is the IPv4 RoCE v2 one (3).
    _port(
        root,
        "mlx5_0",
        1,
        "Ethernet",
        [
            (LINK_LOCAL, "IB/RoCE v1", "ens1f0np0"),
            (LINK_LOCAL, "RoCE v2", "ens1f0np0"),
            (MAPPED4, "IB/RoCE v1", "ens1f0np0"),
            (MAPPED4, "RoCE v2", "ens1f0np0"),
            (ZERO, None, None),
        ],
        netdev="ens1f0np0",
    )
    # InfiniBand: no RoCE GID, no netdev.
    _port(root, "mlx5_1", 1, "InfiniBand", [(LINK_LOCAL, "IB/RoCE v1", None)], state="1: DOWN")
    # RoCE without IPv4: a global IPv6 RoCE v2 GID wins over the link-local one.
    _port(
        root,
        "mlx5_2",
        1,
        "Ethernet",
        [(LINK_LOCAL, "RoCE v2", "ens2"), (GLOBAL6, "RoCE v2", "ens2")],
        netdev="ens2",
    )
    # RoCE port whose link is down: no GID yet, the netdev comes from the PCI function.
    _port(root, "mlx5_3", 1, "Ethernet", [(ZERO, None, None)], state="1: DOWN", netdev="ens3")
    return root


def test_discovery_reports_each_port_and_the_roce_v2_gid_nccl_would_use(sysfs: Path):
    devices, missing = rdma_devices.discover(str(sysfs), [])
    assert missing == []
    assert devices == [
        {
            "name": "mlx5_0",
            "port": 1,
            "state": "ACTIVE",
            "link_layer": "Ethernet",
            "rate": "200 Gb/sec (4X HDR)",
            "netdev": "ens1f0np0",
            "gid_index_roce_v2": 3,
        },
        {
            "name": "mlx5_1",
            "port": 1,
            "state": "DOWN",
            "link_layer": "InfiniBand",
            "rate": "200 Gb/sec (4X HDR)",
            "netdev": None,
            "gid_index_roce_v2": None,
        },
        {
            "name": "mlx5_2",
            "port": 1,
            "state": "ACTIVE",
            "link_layer": "Ethernet",
            "rate": "200 Gb/sec (4X HDR)",
            "netdev": "ens2",
            "gid_index_roce_v2": 1,
        },
        {
            "name": "mlx5_3",
            "port": 1,
            "state": "DOWN",
            "link_layer": "Ethernet",
            "rate": "200 Gb/sec (4X HDR)",
            "netdev": "ens3",
            "gid_index_roce_v2": None,
        },
    ]


def test_discovery_keeps_only_the_listed_hcas_and_names_missing_ones(sysfs: Path):
    devices, missing = rdma_devices.discover(str(sysfs), ["mlx5_1", "mlx5_9"])
    assert [d["name"] for d in devices] == ["mlx5_1"]
    assert missing == ["mlx5_9"]


def test_no_rdma_class_means_no_devices(tmp_path: Path):
    assert rdma_devices.discover(str(tmp_path / "absent"), []) == ([], [])
    assert rdma_devices.discover(str(tmp_path / "absent"), ["mlx5_0"]) == ([], ["mlx5_0"])


def test_roce_boot_script_and_unit_render_for_each_port(tmp_path: Path):
    ports = [
        {"name": "mlx5_0", "port": 1, "netdev": "ens1f0np0"},
        {"name": "mlx5_1", "port": 1, "netdev": "bond-rdma"},
    ]
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "vars": {"_rdma_roce_ports": ports, "ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / f"{name}.j2"),
                        "dest": str(tmp_path / name),
                        "mode": "0644",
                    }
                }
                for name in ("kiln-rdma-roce.sh", "kiln-rdma-roce.service")
            ],
        }
    ]
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump(play))
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    script = (tmp_path / "kiln-rdma-roce.sh").read_text()
    assert subprocess.run(["sh", "-n", str(tmp_path / "kiln-rdma-roce.sh")]).returncode == 0
    for port in ports:
        netdev = port["netdev"]
        assert f"ip link set dev {netdev} mtu 9000\n" in script
        assert f"dcb app replace dev {netdev} dscp-prio 26:3\n" in script
        assert f"dcb pfc set dev {netdev} prio-pfc all:off 3:on\n" in script
        assert f"/sys/class/net/{netdev}/ecn/roce_np/enable/3 1\n" in script
        assert f"/sys/kernel/config/rdma_cm/{port['name']}/ports/1/default_roce_tos 104\n" in script

    unit = (tmp_path / "kiln-rdma-roce.service").read_text()
    devices = (
        "sys-subsystem-net-devices-ens1f0np0.device sys-subsystem-net-devices-bond\\x2drdma.device"
    )
    assert f"Requires={devices}\n" in unit
    assert f"After={devices}\n" in unit
    assert "ExecStart=/usr/local/sbin/kiln-rdma-roce\n" in unit
