#!/usr/bin/python3
"""Ansible module: the NVIDIA GPUs and NVSwitches of a host, and which NVIDIA kernel modules run.

Read-only: it reads sysfs and /proc. Every GPU role asks it before touching
the device, so a host without a GPU (a lab node, a CPU login node) installs
and configures everything and skips only what needs the hardware.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: nvidia_devices
short_description: Find NVIDIA GPUs and NVSwitches on the PCI bus and the loaded NVIDIA modules
description:
  - Reads <pci_root>/<address>/{vendor,class}, <proc_root>/modules and
    <proc_root>/driver/nvidia/version.
  - Never changes the host; supports check mode.
options:
  pci_root:
    description: Directory holding one entry per PCI device.
    type: path
    default: /sys/bus/pci/devices
  proc_root:
    description: Where /proc is mounted.
    type: path
    default: /proc
"""

RETURN = r"""
gpus:
  description: PCI addresses of NVIDIA display and 3D controllers (class 0x0300, 0x0302), sorted.
  type: list
  elements: str
nvswitches:
  description: >-
    PCI addresses of NVIDIA bridges (class 0x0680): NVSwitches, which need fabric manager.
  type: list
  elements: str
loaded_driver:
  description: Version of the running NVIDIA kernel driver, or null when none is loaded.
  type: str
modules:
  description: Loaded NVIDIA kernel modules among nvidia, nvidia_uvm, nvidia_peermem, nv_peer_mem.
  type: list
  elements: str
"""

NVIDIA_VENDOR = "0x10de"
# PCI class codes (class, subclass): VGA and 3D controllers are GPUs; an NVIDIA
# "other bridge" is an NVSwitch.
_GPU_CLASSES = ("0x0300", "0x0302")
_NVSWITCH_CLASS = "0x0680"
_MODULES = ("nvidia", "nvidia_uvm", "nvidia_peermem", "nv_peer_mem")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def scan_pci(pci_root: str) -> tuple[list[str], list[str]]:
    """(GPU addresses, NVSwitch addresses) under `pci_root`."""
    gpus, switches = [], []
    try:
        entries = sorted(os.listdir(pci_root))
    except OSError:
        return gpus, switches
    for address in entries:
        device = os.path.join(pci_root, address)
        if _read(os.path.join(device, "vendor")).lower() != NVIDIA_VENDOR:
            continue
        klass = _read(os.path.join(device, "class")).lower()[:6]
        if klass in _GPU_CLASSES:
            gpus.append(address)
        elif klass == _NVSWITCH_CLASS:
            switches.append(address)
    return gpus, switches


def loaded_driver(proc_root: str) -> str | None:
    """The version in `NVRM version: ... Kernel Module  580.95.05  ...`, if a driver is loaded."""
    for word in _read(os.path.join(proc_root, "driver", "nvidia", "version")).split():
        parts = word.split(".")
        if len(parts) in (2, 3) and all(p.isdigit() for p in parts):
            return word
    return None


def loaded_modules(proc_root: str) -> list[str]:
    lines = _read(os.path.join(proc_root, "modules")).splitlines()
    names = {line.split()[0] for line in lines if line}
    return [m for m in _MODULES if m in names]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pci_root": {"type": "path", "default": "/sys/bus/pci/devices"},
            "proc_root": {"type": "path", "default": "/proc"},
        },
        supports_check_mode=True,
    )
    gpus, switches = scan_pci(module.params["pci_root"])
    proc = module.params["proc_root"]
    module.exit_json(
        changed=False,
        gpus=gpus,
        nvswitches=switches,
        loaded_driver=loaded_driver(proc),
        modules=loaded_modules(proc),
    )


if __name__ == "__main__":
    main()
