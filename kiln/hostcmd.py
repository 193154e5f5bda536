"""Run commands on this host with errors that say what failed."""

from __future__ import annotations

import shlex
import subprocess

from kiln.errors import KilnError


def run(
    args: list[str], *, check: bool = True, input: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `args` (no shell), capturing output; raise KilnError with stderr on failure."""
    try:
        proc = subprocess.run(
            args, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise KilnError(f"{args[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise KilnError(f"{shlex.join(args)}: no result after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise KilnError(
            f"{shlex.join(args)} failed (exit {proc.returncode}): {detail[-1] if detail else ''}"
        )
    return proc


def succeeds(args: list[str]) -> bool:
    """True when the command exits 0 (used for read-only probes)."""
    return run(args, check=False).returncode == 0
