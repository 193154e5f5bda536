"""Provisioning time on the lab: cold, warm and no-op, for 1 and 3 compute nodes.

Cold: `roles/site.yml` on freshly booted nodes (the root filesystem,
wheelhouse and runtime venv archive caches on this machine are warm, the
nodes start empty; a cold run says which hosts unpacked the venv and which
ran pip, which the first run on a machine does once). Warm: the
same run again, with nothing to change: every host is still checked. No-op:
`kiln lab up` through the CLI right after, which finds the last converge
still holding and skips it. Each is measured for a lab of one controller plus
1 compute node and plus 3 compute nodes. Printed, never asserted:

- warm / cold (target <= 0.3), 3 nodes / 1 node cold and warm (target <= 1.5),
  no-op `lab up` in seconds (target <= 15);
- the 10 tasks that took longest in total over all hosts, cold and warm, so a
  missed target shows where the time goes;
- the host's busy core-seconds during each run (lab nodes share its kernel, so
  that is every node's work and Ansible's together), whose they were (each
  node, Ansible's main process, its forks, Kiln itself, the kernel; time the
  hypervisor stole is shown apart, bench/cpu_profile.py), and the least wall
  time that work needs here: spread evenly over this host's cores, and never
  less than Ansible's main process alone (one core at a time). When the
  3-node run's work alone needs more than 1.5x the 1-node run's wall time,
  the 3-vs-1 target cannot be met on this machine without less work per node;
- per run, the bytes the nodes wrote to their disk (one disk for all of them
  here) and how long it was busy, and what touching memory this process never
  had cost the kernel right before the run: this VM hands memory the guest
  frees back to its hypervisor, and getting it back costs several times more,
  in the nodes' own kernel time, than memory still backed;
- the same play by play (each play's wall time, the least its work needs,
  the cores it kept busy, its busiest node): a play ends when its last host
  does, so a play whose work is one node's (the controller's own plays)
  needs that node's work in wall time, whatever the other core does. The sum
  over the plays is the tighter floor of the two;
- the same task by task, from the runner's events (bench/task_timeline.py):
  each task's slowest host, against Ansible's serial part (hosts started one
  after another, gaps between tasks), and each host's time per task. A host
  taking longer per task with 3 nodes than with 1, for the same CPU per task,
  is the shared cores; Ansible's serial part growing is what one more host
  costs on any machine. From the two, what 3 vs 1 would be with hosts that
  have their own CPUs, as a real pool's do (an estimate, not the target).

Run as root (it brings up its own labs, ids kpb1 and kpb3, and removes them):

    .venv/bin/python bench/provision.py [--pip]

`--pip`: every node installs the runtime with pip (the lab's venv archives off),
as every node did before the archives, to compare.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cpu_profile import Phase, Profiler, Split, host_kernel  # noqa: E402
from bench.targets import Scaling, Target, scaling_reason  # noqa: E402
from bench.task_timeline import Timeline, read  # noqa: E402
from kiln.converge_record import provision_and_record  # noqa: E402
from kiln.lab import node  # noqa: E402
from kiln.lab.layout import NodePaths  # noqa: E402
from kiln.lab.lifecycle import Lab, teardown  # noqa: E402
from kiln.paths import state_root  # noqa: E402
from kiln.provision import ProvisionResult, provision_dir  # noqa: E402
from kiln.stack import load_stack  # noqa: E402

STACK = "bench"
TOP = 10
UNPACK = "validation_runtime : Unpack the runtime venv from the site's archive"
PIP = "validation_runtime : Install the pinned requirements into the runtime venv"
CORES = os.cpu_count() or 1


def stack_dir(computes: int) -> Path:
    """A stack file of its own: the no-op run goes through the real CLI."""
    hosts = [{"name": "pctl", "roles": ["controller", "storage"]}]
    hosts += [{"name": f"pc{i}"} for i in range(1, computes + 1)]
    cluster = {
        "name": f"kiln-bench-prov{computes}",
        "lab": {"id": f"kpb{computes}", "subnet": f"10.77.{86 - computes}.0/24"},
        "nodePools": [{"name": "lab", "provider": "lab", "hosts": hosts}],
        "storage": {"kind": "glusterfs"},
    }
    directory = Path(tempfile.mkdtemp(prefix="kiln-bench-provision-"))
    (directory / f"Pulumi.{STACK}.yaml").write_text(
        yaml.safe_dump({"config": {"kiln:cluster": cluster}})
    )
    return directory


def disk_counters() -> tuple[int, float]:
    """(bytes written, seconds busy) so far on the block device that holds the lab nodes'
    files: every node writes to the same one here, where a real pool's nodes have a disk
    each."""
    device = os.stat(state_root()).st_dev
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if (int(fields[0]), int(fields[1])) == (os.major(device), os.minor(device)):
            return int(fields[9]) * 512, int(fields[12]) / 1000
    return 0, 0.0


PROBE_BYTES = 256 * 2**20


def fresh_memory_cost() -> float:
    """Kernel CPU seconds per GB to touch memory this process never had, measured now.

    This machine is a VM that hands memory the guest frees back to its hypervisor
    (free page reporting): touching it again costs the kernel several times what
    memory the hypervisor still backs does. A run's page cache (every package and
    venv a node writes) comes out of that memory, so this, printed before each run,
    says how much a run's wall time is this machine's and not Kiln's.
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    with mmap.mmap(-1, PROBE_BYTES) as memory:
        for offset in range(0, PROBE_BYTES, mmap.PAGESIZE):
            memory[offset] = 1
    return (resource.getrusage(resource.RUSAGE_SELF).ru_stime - before) * 2**30 / PROBE_BYTES


