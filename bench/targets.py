"""The provisioning bench's verdict: each target met or not, and why one is not.

A target is met only when every run it covers was measured and within its
limit: a missing measurement (a no-op `lab up` that did not skip, say) is never
counted as met. A missed 3-vs-1 target gets its reason from the runs' own
measurements:

- whether the work can fit at all: when the least wall time the 3-node run's
  measured CPU work needs on this machine's cores, play by play, is already
  over the limit times the 1-node run's wall time, no schedule of that work
  meets the target here; only less work per node would;
- task by task, how much of the extra time is each task's slowest host taking
  longer on cores every node shares, and how much is Ansible's serial part
  (what more hosts cost on any machine), with the ratio the latter alone gives.
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
    busy_three: float
    """The share of this machine's cores the 3-node run kept busy, on average."""
    slowest_extra: float
    """Seconds more, over the tasks, of each task's slowest host (task_timeline)."""
    serial_extra: float
    """Seconds Ansible's serial part grew: what two more hosts cost on any machine."""
    task_time: float
    """How many times as long a host took per task in the 3-node run."""
    task_cpu: float
    """How many times the CPU a host used per task in the 3-node run."""
    nodes_extra: float
    """Core-seconds the 3-node run's nodes worked more than the 1-node run's."""
    kernel_extra: float
    """Core-seconds more of the host kernel's work (the nodes' system calls, page faults)."""
    cores: int

    @property
    def ratio(self) -> float:
        return self.wall_three / self.wall_one

    @property
    def need(self) -> float:
        """The least 3 vs 1 the 3-node run's work allows on this machine."""
        return self.need_three / self.wall_one

    @property
    def own_cpus(self) -> float:
        """3 vs 1 with each task's slowest host as fast as in the 1-node run (hosts with CPUs
        of their own, as a real pool's have), plus the serial part as measured: an
        estimate, not the target."""
        return (self.wall_one + self.serial_extra) / self.wall_one


def scaling_reason(s: Scaling, limit: float) -> str:
    """Why 3 vs 1 missed `limit`, from the runs' measured work and task timeline."""
    where = (
        f"the 3-node run took {s.wall_three - s.wall_one:.1f} s more. {s.slowest_extra:.1f} s "
        f"of it is each task's slowest host taking {s.task_time:.2f}x as long per task for "
        f"{s.task_cpu:.2f}x the CPU: each task runs Ansible workers and modules for four "
        f"hosts at once, not two, on the same {s.cores} cores and waits for its slowest host "
        f"(the cores were {s.busy_three:.0%} busy on average). {s.serial_extra:.1f} s is "
        f"Ansible's serial part, what two more hosts cost on any machine; with hosts that "
        f"have their own CPUs 3 vs 1 would be about {s.own_cpus:.2f} (an estimate)"
    )
    if s.need > limit:
        return (
            f"cannot be met on this machine with this work: the 3-node run's work alone needs "
            f"{s.need:.2f}x the 1-node run's wall time on {s.cores} cores, play by play, on any "
            f"schedule; the nodes worked {s.nodes_extra:.0f} core-s more (each node installs "
            f"and checks its own packages and runtime; the kernel's work grew "
            f"{s.kernel_extra:.0f} core-s). Task by task, {where}"
        )
    return f"task by task, {where}"
