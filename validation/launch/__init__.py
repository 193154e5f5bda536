"""Start a validation module on a set of hosts and collect what each rank did.

One interface (:class:`Launcher`), one implementation per way of starting
processes: :class:`LocalLauncher` (processes on this machine) and
:class:`KubernetesLauncher` (renders an indexed Job). SSH and Slurm launchers
implement the same interface.
"""

from validation.launch.base import HostSpec, Launcher, LaunchResult, RankOutcome, RankSlot
from validation.launch.kubernetes import KubernetesLauncher
from validation.launch.local import LocalLauncher

__all__ = [
    "HostSpec",
    "KubernetesLauncher",
    "LaunchResult",
    "Launcher",
    "LocalLauncher",
    "RankOutcome",
    "RankSlot",
]