@dataclass
class Run:
    wall: float
    result: ProvisionResult
    split: Split
    phases: list[Phase]
    timeline: Timeline
    written: int  # bytes written to the nodes' disk during the run
    disk_busy: float  # seconds that disk had a request in flight
    memory_cost: float  # fresh_memory_cost() right before the run
    kernel: float  # core-seconds of the host's kernel during the run (host_kernel())

    @property
    def cpu(self) -> float:
        """Busy core-seconds during the run, all nodes and Ansible together (steal excluded)."""
        return self.split.busy

    @property
    def floor(self) -> float:
        """The least wall time this run's work could take on this host's cores: its CPU
        work spread evenly over them, but never less than Ansible's main process alone,
        which runs on one core at a time."""
        return max(self.cpu / CORES, self.split.ansible_main)

    @property
    def play_floor(self) -> float:
        """The same, play by play: a play's hosts wait for each other at its end, so a
        play whose work is one node's (the controller's own plays) cannot use the other
        cores, however the rest of the run packs."""
        return sum(phase.floor(CORES) for phase in self.phases)


def timed(lab: Lab, extra_vars: dict[str, object]) -> Run:
    pids = {h.name: node.nspawn_pid(NodePaths(lab.layout.node_dir(h.name))) for h in lab.hosts}
    nspawns = {name: pid for name, pid in pids.items() if pid is not None}
    if len(nspawns) < len(pids):
        raise SystemExit(f"lab node(s) not running: {sorted(set(pids) - set(nspawns))}")
    memory_cost = fresh_memory_cost()
    written, busy = disk_counters()
    kernel = host_kernel()
    start = time.perf_counter()
    with Profiler(nspawns) as profiler:

        def on_event(message: str) -> None:
            if message.startswith("play: "):
                profiler.mark(message.removeprefix("play: "))

        result = provision_and_record(lab.cluster, on_event=on_event, extra_vars=extra_vars)
    elapsed = time.perf_counter() - start
    written_after, busy_after = disk_counters()
    kernel = host_kernel() - kernel
    if not result.succeeded:
        raise SystemExit(f"provisioning failed: {result.errors} (artifacts: {result.artifacts})")
    if result.artifacts is None:
        raise SystemExit("provisioning left no artifacts: its task timeline cannot be read")
    return Run(
        elapsed,
        result,
        profiler.split(),
        profiler.phases(),
        read(result.artifacts),
        written_after - written,
        busy_after - busy,
        memory_cost,
        kernel,
    )


def noop_lab_up(stacks: Path) -> tuple[float | None, str]:
    """Seconds of a second `kiln lab up` and how to show them; no seconds where it did not
    skip the converge (the text then says why)."""
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "kiln", "lab", "up", "--stack", STACK, "--stacks-dir", str(stacks)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if run.returncode != 0 or "provisioning skipped" not in run.stdout:
        said = [line for line in run.stdout.splitlines() if line.startswith("provisioning")]
        return None, f"did not skip ({'; '.join(said) or run.stderr.strip()[-300:]})"
    return elapsed, f"{elapsed:5.1f} s"


