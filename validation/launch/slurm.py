"""Run ranks as one Slurm job step: `srun` on a login host, reached over OpenSSH.

The step asks for exactly the given hosts with ``slots`` tasks each
(``--nodelist``, ``--ntasks-per-node``, block distribution, so ranks are
numbered node by node; hosts with different slot counts get the same layout
through ``SLURM_HOSTFILE`` and the arbitrary distribution); every task runs ``validation.launch.rank
--from-slurm``, which maps srun's task variables onto torch.distributed's.
Output comes back labelled by task (``--label``) and is split per rank; rank 0
prints its result document on its output, so nothing is fetched afterwards.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from validation.launch.base import (
    HostSpec,
    Launcher,
    LaunchResult,
    RankOutcome,
    assign_ranks,
    rendezvous_port,
    stop_reason,
    with_json_arg,
)
from validation.launch.rank import RESULT_MARKER, parse_result_lines

# "srun: error: sc2: task 2: Exited with exit code 3" / "... task 1: Killed"
_TASK_ERROR = re.compile(r"srun: error: (\S+): tasks? ([\d,\-]+): (.*)")
_LABEL = re.compile(r"^\s*(\d+): ?(.*)$")


class SlurmLauncher(Launcher):
    """``srun`` on ``login_host`` (an ssh destination), bounded by ``wall_timeout_s``.

    ``python`` and ``remote_dir``: where the validation runtime lives on the nodes
    (`kiln.role_defaults.validation_runtime()`).

    ``after_failure_s``: how long the step may go on once srun reports a task that
    failed. srun waits for every task's exit, and a task on a node that died (or
    was cut off) never reports one until Slurm declares the node down (SlurmdTimeout,
    minutes); the survivors say who stopped answering within the module's
    ``--timeout``. Past this bound the launcher stops waiting, cancels the job
    (``scancel`` by the step's unique job name, so nothing keeps the nodes) and
    reports the tasks still running as killed. Set it above the module's
    ``--timeout`` plus about 30 s, as for the SSH launcher; None waits for
    ``wall_timeout_s``.
    """

    def __init__(
        self,
        login_host: str,
        ssh_config: str | Path | None = None,
        *,
        python: str,
        remote_dir: str,
        partition: str | None = None,
        wall_timeout_s: float = 600.0,
        after_failure_s: float | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        self.login_host = login_host
        self.ssh_config = str(ssh_config) if ssh_config else None
        self.remote_python = python
        self.remote_dir = remote_dir
        self.partition = partition
        self.wall_timeout_s = wall_timeout_s
        self.after_failure_s = after_failure_s
        self.workdir = Path(workdir) if workdir is not None else None

    def srun_command(
        self,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec],
        env: Mapping[str, str],
        json_path: str,
        job_name: str | None = None,
    ) -> str:
        """The shell command run on the login host."""
        slots = {h.slots for h in hosts}
        minutes = max(1, math.ceil(self.wall_timeout_s / 60))
        exports = ",".join(["ALL", *(f"{k}={v}" for k, v in sorted(env.items()))])
        if len(slots) == 1:
            layout = [
                f"--nodes={len(hosts)}",
                f"--ntasks-per-node={slots.pop()}",
                f"--nodelist={','.join(h.name for h in hosts)}",
                "--distribution=block",
            ]
        else:
            # Pools with different GPU counts: srun places task i on line i of
            # SLURM_HOSTFILE, which lists each host once per slot, node by node (the
            # rank order assign_ranks gives).
            layout = [f"--ntasks={sum(h.slots for h in hosts)}", "--distribution=arbitrary"]
        srun = [
            "srun",
            *layout,
            "--label",
            "--kill-on-bad-exit=0",
            f"--time={minutes}",
            f"--export={exports}",
            f"--chdir={self.remote_dir}",
            *([f"--job-name={job_name}"] if job_name else []),
            *([f"--partition={self.partition}"] if self.partition else []),
            self.remote_python,
            "-m",
            "validation.launch.rank",
            "--from-slurm",
            "--emit-result",
            json_path,
            "--",
            module,
            *args,
        ]
        # `timeout` on the login host: srun must not outlive a launcher that gave up.
        limit = int(self.wall_timeout_s)
        step = f"timeout --signal=TERM --kill-after=10 {limit} {shlex.join(srun)}"
        if "--distribution=arbitrary" not in srun:
            return step
        lines = shlex.join([h.name for h in hosts for _ in range(h.slots)])
        return (
            'hostfile=$(mktemp /tmp/kiln-hosts-XXXXXX) && printf "%s\\n" '
            f'{lines} > "$hostfile" && SLURM_HOSTFILE="$hostfile" {step}; '
            'status=$?; rm -f "$hostfile"; exit $status'
        )

    def launch(
        self,
        module: str,
        args: Sequence[str],
        hosts: Sequence[HostSpec],
        env: Mapping[str, str] | None = None,
    ) -> LaunchResult:
        slots = assign_ranks(hosts)
        workdir = self.workdir or Path(tempfile.mkdtemp(prefix="kiln-slurm-"))
        workdir.mkdir(parents=True, exist_ok=True)
        args, json_path = with_json_arg(
            args, f"/tmp/kiln-launch-{random.getrandbits(48):012x}.json"
        )
        # Per-host env is the same for every host of a step (srun exports one set).
        step_env = {"MASTER_PORT": str(rendezvous_port()), **(env or {})}
        for host in hosts:
            step_env.update(host.env)
        job_name = f"kiln-{random.getrandbits(48):012x}"
        command = self.srun_command(module, args, hosts, step_env, json_path, job_name)
        start = time.monotonic()
        stdout, stderr, code, killed = self._run_step(command, workdir, start)
        if killed is not None:
            self._cancel(job_name)
        per_rank_out = _split_labelled(stdout, len(slots))
        per_rank_err = _split_labelled(stderr, len(slots))
        codes = _task_exit_codes(stderr, len(slots), code, killed is not None)
        unfinished = [i for i, c in enumerate(codes) if c is None]
        result = None
        outcomes = []
        for slot in slots:
            out_path = workdir / f"rank{slot.rank}.stdout"
            err_path = workdir / f"rank{slot.rank}.stderr"
            lines = per_rank_out[slot.rank]
            if slot.rank == 0:
                result = parse_result_lines(lines)
            out_path.write_text(
                "".join(f"{line}\n" for line in lines if not line.startswith(RESULT_MARKER))
            )
            err_path.write_text("".join(f"{line}\n" for line in per_rank_err[slot.rank]))
            outcomes.append(
                RankOutcome(
                    slot.rank,
                    slot.host.name,
                    codes[slot.rank],
                    killed if slot.rank in unfinished else None,
                    out_path,
                    err_path,
                )
            )
        (workdir / "srun.stderr").write_text(stderr)
        problem = None
        if result is None:
            said = _tail(stderr) or _tail(stdout) or "no output"
            problem = f"rank 0 printed no result document (srun exit {code}; it said: {said})"
        return LaunchResult(
            outcomes, result, time.monotonic() - start, workdir, result_error=problem
        )

    def _login_argv(self, command: str) -> list[str]:
        """`command` on the login host, over OpenSSH."""
        return [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            *(["-F", self.ssh_config] if self.ssh_config else []),
            self.login_host,
            command,
        ]

    def _run_step(
        self, command: str, workdir: Path, start: float
    ) -> tuple[str, str, int | None, str | None]:
        """(stdout, stderr, exit status, why it was killed) of the srun step, bounded by the
        wall-clock limit and by ``after_failure_s`` after srun's first failed task."""
        out_path, err_path = workdir / "srun.out", workdir / "srun.err"
        deadline = start + self.wall_timeout_s + 30
        first_failure: float | None = None
        killed = None
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                self._login_argv(command),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if first_failure is None and _TASK_ERROR.search(_text(err_path.read_bytes())):
                        first_failure = now
                    killed = stop_reason(
                        now,
                        deadline,
                        self.wall_timeout_s,
                        first_failure,
                        self.after_failure_s,
                        "a task",
                    )
                    if killed:
                        break
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
        code = None if killed else proc.returncode
        return _text(out_path.read_bytes()), _text(err_path.read_bytes()), code, killed

    def _cancel(self, job_name: str) -> None:
        """Cancel the step's job (best effort): a srun the launcher gave up on must not
        keep its nodes allocated until its time limit."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                self._login_argv(f"scancel --full --name={shlex.quote(job_name)}"),
                capture_output=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            )


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _split_labelled(text: str, ranks: int) -> list[list[str]]:
    """srun --label output ("2: line") split per task; unlabelled lines go to every rank
    (they are srun's own messages, which concern the whole step)."""
    out: list[list[str]] = [[] for _ in range(ranks)]
    for line in text.splitlines():
        match = _LABEL.match(line)
        if match and int(match.group(1)) < ranks:
            out[int(match.group(1))].append(match.group(2))
        elif line.strip():
            for lines in out:
                lines.append(line)
    return out


def _task_exit_codes(
    stderr: str, ranks: int, step_code: int | None, killed: bool
) -> list[int | None]:
    """Each task's exit status from srun's error lines; tasks not named exited 0, or,
    when the launcher killed the step, never reported an exit (None)."""
    codes: list[int | None] = [None if killed else 0] * ranks
    for match in _TASK_ERROR.finditer(stderr):
        tasks = _expand(match.group(2))
        what = match.group(3)
        code_match = re.search(r"exit code (\d+)", what)
        code = int(code_match.group(1)) if code_match else 137  # "Killed" / signalled
        for task in tasks:
            if task < ranks:
                codes[task] = code
    if not killed and step_code not in (0, None) and all(c == 0 for c in codes):
        # srun itself failed (allocation refused, bad node list): no task ran.
        codes = [step_code] * ranks
    return codes


def _expand(spec: str) -> list[int]:
    tasks = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        tasks += range(int(low), int(high or low) + 1)
    return tasks
