"""Start a validation module on a set of hosts and collect what each rank did.

One interface (:class:`Launcher`), one implementation per way of starting
processes: :class:`LocalLauncher` (processes on this machine) and
:class:`SshLauncher` (ranks on remote hosts over OpenSSH),
:class:`KubernetesLauncher` (renders an indexed Job). The Slurm launcher
implements the same interface.
"""

from validation.launch.base import HostSpec, Launcher, LaunchResult, RankOutcome, RankSlot
from validation.launch.kubernetes import KubernetesLauncher
from validation.launch.local import LocalLauncher
from validation.launch.ssh import SshLauncher

__all__ = [
    "HostSpec",
    "KubernetesLauncher",
    "LaunchResult",
    "Launcher",
    "LocalLauncher",
    "RankOutcome",
    "RankSlot",
    "SshLauncher",
]