def by_play(label: str, run: Run) -> None:
    print(
        f"  by play {label} (wall s, the least its work needs, cores busy on average, "
        f"busiest node's core-s):"
    )
    for phase in run.phases:
        busiest = max(phase.nodes.items(), key=lambda item: item[1], default=("-", 0.0))
        cores = phase.busy / max(phase.wall, 1e-9)
        print(
            f"    {phase.wall:6.1f} {phase.floor(CORES):6.1f}  {cores:4.2f}"
            f"  {busiest[0]} {busiest[1]:5.1f}  {phase.name}"
        )
    print(f"    {run.wall:6.1f} {run.play_floor:6.1f}  (the whole run)")


def host_cpu(run: Run) -> float:
    """The hosts' side of each host result, in core-seconds: the node's module and the
    Ansible worker (with Mitogen's round trip) that ran it."""
    return (sum(run.split.nodes.values()) + run.split.ansible_forks) / max(run.timeline.results, 1)


def timeline(label: str, run: Run) -> None:
    line, hosts = run.timeline, len(run.split.nodes)
    print(
        f"  task by task {label}: each task's slowest host {line.slowest:.1f} s, Ansible's "
        f"serial part {line.serial:.1f} s (the other hosts starting or ending later "
        f"{line.within:.1f}, between tasks {line.between:.1f}); {line.results} host results "
        f"({line.skipped} skipped), {line.per_result * 1000:.0f} ms each, for "
        f"{host_cpu(run) * 1000:.0f} ms of the hosts' CPU each (node and Ansible worker): "
        f"{hosts} hosts at once on {CORES} cores need {hosts * host_cpu(run) / CORES * 1000:.0f} ms"
    )


def scaling(one: Run, three: Run) -> Scaling:
    a, b = one.timeline, three.timeline
    return Scaling(
        wall_one=one.wall,
        wall_three=three.wall,
        need_three=three.play_floor,
        busy_three=three.cpu / (three.wall * CORES),
        slowest_extra=b.slowest - a.slowest,
        serial_extra=b.serial - a.serial,
        task_time=b.per_result / max(a.per_result, 1e-9),
        task_cpu=host_cpu(three) / max(host_cpu(one), 1e-9),
        nodes_extra=sum(three.split.nodes.values()) - sum(one.split.nodes.values()),
        kernel_extra=three.kernel - one.kernel,
        cores=CORES,
    )


def verdict(rows: dict[int, tuple[Run, Run]], noops: dict[int, float | None]) -> None:
    """Each target met or not, and for a missed 3 vs 1 the measured reason."""
    print("Targets:")
    ratio = Target(
        "warm / cold (1 and 3 nodes)", 0.3, tuple(w.wall / c.wall for c, w in rows.values())
    )
    print(ratio.line("the warm runs' work is in the tables above"))
    noop = Target("no-op lab up (1 and 3 nodes)", 15, tuple(noops.values()), " s")
    print(noop.line("a no-op run that did not skip says why above"))
    for label, i in (("cold", 0), ("warm", 1)):
        pair = scaling(rows[1][i], rows[3][i])
        target = Target(f"3 nodes / 1 node, {label}", 1.5, (pair.ratio,))
        print(target.line(scaling_reason(pair, target.limit)))


def own_cpus(label: str, one: Run, three: Run) -> None:
    """What the 3-node run would take if its hosts had their own CPUs, as a real pool's do:
    each task's slowest host as long as in the 1-node run (the same work per host), plus
    Ansible's serial part as measured with 3 nodes."""
    pair = scaling(one, three)
    a, b = one.timeline, three.timeline
    print(
        f"{label} 3 vs 1, task by task: a host took {pair.task_time:.2f}x as long per task "
        f"({a.per_result * 1000:.0f} -> {b.per_result * 1000:.0f} ms) for {pair.task_cpu:.2f}x "
        f"the CPU, on cores shared by {len(three.split.nodes)} hosts instead of "
        f"{len(one.split.nodes)}; Ansible's serial part grew {pair.serial_extra:.1f} s. With "
        f"each task's slowest host as fast as in the 1-node run (hosts with their own CPUs), "
        f"3 vs 1 would be about {pair.own_cpus:.2f} (an estimate, not the target). The "
        f"hypervisor stole {one.split.stolen:.1f} and {three.split.stolen:.1f} core-s from these "
        f"runs: where that is more than a few, their ratios say more about it than about Kiln"
    )


