#!/usr/bin/python3
"""Ansible module: the RDMA ports of a host and the GID index RoCE v2 traffic should use.

Read-only: it only reads sysfs. Shipped in the rdma role's `library/` so that
discovery needs no shell pipeline over hundreds of GID files.
"""

from __future__ import annotations

import ipaddress
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: rdma_devices
short_description: Discover RDMA ports and their RoCE v2 GID index from sysfs
description:
  - Reads /sys/class/infiniband/<dev>/ports/<port>/{state,link_layer,rate,gids,gid_attrs}.
  - Never changes the host; supports check mode.
options:
  sysfs_root:
    description: Directory holding one entry per RDMA device.
    type: path
    default: /sys/class/infiniband
  hcas:
    description: Only these devices (empty means all); missing ones are reported in C(missing).
    type: list
    elements: str
    default: []
"""

RETURN = r"""
devices:
  description: >-
    One entry per port, sorted: name, port, state (ACTIVE, DOWN, ...), link_layer
    (InfiniBand or Ethernet), rate, netdev (RoCE) and gid_index_roce_v2 (null on IB).
  type: list
  elements: dict
missing:
  description: Entries of C(hcas) that do not exist on the host.
  type: list
  elements: str
"""

_ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"


def _read(path: str) -> str | None:
    """A sysfs attribute, or None where the kernel refuses it (unpopulated GIDs: EINVAL)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _numbered(directory: str) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    except OSError:
        return []


def roce_v2_gid_index(port_dir: str) -> tuple[int | None, str | None]:
    """The GID index (and its netdev) NCCL and perftest should use for RoCE v2.

    Like NCCL's default (NCCL_IB_ADDR_FAMILY=AF_INET): the first RoCE v2 GID that
    is an IPv4-mapped address, else the first global IPv6 one, else the first
    RoCE v2 GID at all.
    """
    candidates: list[tuple[int, int, str | None]] = []
    for index in _numbered(os.path.join(port_dir, "gids")):
        gid = _read(os.path.join(port_dir, "gids", str(index)))
        kind = _read(os.path.join(port_dir, "gid_attrs", "types", str(index)))
        if not gid or gid == _ZERO_GID or kind is None or kind.lower() != "roce v2":
            continue
        try:
            address = ipaddress.IPv6Address(gid)
        except ValueError:
            continue
        if address.ipv4_mapped is not None:
            rank = 0
        elif not address.is_link_local:
            rank = 1
        else:
            rank = 2
        netdev = _read(os.path.join(port_dir, "gid_attrs", "ndevs", str(index)))
        candidates.append((rank, index, netdev))
    if not candidates:
        return None, None
    _, index, netdev = min(candidates)
    return index, netdev


def _device_netdev(device_dir: str) -> str | None:
    """The netdev of the device's PCI function (RoCE ports without a usable GID yet)."""
    try:
        names = sorted(os.listdir(os.path.join(device_dir, "device", "net")))
    except OSError:
        return None
    return names[0] if names else None


def discover(sysfs_root: str, hcas: list[str]) -> tuple[list[dict], list[str]]:
    """(ports found, requested HCAs that are absent)."""
    try:
        present = sorted(os.listdir(sysfs_root))
    except OSError:
        present = []
    wanted = [name for name in present if not hcas or name in hcas]
    devices = []
    for name in wanted:
        device_dir = os.path.join(sysfs_root, name)
        for port in _numbered(os.path.join(device_dir, "ports")):
            port_dir = os.path.join(device_dir, "ports", str(port))
            state = _read(os.path.join(port_dir, "state")) or ""
            link_layer = _read(os.path.join(port_dir, "link_layer")) or ""
            entry = {
                "name": name,
                "port": port,
                # "4: ACTIVE" -> "ACTIVE"
                "state": state.split(":", 1)[-1].strip(),
                "link_layer": link_layer,
                "rate": _read(os.path.join(port_dir, "rate")),
                "netdev": None,
                "gid_index_roce_v2": None,
            }
            if link_layer == "Ethernet":
                index, netdev = roce_v2_gid_index(port_dir)
                entry["gid_index_roce_v2"] = index
                entry["netdev"] = netdev or _device_netdev(device_dir)
            devices.append(entry)
    missing = [name for name in hcas if name not in present]
    return devices, missing


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "sysfs_root": {"type": "path", "default": "/sys/class/infiniband"},
            "hcas": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    devices, missing = discover(module.params["sysfs_root"], module.params["hcas"])
    module.exit_json(changed=False, devices=devices, missing=missing)


if __name__ == "__main__":
    main()
