"""The launcher interface shared by local, SSH, Slurm and Kubernetes launchers.

Contract with the launched module (``validation.allreduce`` and friends):

* it is started once per rank as ``python -m MODULE ARGS...`` (or under
  torchrun) with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
  MASTER_PORT and ``KILN_HOST_NAME`` (the host's inventory name, used in error
  messages) in its environment;
* it accepts ``--json PATH`` and rank 0 writes its result document there;
* on a failure it exits non-zero with a one-line error on stderr.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ports the rendezvous store may use on rank 0's host (MASTER_PORT). Launchers
# that start ranks themselves pick one at random per launch, so back-to-back
# launches never race a socket in TIME_WAIT.
RENDEZVOUS_PORTS = range(29500, 30000)


def rendezvous_port() -> int:
    """A port for one launch's rendezvous store."""
    return random.choice(RENDEZVOUS_PORTS)


@dataclass(frozen=True)
class HostSpec:
    """One machine to run ranks on."""

    name: str
    """Inventory name; ranks report it as their host in results and errors."""
    address: str = ""
    """Where to reach the host (IP or DNS name); empty means the same as ``name``."""
    ssh_user: str | None = None
    """Login for SSH-based launchers; None means the launcher's default."""
    slots: int = 1
    """Ranks to start on this host, usually its GPU count."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the ranks on this host (e.g. NCCL_SOCKET_IFNAME)."""

    @property
    def reach(self) -> str:
        """The address to connect to."""
        return self.address or self.name


@dataclass(frozen=True)
class RankSlot:
    """Where one rank runs: global rank, rank within its host, and the host."""

    rank: int
    local_rank: int
    local_world_size: int
    host: HostSpec


def assign_ranks(hosts: Sequence[HostSpec]) -> list[RankSlot]:
    """Number ranks host by host, in the given order (torchrun's node-major order)."""
    if not hosts:
        raise ValueError("no hosts to launch on")
    names = [h.name for h in hosts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"host names must be unique; repeated: {', '.join(duplicates)}")
    slots = []
    for host in hosts:
        if host.slots < 1:
            raise ValueError(f"host {host.name}: slots must be at least 1, got {host.slots}")
        for local in range(host.slots):
            slots.append(RankSlot(len(slots), local, host.slots, host))
    return slots


def with_json_arg(args: Sequence[str], default_path: str) -> tuple[list[str], str]:
    """``args`` with ``--json`` set (added as ``default_path`` if absent), and the path used."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--json" and i + 1 < len(out):
            return out, out[i + 1]
        if arg.startswith("--json="):
            return out, arg.split("=", 1)[1]
    return [*out, "--json", default_path], default_path


@dataclass
class RankOutcome:
    """How one rank ended."""

    rank: int
    host: str
    returncode: int | None
    """Exit status; negative for a signal; None if it was never reaped."""
    killed: str | None = None
    """Why the launcher killed it (e.g. "wall-clock limit of 600 s"), None if it
    ended on its own."""
    stdout_path: Path | None = None
    stderr_path: Path | None = None

    @property
    def finished(self) -> bool:
        """Ended on its own, successfully or not."""
        return self.killed is None and self.returncode is not None

    def stdout_text(self) -> str:
        """Captured standard output ("" when not captured)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr_text(self) -> str:
        """Captured standard error ("" when not captured)."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def last_error_line(self) -> str:
        """Last non-empty stderr line: where validation modules put their one-line error."""
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass
class LaunchResult:
    """Outcome of one launch: every rank's exit and rank 0's JSON result."""

    ranks: list[RankOutcome]
    result: dict[str, Any] | None
    """Rank 0's result document, None if it wrote none or it was unreadable."""
    wall_s: float
    workdir: Path | None = None
    """Where outputs were kept, for a person to look at after a failure."""
    result_error: str | None = None
    """Why there is no result document, when there is none: what reading it said (the
    fetch command's stderr, an unreadable file), so an error never says just "no result"."""

    @property
    def ok(self) -> bool:
        """Every rank exited 0."""
        return all(r.returncode == 0 for r in self.ranks)

    @property
    def failed_ranks(self) -> list[int]:
        """Ranks that ended on their own with a non-zero status."""
        return [r.rank for r in self.ranks if r.finished and r.returncode != 0]

    @property
    def unfinished_ranks(self) -> list[int]:
        """Ranks that did not end on their own: the launcher killed them."""
        return [r.rank for r in self.ranks if not r.finished]

    def summary(self) -> str:
        """A few lines a person can read: one per rank, with the error line if any."""
        lines = [f"launch {'ok' if self.ok else 'FAILED'} in {self.wall_s:.1f} s"]
        for r in self.ranks:
            state = f"killed ({r.killed})" if r.killed else f"exit {r.returncode}"
            tail = "" if r.returncode == 0 else f": {r.last_error_line()}"
            lines.append(f"  rank {r.rank} (host {r.host}): {state}{tail}")
        return "\n".join(lines)


def stop_reason(
    now: float,
    deadline: float,
    wall_timeout_s: float,
    failed_at: float | None,
    after_failure_s: float | None,
    failed: str,
) -> str | None:
    """Why a launch still running at `now` must be stopped, or None to keep waiting: the
    wall-clock limit, or `after_failure_s` gone by since `failed` (a rank, a task) failed
    at `failed_at`, so one dead rank never leaves the others hanging to the wall limit."""
    if now >= deadline:
        return f"wall-clock limit of {wall_timeout_s:g} s"
    if failed_at is not None and after_failure_s is not None and now >= failed_at + after_failure_s:
        return f"still running {after_failure_s:g} s after {failed} failed"
    return None


class Launcher(ABC):
    """Starts ``python -m MODULE ARGS`` as one rank per slot across ``hosts``."""

    @abstractmethod
    def launch(
        self,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec],
        env: Mapping[str, str] | None = None,
    ) -> LaunchResult:
        """Run to completion (or the launcher's wall-clock limit) and report every rank.

        ``env`` applies to all ranks; ``HostSpec.env`` adds per-host values and
        wins on conflicts.
        """
