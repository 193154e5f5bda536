"""Run a validation benchmark on a group of the stack's hosts, through the stack's launcher.

Slurm stacks run groups of compute nodes as one `srun` step from the
controller; a group that includes a host Slurm does not schedule (a referee
such as the controller) and every non-Slurm stack use the SSH launcher. Both
start the same module with the same arguments and read the same result
document, so a busbw measured one way means the same as one measured the other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kiln import role_defaults
from kiln.config import AllreduceSettings, Cluster
from kiln.inventory import Access
from kiln.ssh import ssh_config

if TYPE_CHECKING:
    from validation.launch.base import RankOutcome

# validation.allreduce's exit status for "ran, but the sums were wrong": the
# result document is still valid evidence and the rules judge it.
_EXIT_WRONG_RESULTS = 1


class CouldNotRun(Exception):
    """The certification run cannot go on (exit 2): a host unreachable, a launcher error,
    a benchmark that produced no result document."""


@dataclass
class GroupOutcome:
    """One benchmark run over a group of hosts."""

    hosts: tuple[str, ...]
    doc: dict[str, Any] | None
    """Rank 0's result document, None when the run produced none."""
    error: str | None = None
    """One line naming the host(s) that failed, when the run did not complete."""
    failed_hosts: list[str] = field(default_factory=list)
    launcher: str = "ssh"
    wall_s: float = 0.0
    log: str = ""
    """Every rank's exit and last error line (for the evidence file)."""


def allreduce_args(settings: AllreduceSettings, dtypes: Sequence[str], timeout: int) -> list[str]:
    """The `validation.allreduce` command line for a certification sweep."""
    return [
        "-b", settings.min_bytes,
        "-e", settings.max_bytes,
        "-f", str(settings.factor),
        "--dtype", ",".join(dtypes),
        "-w", str(settings.warmup_iters),
        "-n", str(settings.iters),
        "--repeat", str(settings.repeat),
        "--timeout", str(timeout),
    ]  # fmt: skip


