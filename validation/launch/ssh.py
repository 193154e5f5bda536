"""Run ranks on remote hosts over SSH: one OpenSSH session per rank.

The OpenSSH client (not paramiko) keeps this package stdlib + torch only, and
reads the same ssh_config an infra engineer already uses (bastions,
ProxyJump, verified known_hosts); for a Kiln lab, the lab's own
`ssh/config`. Every rank runs under `validation.launch.rank --watch-stdin`,
so killing the local ssh client also kills the remote rank.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from validation.launch.base import RankSlot, rendezvous_port
from validation.launch.local import LocalLauncher


class SshLauncher(LocalLauncher):
    """Ranks on `hosts` (HostSpec.address or name), started through `ssh`.

    ``python`` and ``remote_dir`` say where the validation runtime lives on the
    nodes: the validation_runtime role decides
    (`kiln.role_defaults.validation_runtime()`). Rendezvous is on the first
    host's address; per-host ``HostSpec.env`` carries settings
    such as GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME from the stack.
    """

    def __init__(
        self,
        ssh_config: str | Path | None = None,
        *,
        python: str,
        remote_dir: str,
        connect_timeout_s: int = 10,
        **kwargs,  # noqa: ANN003 - LocalLauncher's bounds (wall_timeout_s, after_failure_s, ...)
    ) -> None:
        super().__init__(**kwargs)
        self.ssh_config = str(ssh_config) if ssh_config else None
        self.remote_python = python
        self.remote_dir = remote_dir
        self.connect_timeout_s = connect_timeout_s

    def _ssh(self, reach: str, user: str | None) -> list[str]:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if user:
            argv += ["-l", user]
        return [*argv, reach]

    def _base_env(self, slots: Sequence[RankSlot]) -> dict[str, str]:
        # Only what the remote rank needs: this machine's environment stays here.
        return {
            "MASTER_ADDR": slots[0].host.reach,
            "MASTER_PORT": str(rendezvous_port()),
            "WORLD_SIZE": str(len(slots)),
        }

    def _rank_command(
        self, slot: RankSlot, module: str, args: Sequence[str], rank_env: dict[str, str]
    ) -> tuple[list[str], dict[str, str] | None, int]:
        assignments = [f"{k}={v}" for k, v in sorted(rank_env.items())]
        remote = (
            f"cd {shlex.quote(self.remote_dir)} && exec env {shlex.join(assignments)} "
            f"{shlex.quote(self.remote_python)} -m validation.launch.rank --watch-stdin "
            f"-- {shlex.quote(module)} {shlex.join(list(args))}"
        )
        # stdin is a pipe held open by this process: its EOF is the remote kill switch.
        return [*self._ssh(slot.host.reach, slot.host.ssh_user), remote], None, subprocess.PIPE

    def _read_result(self, rank0: RankSlot, json_path: str) -> tuple[dict | None, str | None]:
        remote = (
            f"cat {shlex.quote(json_path)} && rm -rf {shlex.quote(str(Path(json_path).parent))}"
        )
        where = f"{json_path} on {rank0.host.name}"
        try:
            fetched = subprocess.run(
                [*self._ssh(rank0.host.reach, rank0.host.ssh_user), remote],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return None, f"reading {where}: no answer within 60 s"
        try:
            doc = json.loads(fetched.stdout)
        except json.JSONDecodeError:
            said = stderr_tail(fetched.stderr) or f"{len(fetched.stdout)} bytes that are not JSON"
            return None, f"reading {where}: exit {fetched.returncode}: {said}"
        if not isinstance(doc, dict):
            return None, f"reading {where}: not a JSON object"
        return doc, None


def stderr_tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a command's stderr on one line (" | " between)."""
    return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])
