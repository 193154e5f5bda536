"""Node-side shim that runs one rank for a remote launcher (stdlib only).

    python -m validation.launch.rank [--from-slurm] [--watch-stdin] -- MODULE ARGS...

- ``--watch-stdin``: the SSH launcher keeps this process's stdin open; when
  the launcher goes away (killed, timed out, connection lost) stdin reaches
  EOF and the rank's whole process group is killed. Without a pty, sshd
  would otherwise leave an orphaned rank holding its port and GPU.
- ``--from-slurm``: map srun's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
  SLURMD_NODENAME onto the torch.distributed variables the modules read.

Exits with the module's exit status (128 + signal if it was killed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading

from validation.rendezvous import HOST_NAME_ENV

# torch.distributed name <- Slurm name (srun sets these for every task).
_SLURM_ENV = {
    "RANK": "SLURM_PROCID",
    "WORLD_SIZE": "SLURM_NTASKS",
    "LOCAL_RANK": "SLURM_LOCALID",
    HOST_NAME_ENV: "SLURMD_NODENAME",
}


def slurm_environment(environ: dict[str, str]) -> dict[str, str]:
    """The rank's environment with torch.distributed variables taken from srun's."""
    missing = [slurm for slurm in _SLURM_ENV.values() if slurm not in environ]
    if missing:
        raise SystemExit(f"validation.launch.rank: not under srun? missing {', '.join(missing)}")
    env = dict(environ)
    for torch_name, slurm_name in _SLURM_ENV.items():
        env[torch_name] = environ[slurm_name]
    # Tasks per node: "2(x3)" style lists are uniform here (one layout per job).
    per_node = environ.get("SLURM_NTASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", "1"))
    env["LOCAL_WORLD_SIZE"] = per_node.split("(")[0].split(",")[0]
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m validation.launch.rank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from-slurm", action="store_true", help="map srun's task variables")
    parser.add_argument("--watch-stdin", action="store_true", help="die when stdin closes")
    parser.add_argument("module", help="the validation module to run, e.g. validation.allreduce")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    opts = parser.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    env = slurm_environment(dict(os.environ)) if opts.from_slurm else dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-m", opts.module, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )

    def kill_on_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)

    if opts.watch_stdin:
        threading.Thread(target=kill_on_eof, daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the stdin watcher may be blocked in a read, and interpreter
    # shutdown aborts on a daemon thread holding stdin's lock.
    os._exit(status)
