"""Node-side shim that runs one rank for a remote launcher (stdlib only).

    python -m validation.launch.rank [--from-slurm] [--watch-stdin] -- MODULE ARGS...

- ``--watch-stdin``: the SSH launcher keeps this process's stdin open; when
  the launcher goes away (killed, timed out, connection lost) stdin reaches
  EOF and the rank's whole process group is killed. Without a pty, sshd
  would otherwise leave an orphaned rank holding its port and GPU.
- ``--from-slurm``: map srun's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
  SLURMD_NODENAME onto the torch.distributed variables the modules read; the
  rendezvous host is the step's first node, where Slurm puts task 0.
- ``--emit-result PATH``: after the module exits, rank 0 prints the result
  document it wrote at PATH as one line starting with ``KILN_RESULT_JSON``,
  so a launcher that only sees the job's output (srun) still gets it.

Exits with the module's exit status (128 + signal if it was killed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading

from validation.envvars import HOST_NAME_ENV

RESULT_MARKER = "KILN_RESULT_JSON"
# srun cuts long output lines into pieces (each labelled again); short
# numbered pieces survive that and reassemble in order.
_RESULT_PIECE = 400


def result_lines(document: dict) -> list[str]:
    """The result document as numbered lines: `KILN_RESULT_JSON <i>/<n> <piece>`."""
    text = json.dumps(document, separators=(",", ":"))
    pieces = [text[i : i + _RESULT_PIECE] for i in range(0, len(text), _RESULT_PIECE)] or [""]
    return [f"{RESULT_MARKER} {i + 1}/{len(pieces)} {p}" for i, p in enumerate(pieces)]


def parse_result_lines(lines: list[str]) -> dict | None:
    """Reassemble :func:`result_lines` from output lines; None if absent or incomplete."""
    pieces: dict[int, str] = {}
    total = 0
    for line in lines:
        if not line.startswith(RESULT_MARKER + " "):
            continue
        counter, _, piece = line[len(RESULT_MARKER) + 1 :].partition(" ")
        index, _, count = counter.partition("/")
        pieces[int(index)] = piece
        total = int(count)
    if not total or len(pieces) != total:
        return None
    try:
        document = json.loads("".join(pieces[i] for i in range(1, total + 1)))
    except (KeyError, ValueError):
        return None
    return document if isinstance(document, dict) else None


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
    if "MASTER_ADDR" not in env:
        nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        env["MASTER_ADDR"] = hosts[0]
    env["LOCAL_WORLD_SIZE"] = str(_tasks_on_this_node(environ))
    return env


def _tasks_on_this_node(environ: dict[str, str]) -> int:
    """This node's task count from the step's list ("2(x3),1": three nodes with 2, one
    with 1), in the step's node order, which SLURM_NODEID indexes."""
    listed = (
        environ.get("SLURM_STEP_TASKS_PER_NODE")
        or environ.get("SLURM_TASKS_PER_NODE")
        or environ.get("SLURM_NTASKS_PER_NODE", "1")
    )
    counts: list[int] = []
    for part in listed.split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    node = int(environ.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else counts[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m validation.launch.rank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from-slurm", action="store_true", help="map srun's task variables")
    parser.add_argument("--watch-stdin", action="store_true", help="die when stdin closes")
    parser.add_argument("--emit-result", metavar="PATH", help="rank 0 prints this JSON at exit")
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
    if opts.emit_result and env.get("RANK") == "0":
        try:
            with open(opts.emit_result) as handle:
                document = json.load(handle)
            os.unlink(opts.emit_result)
            for line in result_lines(document):
                print(line, flush=True)
        except (OSError, ValueError):
            pass  # no result: the launcher reports rank 0's exit and error instead
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the stdin watcher may be blocked in a read, and interpreter
    # shutdown aborts on a daemon thread holding stdin's lock.
    os._exit(status)
