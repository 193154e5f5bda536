"""Whose CPU time a provisioning run spent: Ansible's main process, its forks, each lab node.

The host's busy time (/proc/stat) says how much work a run did, not whose. The
split matters for the 3-vs-1 target: Ansible's main process runs the strategy
for every host in one Python interpreter (one core at a time, whatever the
number of cores), so its CPU time is a floor on the run's wall time that more
cores would not lower; its forks (task workers, Mitogen's connection
multiplexers, ssh) and the nodes' own work can spread over the cores.

How it is counted: a process's own time plus that of the children it has
reaped covers its whole tree below it, live or dead. So the work of a group of
processes between two instants is that sum over the group's live members at
the second minus the same at the first, with nothing counted twice. The
Ansible run's whole tree is this process's reaped-children time (ansible-runner
starts ansible-playbook as our child and reaps it); its main process's own time
is sampled until it exits (a few tenths of a second may be missed at the end).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: children it has waited for
    cmdline: str


def processes() -> list[Proc]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = f"/proc/{entry}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it exited meanwhile
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(v) / TICK for v in fields[11:15])
        found.append(Proc(int(entry), int(fields[1]), utime + stime, cutime + cstime, cmdline))
    return found


def node_totals(node_pids: dict[str, int]) -> dict[str, float]:
    """Each node's tree total now: own + reaped time of its nspawn and every process below.

    By ancestry, not by root directory: /proc/PID/root of a process in a container
    reads "/" from here (its root is in another mount namespace).
    """
    procs = processes()
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    totals = {}
    for name, pid in node_pids.items():
        total, stack = 0.0, [p for p in procs if p.pid == pid]
        while stack:
            proc = stack.pop()
            total += proc.own + proc.reaped
            stack.extend(children.get(proc.pid, ()))
        totals[name] = total
    return totals


def host_cpu() -> tuple[float, float]:
    """(busy, stolen) core-seconds of this host's CPUs since boot (/proc/stat). Busy counts
    every lab node's work too (they share this kernel); stolen is time the hypervisor gave
    to other machines while this one had work: lost, not work done."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


@dataclass
class Split:
    """CPU seconds of one run, by whose they were."""

    busy: float = 0.0  # all of this host's work, steal excluded
    stolen: float = 0.0
    ansible_main: float = 0.0
    ansible_forks: float = 0.0
    kiln: float = 0.0  # this process: Kiln's own work around Ansible, and the sampling
    nodes: dict[str, float] = field(default_factory=dict)

    @property
    def rest(self) -> float:
        """The kernel's work and any other process on this host."""
        known = self.ansible_main + self.ansible_forks + self.kiln + sum(self.nodes.values())
        return self.busy - known


class Profiler:
    """Samples while a run goes on; `split()` once it is over."""

    def __init__(self, node_pids: dict[str, int]) -> None:
        self.node_pids = node_pids
        self._main_own: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Profiler:
        self._start = (host_cpu(), os.times(), node_totals(self.node_pids))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._end = (host_cpu(), os.times(), node_totals(self.node_pids))

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(SAMPLE_S):
            for proc in processes():
                # The main process is ours; its forks (same command line) are its children.
                if proc.ppid == me and "ansible-playbook" in proc.cmdline:
                    self._main_own[proc.pid] = proc.own

    def split(self) -> Split:
        (busy0, stolen0), times0, nodes0 = self._start
        (busy1, stolen1), times1, nodes1 = self._end
        # ansible-runner starts ansible-playbook as our child and reaps it: its whole tree.
        ansible = (times1.children_user + times1.children_system) - (
            times0.children_user + times0.children_system
        )
        main = sum(self._main_own.values())
        return Split(
            busy=busy1 - busy0,
            stolen=stolen1 - stolen0,
            ansible_main=main,
            ansible_forks=max(0.0, ansible - main),
            kiln=(times1.user + times1.system) - (times0.user + times0.system),
            nodes={n: nodes1[n] - nodes0[n] for n in nodes1},
        )