class GroupRunner:
    """Launches benchmarks on host groups; a context manager owning a private ssh_config."""

    def __init__(self, cluster: Cluster, access: Access) -> None:
        self.cluster = cluster
        self.access = access
        self._dir = Path(tempfile.mkdtemp(prefix="kiln-certify-"))
        self._config = self._dir / "ssh_config"
        self._config.write_text(ssh_config(list(access.targets.values())))
        self._slots = {
            h.name: (p.gpu.per_node if p.gpu else 1) for p in cluster.node_pools for h in p.hosts
        }
        # Lab machines share this host's cores: ranks that each took every core
        # would time contention (one resnet-tiny ladder read E(2) 0.05 to 0.24 from
        # run to run with 2 threads per rank on 2 cores, 0.66 with 1). Every rung
        # gets the same share, so the ladder compares like with like.
        lab_computes = [h.name for p in cluster.lab_pools for h in p.hosts if "compute" in h.roles]
        self._lab_env = (
            {
                h.name: {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(lab_computes)))}
                for p in cluster.lab_pools
                for h in p.hosts
            }
            if lab_computes
            else {}
        )
        controllers = [h.name for h in cluster.hosts if "controller" in h.roles]
        self._login = controllers[0] if controllers else None
        # Hosts that run slurmd: everything in the slurm group but the controller.
        self._slurm_nodes = (
            {h.name for h in cluster.hosts if "controller" not in h.roles}
            if cluster.scheduler == "slurm"
            else set()
        )

    def __enter__(self) -> GroupRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def launcher_for(self, hosts: Sequence[str]) -> str:
        if self._login and set(hosts) <= self._slurm_nodes:
            return "slurm"
        return "ssh"

    def run(self, module: str, args: Sequence[str], hosts: Sequence[str]) -> GroupOutcome:
        """Run `module` on `hosts` (rank order as given) and collect the outcome."""
        from validation.launch import HostSpec, SlurmLauncher, SshLauncher

        timeout = self.cluster.certification.timeout_seconds
        runtime = role_defaults.validation_runtime()
        specs = [
            HostSpec(
                name,
                self.access.targets[name].address,
                slots=self._slots[name],
                env=self._lab_env.get(name, {}),
            )
            for name in hosts
        ]
        kind = self.launcher_for(hosts)
        # The ranks' outputs go under this runner's directory, removed with it: the
        # launchers' own default is a new directory in /tmp per run, left there.
        workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self._dir))
        if kind == "slurm":
            launcher = SlurmLauncher(
                self._login or "",
                ssh_config=self._config,
                wall_timeout_s=4 * timeout,
                after_failure_s=timeout + 30,
                workdir=workdir,
                **runtime,
            )
        else:
            launcher = SshLauncher(
                ssh_config=self._config,
                wall_timeout_s=4 * timeout,
                after_failure_s=timeout + 30,
                workdir=workdir,
                **runtime,
            )
        try:
            result = launcher.launch(module, args, specs)
        except (OSError, ValueError) as exc:
            return GroupOutcome(tuple(hosts), None, f"{kind} launcher: {exc}", list(hosts), kind)
        doc = result.result if isinstance(result.result, dict) else None
        measured = doc is not None and all(
            r.returncode in (0, _EXIT_WRONG_RESULTS) for r in result.ranks
        )
        outcome = GroupOutcome(
            tuple(hosts), doc if measured else None, launcher=kind, wall_s=result.wall_s
        )
        outcome.log = result.summary()
        if not measured:
            bad = [r for r in result.ranks if r.returncode not in (0, _EXIT_WRONG_RESULTS)]
            failed = sorted({r.host for r in bad}) or list(hosts)
            detail = next((line for r in bad if (line := _rank_error(r))), "")
            killed = next((r.killed for r in bad if r.killed), None)
            if not detail:
                detail = f"killed: {killed}" if killed else (result.result_error or "no result")
            # A node that died or was cut off mid-run is what to name, not the survivors
            # that reported it: whoever no longer answers SSH goes first.
            gone = self.unreachable(failed)
            outcome.failed_hosts = [*gone, *(h for h in failed if h not in gone)]
            down = "".join(f"{name} is unreachable ({why}); " for name, why in gone.items())
            outcome.error = (
                f"{down}{module} on {'+'.join(hosts)} via {kind} failed on "
                f"{', '.join(outcome.failed_hosts)}: {detail}"
            )
        return outcome

    def unreachable(self, hosts: Sequence[str]) -> dict[str, str]:
        """Of `hosts`, those that do not let us log in now (in parallel, 10 s each): the SSH
        error by host."""
        from concurrent.futures import ThreadPoolExecutor

        from kiln import ssh
        from kiln.errors import KilnError

        def probe(name: str) -> str | None:
            try:
                with ssh.connect(self.access.targets[name], timeout=10):
                    return None
            except KilnError as exc:
                # "node (address): SSH failed: ..." -> "SSH failed: ..."
                return re.sub(rf"^{re.escape(name)}( \([^)]*\))?:\s*", "", str(exc)) or "no answer"

        names = [h for h in hosts if h in self.access.targets]
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(32, len(names))) as pool:
            found = dict(zip(names, pool.map(probe, names), strict=True))
        return {name: why for name, why in found.items() if why}


def _rank_error(rank: RankOutcome) -> str:
    """A failed rank's own error line: the module's `error:` line where it wrote one (the
    launcher's tools, srun and ssh, may have written after it), else its last line."""
    lines = [line.strip() for line in rank.stderr_text().splitlines() if line.strip()]
    own = [line for line in lines if ": error:" in line and not line.startswith("srun:")]
    return (own or lines or [""])[-1]


def write_evidence(directory: Path, name: str, outcome: GroupOutcome) -> str:
    """Keep a run's result document and launch log; returns the path relative to the report."""
    from kiln.certification.report import write_atomic

    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "hosts": list(outcome.hosts),
        "launcher": outcome.launcher,
        "wall_s": round(outcome.wall_s, 3),
        "error": outcome.error,
        "log": outcome.log,
        "result": outcome.doc,
    }
    write_atomic(directory / f"{name}.json", json.dumps(doc, indent=2) + "\n")
    return f"{directory.name}/{name}.json"
