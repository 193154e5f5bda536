"""Start a validation module on a set of hosts and collect what each rank did.

One interface (:class:`Launcher`), one implementation per way of starting
processes: :class:`LocalLauncher` (processes on this machine),
:class:`SshLauncher` (ranks on remote hosts over OpenSSH),
:class:`SlurmLauncher` (``srun`` from a login node) and
:class:`KubernetesLauncher` (renders an indexed Job).

Implementations are imported on first use: rendering a Kubernetes manifest
must not import torch (the Pulumi program does it at preview).
"""

from __future__ import annotations

import importlib
from typing import Any

from validation.launch.base import HostSpec, Launcher, LaunchResult, RankOutcome, RankSlot

_LAZY = {
    "KubernetesLauncher": "validation.launch.kubernetes",
    "LocalLauncher": "validation.launch.local",
    "SshLauncher": "validation.launch.ssh",
    "SlurmLauncher": "validation.launch.slurm",
}

__all__ = ["HostSpec", "LaunchResult", "Launcher", "RankOutcome", "RankSlot", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validation.launch' has no attribute {name!r}")
