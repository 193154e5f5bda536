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
the second minus the same at the first, with nothing counted twice. A lab
node's members are its nspawn and every process in its PID namespace. The
Ansible run's whole tree is this process's reaped-children time (ansible-runner
starts ansible-playbook as our child and reaps it); its main process's own time
is sampled until it exits (a few tenths of a second may be missed at the end).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2
SCANS = 5  # scans of /proc per node reading, at most (see node_totals)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    own: float  # utime + stime, seconds
    cmdline: str


def _stat(pid: str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name, None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def processes() -> list[Proc]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (fields := _stat(entry)) is None:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it exited meanwhile
            continue
        utime, stime = (int(v) / TICK for v in fields[11:13])
        found.append(Proc(int(entry), int(fields[1]), utime + stime, cmdline))
    return found


def _times(pid: str) -> float | None:
    """own + reaped CPU seconds of one process, None when it is gone."""
    fields = _stat(pid)
    return None if fields is None else sum(int(v) for v in fields[11:15]) / TICK


def node_totals(node_pids: dict[str, int]) -> dict[str, float]:
    """Each node's total now: own + reaped time of its nspawn and of every process in the
    node's PID namespace.

    Summing own + reaped over the live members of a group counts every process once,
    live or dead, whatever the tree looks like: a dead one's time is in its reaper's.
    Membership is by PID namespace, not by ancestry: a walk down from nspawn loses a
    whole subtree (a session's interpreter with every package install it reaped) when
    one process on the way cannot be read at that instant, and finds it again later.
    """
    namespaces: dict[str, str] = {}  # a node's PID namespace -> the node's name
    for name, pid in node_pids.items():
        mine = os.readlink(f"/proc/{pid}/ns/pid")
        try:  # nspawn's children: the node's init, in the node's own namespace
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(OSError):
                if (ns := os.readlink(f"/proc/{child}/ns/pid")) != mine:
                    namespaces[ns] = name
    # /proc is no snapshot: a process that exits while the scan goes on is counted twice
    # (read alive, then again in its reaper read after it) or not at all (its reaper read
    # before, itself gone by its turn). At a run's end that was a whole node's work, the
    # session interpreter's, counted twice. So a scan in which a counted process exited
    # is made again, a few times at most.
    for _ in range(SCANS):
        totals = {name: _times(str(pid)) or 0.0 for name, pid in node_pids.items()}
        counted, vanished = _scan(namespaces, totals)
        if not vanished and all(os.path.exists(f"/proc/{pid}") for pid in counted):
            break
    return totals


def _scan(namespaces: dict[str, str], totals: dict[str, float]) -> tuple[list[str], bool]:
    """Add every process in the nodes' namespaces to its node's total: the processes
    counted, and whether any process listed was gone before it could be read."""
    counted, vanished = [], False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name = namespaces.get(os.readlink(f"/proc/{entry}/ns/pid"))
        except OSError:  # gone since the listing
            vanished = True
            continue
        if name is None:
            continue
        if (spent := _times(entry)) is None:
            vanished = True
        else:
            totals[name] += spent
            counted.append(entry)
    return counted, vanished


def host_cpu() -> tuple[float, float]:
    """(busy, stolen) core-seconds of this host's CPUs since boot (/proc/stat). Busy counts
    every lab node's work too (they share this kernel); stolen is time the hypervisor gave
    to other machines while this one had work: lost, not work done."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def host_kernel() -> float:
    """Core-seconds this host's kernel has worked since boot (/proc/stat: system, irq,
    softirq), every lab node's system calls and page faults included."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(fields[i]) for i in (2, 5, 6)) / TICK


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


@dataclass(frozen=True)
class Phase:
    """One play of a run: its wall time and the work done in it."""

    name: str
    wall: float
    busy: float  # this host's busy core-seconds, steal excluded
    ansible_main: float
    nodes: dict[str, float]

    def floor(self, cores: int) -> float:
        """The least wall time this play's work needs: spread evenly over the cores, but
        never less than its busiest node's work or Ansible's main process, each of which
        works on one core at a time (a node runs one task at a time, apt and pip one
        process at a time)."""
        return max(self.busy / cores, max(self.nodes.values(), default=0.0), self.ansible_main)


@dataclass(frozen=True)
class _Mark:
    """What the counters read at one instant: a run's start, a play's start, its end."""

    name: str
    at: float
    busy: float
    stolen: float
    times: os.times_result
    main: float
    nodes: dict[str, float]


class Profiler:
    """Samples while a run goes on; `split()` and `phases()` once it is over.

    `mark(name)` starts a phase (the provisioning run's on_event calls it at
    each play's start): the work between two marks is that play's.
    """

    def __init__(self, node_pids: dict[str, int]) -> None:
        self.node_pids = node_pids
        self._main_own: dict[int, float] = {}
        self._marks: list[_Mark] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Profiler:
        self._marks.append(self._mark("(Kiln, before the first play)"))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._marks.append(self._mark(""))

    def mark(self, name: str) -> None:
        self._marks.append(self._mark(name))

    def _mark(self, name: str) -> _Mark:
        self._main_sample()
        busy, stolen = host_cpu()
        main = sum(self._main_own.values())
        nodes = node_totals(self.node_pids)
        return _Mark(name, time.perf_counter(), busy, stolen, os.times(), main, nodes)

    def _main_sample(self) -> None:
        me = os.getpid()
        for proc in processes():
            # The main process is ours; its forks (same command line) are its children.
            if proc.ppid == me and "ansible-playbook" in proc.cmdline:
                self._main_own[proc.pid] = proc.own

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._main_sample()

    def phases(self) -> list[Phase]:
        """One per mark, up to the next one (the last up to the end of the run)."""
        return [
            Phase(
                a.name,
                b.at - a.at,
                b.busy - a.busy,
                b.main - a.main,
                {n: b.nodes[n] - a.nodes.get(n, 0.0) for n in b.nodes},
            )
            for a, b in zip(self._marks, self._marks[1:], strict=False)
        ]

    def split(self) -> Split:
        first, last = self._marks[0], self._marks[-1]
        # ansible-runner starts ansible-playbook as our child and reaps it: its whole tree.
        t0, t1 = first.times, last.times
        ansible = (t1.children_user + t1.children_system) - (t0.children_user + t0.children_system)
        main = sum(self._main_own.values())
        return Split(
            busy=last.busy - first.busy,
            stolen=last.stolen - first.stolen,
            ansible_main=main,
            ansible_forks=max(0.0, ansible - main),
            kiln=(t1.user + t1.system) - (t0.user + t0.system),
            nodes={n: last.nodes[n] - first.nodes[n] for n in last.nodes},
        )