def runtime_source(result: ProvisionResult) -> str:
    """Which hosts unpacked the runtime venv from the lab's archive, which ran pip."""
    unpacked = sorted(h for h, tasks in result.changes.items() if UNPACK in tasks)
    pip = sorted(h for h, tasks in result.changes.items() if PIP in tasks)
    return f"runtime venv unpacked on {len(unpacked)} host(s), pip on {len(pip)} {pip or ''}"


def top_tasks(label: str, result: ProvisionResult) -> None:
    print(f"  top {TOP} tasks {label} (seconds, summed over hosts):")
    ranked = sorted(result.task_seconds.items(), key=lambda item: item[1], reverse=True)
    for task, seconds in ranked[:TOP]:
        print(f"    {seconds:7.1f}  {task}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip", action="store_true", help="every node runs pip (no archives)")
    extra_vars = {"validation_runtime_venv_archives": ""} if parser.parse_args().pip else {}
    rows: dict[int, tuple[Run, Run]] = {}
    noops: dict[int, float | None] = {}
    for computes in (1, 3):
        stacks = stack_dir(computes)
        lab = Lab(load_stack(STACK, stacks))
        teardown(lab.layout)
        try:
            lab.up()
            cold = timed(lab, extra_vars)
            warm = timed(lab, extra_vars)
            noop, noop_shown = noop_lab_up(stacks)
        finally:
            teardown(lab.layout)
            shutil.rmtree(stacks, ignore_errors=True)
            shutil.rmtree(provision_dir(lab.cluster), ignore_errors=True)
        rows[computes] = (cold, warm)
        noops[computes] = noop
        print(
            f"{computes} compute node(s) + controller: cold {cold.wall:6.1f} s "
            f"({cold.result.changed} changes), warm {warm.wall:6.1f} s ({warm.result.changed} "
            f"changes), warm/cold {warm.wall / cold.wall:.2f} (target <= 0.3), no-op lab up "
            f"{noop_shown} (target <= 15 s); cold: {runtime_source(cold.result)}"
        )
        for label, run in (("cold", cold), ("warm", warm)):
            split = run.split
            each = ", ".join(f"{n} {s:.1f}" for n, s in sorted(split.nodes.items()))
            print(
                f"  {label}: {run.cpu:6.1f} core-seconds busy on this host's {CORES} cores "
                f"({run.cpu / (run.wall * CORES):.0%} of them), so at least {run.floor:5.1f} s: "
                f"the nodes {sum(split.nodes.values()):.1f} ({each}), Ansible's main process "
                f"{split.ansible_main:.1f}, its forks {split.ansible_forks:.1f}, Kiln "
                f"{split.kiln:.1f}, the kernel and the rest {split.rest:.1f}; the hypervisor "
                f"took {split.stolen:.1f} more (steal); the nodes' disk: "
                f"{run.written / 1e9:.1f} GB written, busy {run.disk_busy:.1f} s "
                f"({run.disk_busy / run.wall:.0%} of the run); {run.kernel:.1f} of the busy "
                f"core-seconds were the kernel's (every node's system calls and page faults); "
                f"touching fresh memory cost {run.memory_cost:.1f} s of kernel CPU per GB just "
                f"before the run"
            )
        by_play("cold", cold)
        by_play("warm", warm)
        timeline("cold", cold)
        timeline("warm", warm)
        top_tasks("cold", cold.result)
        top_tasks("warm", warm.result)
    for label, i in (("cold", 0), ("warm", 1)):
        one, three = rows[1][i], rows[3][i]
        nodes1, nodes3 = (sum(r.split.nodes.values()) for r in (one, three))
        print(
            f"{label} 3 nodes / 1 node: {three.wall / one.wall:.2f} (target <= 1.5); "
            f"CPU work 3 / 1: {three.cpu / one.cpu:.2f} (the nodes' own {nodes3 / nodes1:.2f}, "
            f"{nodes3 - nodes1:.1f} core-seconds more), and the 3-node run's work alone needs "
            f"{three.floor / one.wall:.2f}x the 1-node run's wall time on {CORES} cores; "
            f"Ansible's main process alone (one core, on any machine) did "
            f"{three.split.ansible_main / max(one.split.ansible_main, 1e-9):.2f}x the work "
            f"and needs {three.split.ansible_main / one.wall:.2f}x; play by play, the "
            f"3-node run's work needs {three.play_floor / one.wall:.2f}x"
        )
        own_cpus(label, one, three)
    verdict(rows, noops)


if __name__ == "__main__":
    main()
