"""Run every rank as a process on this machine, rendezvous over loopback.

Used by unit tests and for smoke runs. The ``hosts`` only give the ranks
their (logical) host names and slot counts; every process runs here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from validation.envvars import HOST_NAME_ENV
from validation.launch.base import (
    HostSpec,
    Launcher,
    LaunchResult,
    RankOutcome,
    RankSlot,
    assign_ranks,
    stop_reason,
    with_json_arg,
)
from validation.ports import free_port

# The directory holding the ``validation`` package, so ``python -m
# validation.x`` works from any working directory without installing it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class LocalLauncher(Launcher):
    """N local processes with env:// rendezvous on 127.0.0.1 and a wall-clock bound.

    At ``wall_timeout_s``, or ``after_failure_s`` after the first rank exits
    non-zero (the survivors have had time to write their own errors; whoever
    is still running is stuck), the launcher kills every rank still running
    (its whole process group: SIGTERM, then SIGKILL after ``kill_grace_s``)
    and reports them in :attr:`LaunchResult.unfinished_ranks`. Set
    ``after_failure_s`` above the module's ``--timeout`` plus about 30 s, or
    None to wait for the wall-clock limit.
    """

    def __init__(
        self,
        wall_timeout_s: float = 600.0,
        after_failure_s: float | None = None,
        workdir: str | Path | None = None,
        python: str = sys.executable,
        kill_grace_s: float = 2.0,
    ) -> None:
        self.wall_timeout_s = wall_timeout_s
        self.after_failure_s = after_failure_s
        self.workdir = Path(workdir) if workdir is not None else None
        self.python = python
        self.kill_grace_s = kill_grace_s

    def launch(
        self,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec],
        env: Mapping[str, str] | None = None,
    ) -> LaunchResult:
        """Start one process per slot, wait for all (bounded), collect outputs and rank 0's JSON."""
        slots = assign_ranks(hosts)
        workdir = self.workdir or Path(tempfile.mkdtemp(prefix="kiln-launch-"))
        workdir.mkdir(parents=True, exist_ok=True)
        args, json_path = with_json_arg(args, str(workdir / "result.json"))
        Path(json_path).unlink(missing_ok=True)  # a stale file must not pass for this run's
        base_env = self._base_env(slots)
        base_env.update(env or {})

        procs: list[subprocess.Popen[bytes]] = []
        outcomes: list[RankOutcome] = []
        start = time.monotonic()
        try:
            for slot in slots:
                rank_env = dict(base_env)
                rank_env.update(
                    RANK=str(slot.rank),
                    LOCAL_RANK=str(slot.local_rank),
                    LOCAL_WORLD_SIZE=str(slot.local_world_size),
                )
                rank_env[HOST_NAME_ENV] = slot.host.name
                rank_env.update(slot.host.env)
                out_path = workdir / f"rank{slot.rank}.stdout"
                err_path = workdir / f"rank{slot.rank}.stderr"
                argv, proc_env, stdin = self._rank_command(slot, module, args, rank_env)
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    procs.append(
                        subprocess.Popen(
                            argv,
                            stdout=out,
                            stderr=err,
                            stdin=stdin,
                            env=proc_env,
                            # Own process group, so a kill reaches any children too.
                            start_new_session=True,
                        )
                    )
                outcomes.append(
                    RankOutcome(
                        slot.rank, slot.host.name, None, stdout_path=out_path, stderr_path=err_path
                    )
                )
            self._wait(procs, outcomes, start + self.wall_timeout_s)
        finally:
            # Whatever happened (including KeyboardInterrupt), leave nothing running.
            self._kill([p for p in procs if p.poll() is None])
        for proc, outcome in zip(procs, outcomes, strict=True):
            if outcome.returncode is None:
                outcome.returncode = proc.poll()
        document, problem = self._read_result(slots[0], json_path)
        return LaunchResult(
            ranks=outcomes,
            result=document,
            wall_s=time.monotonic() - start,
            workdir=workdir,
            result_error=problem,
        )

    # -- what differs between launchers that start ranks as local processes ------

    def _base_env(self, slots: Sequence[RankSlot]) -> dict[str, str]:
        """Environment shared by every rank: rendezvous on loopback."""
        base_env = dict(os.environ)
        base_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, base_env.get("PYTHONPATH", "")) if p
        )
        base_env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
            WORLD_SIZE=str(len(slots)),
            # Gloo picks the interface of the host name by default, which on
            # many machines is not loopback; all ranks are here.
            GLOO_SOCKET_IFNAME="lo",
            NCCL_SOCKET_IFNAME="lo",
        )
        # Torchrun's agent-store switch would make rank 0 look for a store
        # that this launcher does not run.
        base_env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        return base_env

    def _rank_command(
        self, slot: RankSlot, module: str, args: Sequence[str], rank_env: dict[str, str]
    ) -> tuple[list[str], dict[str, str], int]:
        """(argv, environment, stdin) of the local process that runs one rank."""
        return [self.python, "-m", module, *args], rank_env, subprocess.DEVNULL

    def _read_result(self, rank0: RankSlot, json_path: str) -> tuple[dict | None, str | None]:
        """Rank 0's result document, or None and why there is none."""
        doc = _read_json(Path(json_path))
        return doc, None if doc is not None else f"no result document at {json_path}"

    def _wait(
        self,
        procs: list[subprocess.Popen[bytes]],
        outcomes: list[RankOutcome],
        deadline: float,
    ) -> None:
        first_failure: tuple[float, int] | None = None
        while True:
            for proc, outcome in zip(procs, outcomes, strict=True):
                if outcome.returncode is None:
                    outcome.returncode = proc.poll()
                    if outcome.returncode not in (None, 0) and first_failure is None:
                        first_failure = (time.monotonic(), outcome.rank)
            if all(o.returncode is not None for o in outcomes):
                return
            now = time.monotonic()
            reason = stop_reason(
                now,
                deadline,
                self.wall_timeout_s,
                first_failure[0] if first_failure else None,
                self.after_failure_s,
                f"rank {first_failure[1]}" if first_failure else "",
            )
            if reason is not None:
                late = [(p, o) for p, o in zip(procs, outcomes, strict=True) if p.poll() is None]
                for _, outcome in late:
                    outcome.killed = reason
                self._kill([p for p, _ in late])
                for proc, outcome in late:
                    outcome.returncode = proc.poll()
                return
            time.sleep(0.05)

    def _kill(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)  # the group this launcher created
            stop = time.monotonic() + self.kill_grace_s
            while time.monotonic() < stop and any(p.poll() is None for p in procs):
                time.sleep(0.05)
        for proc in procs:
            # An unkillable process (D state) stays unreaped: returncode None.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.kill_grace_s)


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
