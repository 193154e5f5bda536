"""SSH to cluster hosts with paramiko; host keys are always verified."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from kiln.errors import KilnError


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in to one host."""

    name: str
    address: str
    user: str
    key_file: Path
    known_hosts: Path
    port: int = 22


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """One line for an error message: the exit status and the end of stderr (of stdout
        when stderr is empty), never a bare "failed"."""
        if self.stderr.strip():
            return f"exit {self.exit_code}: {tail(self.stderr)}"
        if self.stdout.strip():
            return f"exit {self.exit_code}, nothing on stderr; stdout ends: {tail(self.stdout)}"
        return f"exit {self.exit_code}, no output"


def tail(text: str, lines: int = 3, width: int = 400) -> str:
    """The last `lines` non-empty lines of `text` on one line (" | " between), at most
    `width` characters: what a command said last, for a one-line error."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= width else "…" + joined[-(width - 1) :]


def _command_name(command: str) -> str:
    """A command as an error message quotes it: its first line, shortened (preflight's
    commands are scripts of many lines)."""
    first = next((line.strip() for line in command.splitlines() if line.strip()), "")
    more = len(first) > 60 or first != command.strip()
    return repr(first[:60] + ("…" if more else ""))


def connect(target: SshTarget, timeout: float = 10) -> paramiko.SSHClient:
    """An authenticated client; an unknown or changed host key is refused, never accepted."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=str(target.key_file),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise KilnError(
            f"{target.name} ({target.address}): HOST KEY CHANGED since it was trusted in "
            f"{target.known_hosts}: if the host was reinstalled, remove its old entry there "
            "and run again; otherwise do not connect"
        ) from None
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise KilnError(
                f"{target.name} ({target.address}): its host key is not in {target.known_hosts}: "
                "add it (ssh-keyscan, and compare the fingerprint with the host's console), or "
                "set the pool's ssh.hostKeyPolicy: trust-on-first-use"
            ) from None
        raise KilnError(f"{target.name} ({target.address}): SSH failed: {exc}") from None
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> CommandResult:
    """Run a command, bounded in time: a stuck host is an error, not a hang."""
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        code = stdout.channel.recv_exit_status()
    except (TimeoutError, OSError, paramiko.SSHException) as exc:
        why = str(exc) or type(exc).__name__
        raise KilnError(
            f"{_command_name(command)}: no answer within {timeout:.0f} s ({why})"
        ) from None
    return CommandResult(code, out, err)


def wait_until_reachable(target: SshTarget, deadline_s: float) -> paramiko.SSHClient:
    """Retry until sshd answers and lets us in, or raise after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        try:
            return connect(target, timeout=5)
        except KilnError as exc:
            last = str(exc)
            time.sleep(0.5)
    raise KilnError(f"{target.name}: not reachable over SSH after {deadline_s:.0f} s: {last}")


def ssh_config(targets: list[SshTarget]) -> str:
    """An OpenSSH client config naming every target (by name and by address), with its
    key and its known_hosts, host keys verified: what `ssh -F` and the launchers use."""
    blocks = []
    for t in targets:
        blocks.append(
            f"Host {t.name} {t.address}\n  HostName {t.address}\n  Port {t.port}\n"
            f"  User {t.user}\n  IdentityFile {t.key_file}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {t.known_hosts}\n  StrictHostKeyChecking yes\n"
        )
    return "\n".join(blocks)
