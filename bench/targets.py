"""The provisioning bench's verdict: each target met or not, and why one is not.

A target is met only when every run it covers was measured and within its
limit: a missing measurement (a no-op `lab up` that did not skip, say) is never
counted as met. A missed 3-vs-1 target says which of two measured reasons it
is, from the runs' own work:

- the work cannot fit: the least wall time the 3-node run's measured CPU work
  needs on this machine's cores, play by play, is already over the limit times
  the 1-node run's wall time, so no schedule of that work meets the target here;
  only less work per node would;
- or the work would fit, and the hosts lost the rest waiting for shared cores.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    limit: float
    measured: tuple[float | None, ...]
    """One value per run the target covers; None where the run measured nothing."""
    unit: str = ""

    @property
    def met(self) -> bool:
        return bool(self.measured) and all(
            value is not None and value <= self.limit for value in self.measured
        )

    def line(self, reason: str = "") -> str:
        shown = ", ".join("missing" if v is None else f"{v:.2f}{self.unit}" for v in self.measured)
        verdict = "met" if self.met else "NOT MET"
        why = f": {reason}" if reason and not self.met else ""
        return f"  {self.name} <= {self.limit:g}{self.unit}: {verdict} ({shown}){why}"


@dataclass(frozen=True)
class Scaling:
    """What one pair of runs (1 and 3 compute nodes, both cold or both warm) measured."""

    wall_one: float
    wall_three: float
    need_three: float
    """Seconds: the least wall time the 3-node run's work needs on this machine's cores,
    play by play (a play ends with its last host)."""
    nodes_extra: float
    """Core-seconds the 3-node run's nodes worked more than the 1-node run's."""
    kernel_extra: float
    """Core-seconds of that and Ansible's work that were the host kernel's."""
    serial_extra: float
    """Seconds Ansible's serial part grew: what two more hosts cost on any machine."""
    own_cpus: float
    """3 vs 1 estimated for hosts with their own CPUs (not the target)."""
    cores: int

    @property
    def ratio(self) -> float:
        return self.wall_three / self.wall_one

    @property
    def need(self) -> float:
        """The least 3 vs 1 the 3-node run's work allows on this machine."""
        return self.need_three / self.wall_one


def scaling_reason(s: Scaling, limit: float) -> str:
    """Why 3 vs 1 missed `limit`, from the runs' measured work."""
    tail = (
        f"Ansible's serial part grew {s.serial_extra:.1f} s for the two more hosts, and with "
        f"hosts that have their own CPUs 3 vs 1 would be about {s.own_cpus:.2f} (an estimate)"
    )
    if s.need > limit:
        return (
            f"cannot be met on this machine with this work: the 3-node run's work alone needs "
            f"{s.need:.2f}x the 1-node run's wall time on {s.cores} cores, play by play, on any "
            f"schedule. The extra work is the nodes' own ({s.nodes_extra:.0f} core-s more, each "
            f"node installing and checking its own packages and runtime; {s.kernel_extra:.0f} "
            f"core-s of the run's extra work were the kernel's); {tail}"
        )
    return (
        f"the work would fit in {s.need:.2f}x, and the run took {s.ratio / s.need:.2f}x that: "
        f"the hosts' tasks waited for {s.cores} cores shared by every node; {tail}"
    )
